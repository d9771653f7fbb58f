"""Matrix products for the llvm backend: register-blocked micro-kernels on explicit vector types.

`accumulate(k, a, b, c)` computes C += A @ B for 2-D views. Two kernels, chosen by B's layout:

- dot form, when B is a weight used as W.T (B[k, j] = W[j, k], contiguous along k, the PyTorch
  layout of every `x @ W.T`): a tile of MR rows x NJ columns keeps MR*NJ vector accumulators in
  registers while k advances one vector at a time, then sums each accumulator's lanes.
- axpy form, when B's rows are contiguous or B is in column panels (`Panels`): a tile of MR rows
  x NV vectors of C stays in registers while `C[i, :] += A[i, k] * B[k, :]` runs over k, blocked
  so that a panel of B and a block of A's rows stay in cache. With few rows (a matrix-vector
  product) independent sums over interleaved k steps keep the FMAs busy.

The lowering picks the form by a cost model (`prefers_packing`): the axpy form needs W.T copied
k-major, which for a parameter is a copy kept between calls (see `GraphLowering.kept_transpose`).
A plain row-major B goes into panels first when many rows of A use it (`prefers_panels`).
Vector width comes from the host's features (AVX-512, AVX2, or a generic 4 lanes). Each C element
sums its products in an order fixed at compile time. Leftover rows, columns and k steps use
smaller tiles, masked vectors or scalar code. Each tile shape's code appears once in a kernel:
blocks of rows or k steps of two lengths share it in one loop, the lengths picked at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from .kernel import I64, KernelBuilder, View, intrinsic, llvm_type, type_suffix
from .runtime import host_features

KC = 1024  # k-steps per cache block: a 1024 x 64 panel of B (256 KiB in float32) stays in L2
# k-steps per block when B is a plain row-major matrix: each k step reads a row of its own, on
# its own lines, which stream poorly from L2; a 256 x 64 block mostly stays in L1 instead (an
# A.T @ B of 256x2048x256: 60-65 -> ~110 GFLOP/s, numpy ~120, same loaded run).
KC_ROWS = 256
# A block of A this large stays in L2 (2 MiB here) next to a panel of B and C's rows
L2_BLOCK_BYTES = 512 * 1024
# A product of an A read down its columns (a weight gradient's X.T @ G) with at least this many
# rows copies its plain B into panels a block at a time, on the stack (`_packed_blocks`) ...
PACKED_MIN_ROWS = 64
# ... blocks of this many k steps: a 128 x 64 panel of B (32 KiB) stays in L1 (48 KiB) while
# every row tile uses it ...
KC_PACKED = 128
# ... and at most this many bytes: a block of B's columns stays in L2
PACKED_B_BYTES = 256 * 1024
# Rows of A from which a product with a plain row-major B copies B into panels first
PANEL_MIN_ROWS = 128
# A last row tile moved back over the tile before it may redo 1/OVERLAP_ROWS of a block's rows
# (`_overlaps`)
OVERLAP_ROWS = 64
# Up to this size of B, running k backwards on alternate calls leaves much of B in L1 (48 KiB)
L1_REUSE_BYTES = 96 * 1024


def max_accumulators() -> int:
    """Vector registers to spend on the C tile: 24 of AVX-512's 32, 12 of AVX2's 16."""
    return 24 if "avx512f" in host_features() else 12


def prefers_packing(rows: int, b: View, reuse: int = 1, kept: bool = False) -> bool:
    """True when C += A @ B, B seen as W.T (contiguous along k), should run as the axpy kernel on
    a k-major copy of B instead of the dot kernel reading W in place.

    Costs in vector instructions: the dot kernel does a whole number of k vectors per C element
    and a lane reduction (~3 per C element); the axpy kernel a whole number of column vectors
    per (row, k). The copy is a transpose (~8 per vector of B), or only a check against a
    snapshot (~2) when it is `kept` between calls. `reuse`: products per copy (a loop's steps).
    """
    if b.strides[1] == 1:
        return False
    depth, n = b.shape
    lanes = vector_width(b.dtype)
    dot = rows * n * -(-depth // lanes) + rows * -(-n // lanes) * 3 * lanes
    axpy = rows * depth * -(-n // lanes)
    copy = depth * -(-n // lanes) * (2 if kept else 8)
    return reuse * axpy + copy < reuse * dot


def prefers_panels(a: View, b: View) -> bool:
    """True when C += A @ B, B a plain matrix with contiguous rows, should copy B into column
    panels (`Panels`) first. The rows of a wide B are each on a page of their own and fall into
    few of L1's sets, so a block of them does not stay in L1; a panel is one stream. The copy
    (one pass over B) pays for many rows of A read along their rows: 2048x128 @ 128x256 1.03-1.05x,
    256x256 @ 256x256 1.2x, 2048x512 @ 512x256 1.15-1.3x, same loaded runs. Not for an A read
    down its columns (a weight gradient's X.T @ G: 0.8-1.0x) nor for few rows (16x128 @ 128x256
    0.9x)."""
    if b.strides[1] != 1 or a.strides[1] != 1:
        return False
    rows, n = a.shape[0], b.shape[1]
    return rows >= PANEL_MIN_ROWS and n > panel_width(rows, n, b.dtype)


def vector_width(dtype) -> int:
    """Lanes per vector register for `dtype` on this host."""
    features = host_features()
    bits = 512 if "avx512f" in features else 256 if "avx2" in features else 128
    return bits // (8 * np.dtype(dtype).itemsize)


def copy(k: KernelBuilder, src: View, dst: View) -> None:
    """dst[...] = src[...] (same shape). A transposed float matrix (or a batch of them) moves
    in blocks through registers: element by element, each load would be a column's scalar."""
    if _is_transposed_copy(src, dst):
        from . import packing  # packing builds on this module

        lead = len(dst.shape) - 2
        batched(
            k,
            dst.shape[:lead],
            [src, dst],
            lambda s, d: packing.transpose(k, s, d),
        )
        return
    k.loop_nest(dst.shape, lambda idx: k.store(k.load(src, idx), dst, idx), "cp")


def _is_transposed_copy(src: View, dst: View) -> bool:
    """A copy of a float matrix read down its columns into rows: worth `packing.transpose`."""
    return (
        len(dst.shape) >= 2
        and src.dtype == dst.dtype
        and src.dtype.kind == "f"
        and src.strides[-2] == 1
        and src.strides[-1] > 1
        and dst.strides[-1] == 1
        and dst.shape[-1] > 1
        and dst.shape[-2] > 1
    )


@dataclass(frozen=True)
class Panels:
    """A K x N matrix B stored as panels of columns: panel q holds columns [q*width, (q+1)*width)
    as a K x width block, rows `width` apart (the last panel may use fewer columns). The axpy
    kernel then reads a panel's rows one after another: one stream over few pages, where the
    rows of a wide row-major B are each on a page of their own."""

    view: View  # (panels, K, width), contiguous
    n: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.view.shape[1], self.n)

    @property
    def width(self) -> int:
        return self.view.shape[2]

    @property
    def dtype(self) -> np.dtype:
        return self.view.dtype

    def panel(self, k: KernelBuilder, q: ir.Value) -> View:
        """Panel q as a K x width view."""
        return k.offset_view(self.view, 0, q)


def panel_width(rows: int, n: int, dtype) -> int:
    """The columns of C (and B) the axpy kernel keeps in registers at once for `rows` rows."""
    lanes = vector_width(dtype)
    return min(-(-n // lanes), 8 if rows < 4 else 4) * lanes


def fill(k: KernelBuilder, dst: View, value) -> None:
    k.loop_nest(dst.shape, lambda idx: k.store(value, dst, idx), "fill")


def accumulate(
    k: KernelBuilder,
    a: View,
    b: View,
    c: View,
    init: View | None = None,
    activation=None,
    reverse: ir.Value | None = None,
    epilogue: Epilogue | None = None,
) -> None:
    """c = activation(start + a @ b) for 2-D float views of one dtype, where start is `init`
    (broadcast to c) or c's own contents; with an `epilogue`, c = epilogue(start + a @ b). The
    epilogue (init, activation or epilogue) is fused into the kernel, on values still in
    registers, where the kernel allows it. `reverse` (an i1, or None) runs the k steps
    backwards: a loop alternating it over its steps finds in cache the weights it read last (a
    fixed order per step; only the rounding order changes)."""
    assert activation is None or epilogue is None
    if epilogue is not None and not epilogue.vectorizable:
        accumulate(k, a, b, c, init, reverse=reverse)
        _finish_all(k, c, epilogue=epilogue)
        return
    fusable_init = init is None or init.strides[-1] in (0, 1) or init.shape[-1] == 1
    rows_contiguous = isinstance(b, Panels) or b.strides[1] == 1
    if not isinstance(b, Panels) and b.strides[0] == 1 and a.strides[1] == 1 and fusable_init:
        _dot_kernel(k, a, b, c, init, activation, epilogue)
        return
    if _packs(a, b) and fusable_init:  # init starts the first of its k blocks
        _axpy_kernel(k, a, b, c, init)
        _finish_all(k, c, activation, epilogue)
        return
    if rows_contiguous and a.shape[1] <= _k_block(b) and fusable_init:
        _axpy_kernel(k, a, b, c, init, activation, reverse, epilogue)
        return
    if init is not None:
        copy(k, init.broadcast_to(c.shape), c)
    if rows_contiguous:
        _axpy_kernel(k, a, b, c)
    else:
        scalar_kernel(k, a, b, c)
    _finish_all(k, c, activation, epilogue)


def accumulate_steps(k: KernelBuilder, a: View, b: View, c: View, init, total: ir.Value) -> None:
    """c = (init or c) + a @ b over `total` k steps, an i64 value: a and b are seen with their k
    dim one unit long (a.shape[1]; total a multiple of it). One kernel then serves every
    sequence length in a weight gradient X.T @ G over T * batch steps: A read down its columns,
    B with contiguous rows. Its k blocks are counted at run time and share one copy of each
    tile's code."""
    unit = a.shape[1]
    assert a.strides[0] == 1 and b.strides[1] == 1 and KC_PACKED % unit == KC_ROWS % unit == 0
    if init is not None and not (init.strides[-1] in (0, 1) or init.shape[-1] == 1):
        copy(k, init.broadcast_to(c.shape), c)
        init = None
    _axpy_kernel(k, a, b, c, init, total=total)


@dataclass(frozen=True)
class Activation:
    """A nonlinearity for a product's epilogue: `emit(builder, value)` on a scalar or a vector;
    `name` names its helper function in a module."""

    name: str
    emit: Callable[[ir.IRBuilder, ir.Value], ir.Value]


@dataclass(frozen=True)
class Epilogue:
    """An elementwise expression that ends a product: c = emit(value, operand values), value
    being start + a @ b, and each operand (a view of c's shape) read at the same row and column.
    `emit` takes scalars or vectors (of one dtype, c's)."""

    operands: tuple[View, ...]
    emit: Callable[[ir.Value, list[ir.Value]], ir.Value]

    @property
    def vectorizable(self) -> bool:
        """Whether its operands load as vectors along a row (the kernels' tiles need that)."""
        return all(v.strides[-1] in (0, 1) for v in self.operands)

    def at(self, k: KernelBuilder, value: ir.Value, i, j, count: int) -> ir.Value:
        """The epilogue of `value`, a vector of `count` used lanes from C[i, j] on."""
        lanes = value.type.count
        return self.emit(value, [_vload_n(k, v, [i, j], lanes, count) for v in self.operands])


def _finish_all(
    k: KernelBuilder, c: View, activation: Activation | None = None, epilogue=None
) -> None:
    """c = activation(c) or epilogue(c): a pass over c, where the kernel did not fuse it."""
    if activation is None and epilogue is None:
        return

    def end(idx):
        value = k.load(c, idx)
        if activation is not None:
            value = activation.emit(k.builder, value)
        else:
            value = epilogue.emit(value, [k.load(v, idx) for v in epilogue.operands])
        k.store(value, c, idx)

    k.loop_nest(c.shape, end)


# ---- helpers ---------------------------------------------------------------------------------


def _vec_type(dtype, lanes: int) -> ir.VectorType:
    return ir.VectorType(llvm_type(dtype), lanes)


def _vload(k: KernelBuilder, view: View, indices, lanes: int) -> ir.Value:
    """`lanes` consecutive elements starting at view[indices] (the last dim has stride 1)."""
    ptr = k.address(view, indices)
    return k.builder.load(ptr, typ=_vec_type(view.dtype, lanes), align=view.dtype.itemsize)


def _vload_head(k: KernelBuilder, view: View, indices, lanes: int, count: int) -> ir.Value:
    """Like `_vload`, but only the first `count` lanes are read; the others are zero."""
    mask = ir.Constant(ir.VectorType(ir.IntType(1), lanes), [1] * count + [0] * (lanes - count))
    vec = _vec_type(view.dtype, lanes)
    return _masked_load(k.builder, k.address(view, indices), mask, vec, view.dtype.itemsize)


def _masked_load(b: ir.IRBuilder, ptr, mask, vec: ir.VectorType, align: int) -> ir.Value:
    """The lanes of `vec` at ptr where `mask` holds, zero elsewhere (the others are not read)."""
    name = f"llvm.masked.load.{type_suffix(vec)}.p0"
    fn = b.module.globals.get(name)
    if fn is None:
        args = [ir.PointerType(), ir.IntType(32), mask.type, vec]
        fn = ir.Function(b.module, ir.FunctionType(vec, args), name=name)
    zero = ir.Constant(vec, None)
    return b.call(fn, [ptr, ir.Constant(ir.IntType(32), align), mask, zero])


def _masked_store(b: ir.IRBuilder, value, ptr, mask, align: int) -> None:
    """Store the lanes of `value` where `mask` holds (the others are not written)."""
    name = f"llvm.masked.store.{type_suffix(value.type)}.p0"
    fn = b.module.globals.get(name)
    if fn is None:
        args = [value.type, ir.PointerType(), ir.IntType(32), mask.type]
        fn = ir.Function(b.module, ir.FunctionType(ir.VoidType(), args), name=name)
    b.call(fn, [value, ptr, ir.Constant(ir.IntType(32), align), mask])


def _vstore(k: KernelBuilder, value: ir.Value, view: View, indices) -> None:
    k.builder.store(value, k.address(view, indices), align=view.dtype.itemsize)


def _vload_n(k: KernelBuilder, view: View, indices, lanes: int, count: int) -> ir.Value:
    """`count` elements along the last dim from view[indices] in a vector of `lanes` (the rest
    zero); a last dim of stride 0 (a broadcast) gives the one element in every lane."""
    if view.strides[-1] == 0:
        return _splat(k, k.load(view, indices), lanes)
    if count == lanes:
        return _vload(k, view, indices, lanes)
    return _vload_head(k, view, indices, lanes, count)


def _vstore_n(k: KernelBuilder, value: ir.Value, view: View, indices, count: int) -> None:
    """Store the first `count` lanes of `value` at view[indices] on (contiguous last dim)."""
    lanes = value.type.count
    if count == lanes:
        _vstore(k, value, view, indices)
        return
    mask = ir.Constant(ir.VectorType(ir.IntType(1), lanes), [1] * count + [0] * (lanes - count))
    _masked_store(k.builder, value, k.address(view, indices), mask, view.dtype.itemsize)


def _splat(k: KernelBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    b = k.builder
    vec = b.insert_element(
        ir.Constant(ir.VectorType(scalar.type, lanes), None), scalar, ir.Constant(ir.IntType(32), 0)
    )
    mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return b.shuffle_vector(vec, ir.Constant(vec.type, None), mask)


def _fma(k: KernelBuilder, x: ir.Value, y: ir.Value, acc: ir.Value) -> ir.Value:
    fn = intrinsic(k.module, "llvm.fma", acc.type, 3)
    return k.builder.call(fn, [x, y, acc])


def _tiles(total: int, size: int):
    """(start, length) blocks of `size`, then the remainder."""
    full = total // size
    blocks = [(None, size, full)] if full else []
    if total % size:
        blocks.append((full * size, total % size, 1))
    return blocks


def _blocked(k: KernelBuilder, total: int, size: int, body, name: str) -> None:
    """body(start, length) over blocks of `size` (a runtime loop) and a static remainder."""
    for start, length, count in _tiles(total, size):
        if start is None:
            k.loop(
                count, lambda i, n=length: body(k.builder.mul(i, ir.Constant(I64, size)), n), name
            )
        else:
            body(ir.Constant(I64, start), length)


def _row_blocks(total: int, size: int):
    """Like `_tiles`, but a remainder under half a block joins the last whole block: a block of
    a few rows would read all of B again for little work (128 rows in blocks of 126: 126 + 2)."""
    full, rest = divmod(total, size)
    if full and 0 < rest < size // 2:
        whole = [(None, size, full - 1)] if full > 1 else []
        return whole + [((full - 1) * size, size + rest, 1)]
    return _tiles(total, size)


def _row_tiles(total: int, mr: int):
    """(start, rows, count) runs of row tiles covering `total` rows: tiles of `mr`, and when
    `total` is no multiple of it, a few tiles of mr - 1 instead of one small last tile. A tile
    of few rows does few FMAs per vector of B it loads (2 rows: 8 per 4, where 6 rows do 24): in
    W3's 128-row step (21 x 6 + 2) the 2-row tile took 6% of the loop's time."""
    full, rest = divmod(total, mr)
    small = mr - rest  # tiles of mr - 1 rows that replace one tile of `rest`
    if rest == 0 or rest == mr - 1 or full + 1 < small:
        return _tiles(total, mr)
    big = full + 1 - small
    runs = [(None, mr, big)] if big else []
    return runs + [(big * mr, mr - 1, small)]


def _each_block(k: KernelBuilder, runs, body, name: str) -> None:
    """body(start, pick) for every block of `runs` ((start, length, count) from `_tiles` or
    `_row_blocks`: blocks of one length, then perhaps one of another), with ONE copy of body's
    code: a runtime loop over the blocks, where a copy per block length would repeat the
    kernel's whole inner code (and LLVM's time on it). `pick(f)` is f(length) for the block at
    hand, f giving an int: that int where every block gives it, else an i64 value (a select on
    whether this is the last block)."""
    lengths = [length for _, length, _ in runs]
    blocks = sum(count for _, _, count in runs)
    bld = k.builder

    def run(index, last):
        def pick(f):
            values = {f(n) for n in lengths}
            if len(values) == 1:
                return values.pop()
            return bld.select(
                last, ir.Constant(I64, f(lengths[-1])), ir.Constant(I64, f(lengths[0]))
            )

        body(bld.mul(index, ir.Constant(I64, runs[0][1])), pick)

    if blocks == 1:
        start = runs[0][0] or 0
        body(ir.Constant(I64, start), lambda f: f(lengths[0]))
        return
    k.loop(
        blocks,
        lambda i: run(i, bld.icmp_unsigned("==", i, ir.Constant(I64, blocks - 1))),
        name,
    )


def _repeat(k: KernelBuilder, count, body, name: str) -> None:
    """body(i) for i < count (an int or an i64 value): straight code for a count of 1."""
    if count == 1:
        body(ir.Constant(I64, 0))
    elif count != 0:
        k.loop(count, body, name)


def _overlaps(total: int, mr: int) -> bool:
    """Whether `total` rows run as tiles of mr rows only, the last one moved back over rows the
    one before it did (`_row_tile_runs`): where that redoes few rows. A tile of mr rows costs
    about as much as one of mr - 1 (the same vectors of B, a few more FMAs), so with few rows
    redone it costs little more than `_row_tiles`' mix, and its code has one tile's size, not
    two (an input projection over T = 1,000 steps: 1,002 rows' work for 1,000)."""
    return total >= mr and -total % mr * OVERLAP_ROWS <= total


def _row_tile_runs(k: KernelBuilder, lengths, pick, mr: int, body, overlap=False) -> None:
    """body(start, rows) over the row tiles (`_row_tiles`) of a row block of one of `lengths`
    rows (`pick` tells which, see `_each_block`): one loop per tile height, its count and
    first row picked per block. With `overlap` (only where a tile computes its rows from
    scratch, so that doing a row twice gives the same bits), rows that `_overlaps` take tiles
    of mr rows, the last one moved back to end at the block's end."""
    plans = {
        n: [(None, mr, -(-n // mr))] if overlap and _overlaps(n, mr) else _row_tiles(n, mr)
        for n in lengths
    }
    heights = sorted({rows for plan in plans.values() for _, rows, _ in plan}, reverse=True)
    bld = k.builder
    moved = overlap and any(_overlaps(n, mr) and n % mr for n in lengths)
    if moved:  # the first row of a block's last tile
        ends = _i64(pick(lambda n: n - mr if _overlaps(n, mr) else n))

    def of(height, what):
        def f(n):
            runs = [run for run in plans[n] if run[1] == height]
            return (runs[0][0] or 0 if what == "start" else runs[0][2]) if runs else 0

        return f

    for height in heights:
        first = pick(of(height, "start"))

        def tile(i, height=height, first=first):
            start = bld.mul(i, ir.Constant(I64, height))
            start = _add(k, start, first) if isinstance(first, int) else bld.add(start, first)
            if moved and height == mr:
                start = bld.select(bld.icmp_unsigned(">", start, ends), ends, start)
            body(start, height)

        _repeat(k, pick(of(height, "count")), tile, "mi")


def _add(k: KernelBuilder, x: ir.Value, i) -> ir.Value:
    return k.builder.add(x, ir.Constant(I64, i)) if i else x


# ---- dot form: C[i, j] += dot(A[i, :], W[j, :]) ------------------------------------------------


def _dot_kernel(
    k: KernelBuilder, a: View, b: View, c: View, init=None, activation=None, epilogue=None
) -> None:
    """One row of A against NJ columns at a time: NJ vector accumulators over k, then one
    transposing reduction turns them into a vector of NJ sums, added to C with vector ops."""
    m, depth = a.shape
    n = c.shape[1]
    lanes = vector_width(c.dtype)
    nj = min(lanes, max_accumulators() // 2 * 2, _pow2_at_least(n))
    chunks, tail = divmod(depth, lanes)
    zero = ir.Constant(_vec_type(c.dtype, lanes), [0.0] * lanes)

    def tile(i, j0, cols):
        def step(kc, accs):
            kk = k.builder.mul(kc, ir.Constant(I64, lanes))
            row = _vload(k, a, [i, kk], lanes)
            return [
                _fma(k, row, _vload(k, b, [kk, _add(k, j0, j)], lanes), accs[j])
                for j in range(cols)
            ]

        accs = k.loop_carry(chunks, [zero] * cols, step, "kc")
        if tail:  # the k steps left over after whole vectors: one zero-padded vector step
            kk = ir.Constant(I64, chunks * lanes)
            row = _vload_head(k, a, [i, kk], lanes, tail)
            accs = [
                _fma(k, row, _vload_head(k, b, [kk, _add(k, j0, j)], lanes, tail), accs[j])
                for j in range(cols)
            ]
        sums = _reduce_lanes(k, accs + [zero] * (_pow2_at_least(cols) - cols))
        start = c if init is None else init.broadcast_to(c.shape)
        if cols == sums.type.count:
            value = k.builder.fadd(_vload_n(k, start, [i, j0], cols, cols), sums)
            if epilogue is not None:
                value = epilogue.at(k, value, i, j0, cols)
            _vstore(k, activation.emit(k.builder, value) if activation else value, c, [i, j0])
        else:
            for j in range(cols):
                total = k.builder.extract_element(sums, ir.Constant(ir.IntType(32), j))
                idx = [i, _add(k, j0, j)]
                value = k.builder.fadd(k.load(start, idx), total)
                if epilogue is not None:
                    value = epilogue.emit(value, [k.load(v, idx) for v in epilogue.operands])
                k.store(activation.emit(k.builder, value) if activation else value, c, idx)

    k.loop(m, lambda i: _blocked(k, n, nj, lambda j0, cols: tile(i, j0, cols), "nj"), "mi")


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _reduce_lanes(k: KernelBuilder, accs: list) -> ir.Value:
    """A vector whose lane j is the sum of accs[j]'s lanes (len(accs) a power of two <= lanes).

    Pairs of vectors are halved together: each level adds the low and high halves of every
    accumulator's partial sums, packing two vectors' accumulators into one.
    """
    b = k.builder
    lanes = accs[0].type.count
    group = lanes  # partial sums per accumulator inside each vector
    i32 = ir.IntType(32)
    while len(accs) > 1:
        per_vector = lanes // group
        half = group // 2
        low = [g * group + p for g in range(per_vector) for p in range(half)]
        low = low + [lanes + x for x in low]
        mask_lo = ir.Constant(ir.VectorType(i32, lanes), low)
        mask_hi = ir.Constant(ir.VectorType(i32, lanes), [x + half for x in low])
        accs = [
            b.fadd(b.shuffle_vector(x, y, mask_lo), b.shuffle_vector(x, y, mask_hi))
            for x, y in zip(accs[0::2], accs[1::2], strict=True)
        ]
        group = half
    vec = accs[0]
    while group > 1:  # fewer accumulators than lanes: finish inside the one vector
        count = vec.type.count // 2
        half = group // 2
        low = [g * group + p for g in range(vec.type.count // group) for p in range(half)]
        lo = b.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(i32, count), low))
        hi = b.shuffle_vector(
            vec, vec, ir.Constant(ir.VectorType(i32, count), [x + half for x in low])
        )
        vec = b.fadd(lo, hi)
        group = half
    return vec


# ---- axpy form: C[i, :] += A[i, k] * B[k, :] ---------------------------------------------------


def _k_block(b) -> int:
    """The axpy kernel's k steps per cache block for this B."""
    return KC if isinstance(b, Panels) else KC_ROWS


def _packs(a: View, b) -> bool:
    """Whether C += A @ B runs on copies of B's blocks in panels (`_packed_blocks`): for an A
    read down its columns (a weight gradient's X.T @ G, strides (1, lda)) with many rows
    against a plain B. Read in place, a block of B's rows is a row stride apart, which for a
    power-of-two stride falls in a few of L1's sets: it does not stay in L1 (same loaded runs,
    vs B in place: 384x320 @ 320x441 ~1.3x, 256x2016 @ 2016x256 ~1.15x, 384x64 @ 64x441 1.0x).
    Copying blocks of A into row tiles as well gained nothing (0.75-1.05x)."""
    return (
        not isinstance(b, Panels)
        and b.strides[1] == 1
        and a.strides[0] == 1
        and a.strides[1] != 1
        and a.shape[0] >= PACKED_MIN_ROWS
    )


def _axpy_kernel(
    k: KernelBuilder,
    a: View,
    b: View,
    c: View,
    init=None,
    activation=None,
    reverse=None,
    epilogue=None,
    total=None,
) -> None:
    """Cache-blocked: for each block of KC k-steps and each panel of B columns (which then stays
    in cache), every MR-row tile of C accumulates in registers. Few rows (a matrix-vector
    product) leave registers free: independent sums over interleaved k steps use them, so the
    FMAs do not wait on each other. A last partial vector of columns is masked. With `_packs`,
    the blocks of B are copies (`_packed_blocks`), and `init` starts the first k block. An
    `epilogue` ends each tile's sums in registers (its operands' tiles read then). `total`: k
    steps counted at run time (`accumulate_steps`), in blocks of whole units of a.shape[1]."""
    m, depth = a.shape
    n = c.shape[1]
    lanes = vector_width(c.dtype)
    panels = b if isinstance(b, Panels) else None
    nv = panels.width // lanes if panels else panel_width(m, n, c.dtype) // lanes
    mr = max(1, min(m, max_accumulators() // nv, 6))
    bld = k.builder
    packs = _packs(a, b)
    kc = KC_PACKED if packs else _k_block(b)
    assert activation is None or (depth <= kc and not packs), "fused only in one k block"
    assert epilogue is None or (depth <= kc and not packs), "fused only in one k block"
    assert init is None or depth <= kc or packs, "fused only in one k block"
    assert total is None or (activation is None and epilogue is None)
    source = c if init is None else init.broadcast_to(c.shape)
    if depth * n * c.dtype.itemsize > L1_REUSE_BYTES or packs or total is not None:
        reverse = None  # the next step would not find enough of B in L1 anyway
    if depth == 0:
        copy(k, source, c)
        _finish_all(k, c, activation, epilogue)
        return
    zero = ir.Constant(_vec_type(c.dtype, lanes), None)
    # A tile's k steps: its k block's, an int, or an i64 value where blocks of two lengths
    # share the tile's code (`_each_block`) or their number comes at run time (`total`).
    kblock = min(depth, kc) if total is None else kc
    klengths = {kblock, depth % kblock or kblock}
    if total is not None:
        klengths = set(range(depth, kc + 1, depth))

    def k_blocks(body) -> None:
        """body(k0, steps) for each k block, `steps` an int or an i64 value."""
        if total is None:
            _each_block(k, _tiles(depth, kc), lambda k0, pick: body(k0, pick(lambda n: n)), "kb")
            return
        size = ir.Constant(I64, kc)
        count = bld.udiv(bld.add(total, ir.Constant(I64, kc - 1)), size)

        def block(i):
            k0 = bld.mul(i, size)
            left = bld.sub(total, k0)
            body(k0, bld.select(bld.icmp_unsigned("<", left, size), left, size))

        k.loop(count, block, "kb")

    def tile(i0, rows, j0, width, k0, steps, bp: View, bj0, bk0=None, first=None):
        """C[i0:i0+rows, j0:j0+width] from A's k steps k0 on (`steps` of them, an int or an
        i64 value) and from bp's from bk0 (k0 by default) on and its columns from bj0 on,
        starting from `source` (only where `first`, an i1, holds, if given; c's own values
        elsewhere)."""
        bk0 = k0 if bk0 is None else bk0
        counts = [min(lanes, width - v) for v in range(0, width, lanes)]
        nvec = len(counts)
        cols = [_add(k, j0, v * lanes) for v in range(nvec)]
        bcols = [_add(k, bj0, v * lanes) for v in range(nvec)]
        tile_size = rows * nvec
        split = max(1, min(4, max(klengths), max_accumulators() // tile_size))
        if isinstance(steps, int):
            split = min(split, steps)

        def kstep(p, accs):
            if reverse is not None:
                last = _i64(steps - 1) if isinstance(steps, int) else bld.sub(steps, _i64(1))
                p = bld.select(reverse, bld.sub(last, p), p)
            pb = bld.add(p, bk0)
            p = bld.add(p, k0)
            bvs = [_vload_n(k, bp, [pb, bcols[v]], lanes, counts[v]) for v in range(nvec)]
            out = []
            for r in range(rows):
                a_s = _splat(k, k.load(a, [_add(k, i0, r), p]), lanes)
                out += [_fma(k, a_s, bvs[v], accs[r * nvec + v]) for v in range(nvec)]
            return out

        def group(g, accs):
            base = bld.mul(g, ir.Constant(I64, split))
            out = []
            for s in range(split):
                out += kstep(_add(k, base, s), accs[s * tile_size : (s + 1) * tile_size])
            return out

        def starts(view):
            return [
                _vload_n(k, view, [_add(k, i0, r), cols[v]], lanes, counts[v])
                for r in range(rows)
                for v in range(nvec)
            ]

        start = starts(source)
        if first is not None and source is not c:
            start = [bld.select(first, x, y) for x, y in zip(start, starts(c), strict=True)]
        accs = start + [zero] * (tile_size * (split - 1))
        if isinstance(steps, int):
            groups, rest = divmod(steps, split)
            accs = k.loop_carry(groups, accs, group, "p")
            sums = [accs[s * tile_size : (s + 1) * tile_size] for s in range(split)]
            for s in range(rest):
                sums[0] = kstep(ir.Constant(I64, groups * split + s), sums[0])
        else:
            size = ir.Constant(I64, split)
            groups = bld.udiv(steps, size)
            accs = k.loop_carry(groups, accs, group, "p")
            sums = [accs[s * tile_size : (s + 1) * tile_size] for s in range(split)]
            if any(n % split for n in klengths):
                done = bld.mul(groups, size)
                sums[0] = k.loop_carry(
                    bld.urem(steps, size),
                    sums[0],
                    lambda s, acc: kstep(bld.add(done, s), acc),
                    "pr",
                )
        while len(sums) > 1:  # add the independent sums pairwise
            pairs = zip(sums[0::2], sums[1::2], strict=False)
            sums = [[bld.fadd(x, y) for x, y in zip(p, q, strict=True)] for p, q in pairs] + (
                [sums[-1]] if len(sums) % 2 else []
            )
        if epilogue is not None:
            sums[0] = [
                epilogue.at(k, sums[0][r * nvec + v], _add(k, i0, r), cols[v], counts[v])
                for r in range(rows)
                for v in range(nvec)
            ]
        if activation is not None and tile_size == 1:
            sums[0] = [activation.emit(bld, sums[0][0])]
        for r in range(rows):
            for v in range(nvec):
                _vstore_n(k, sums[0][r * nvec + v], c, [_add(k, i0, r), cols[v]], counts[v])
        if activation is not None and tile_size > 1:  # one copy of its code, in a loop
            # In a loop of steps alternating direction, the next step first reads the end of
            # this result that this step read last: finish that end first.
            backwards = None if reverse is None else bld.not_(reverse)
            _activate(k, c, i0, rows, j0, counts, activation, backwards)

    if packs:
        _packed_blocks(
            k, a, c, tile, mr, nv * lanes, kblock, k_blocks, lambda *x: _pack_panels(k, b, *x)
        )
        return

    # Rows of A per block: a block of A (rows x KC) stays in L2 while every panel of B uses it.
    mc = max(mr, L2_BLOCK_BYTES // (kblock * c.dtype.itemsize) // mr * mr)

    row_blocks = _row_blocks(m, mc)
    # With k blocks counted at run time, the first starts from `init`, the others from c.
    first = total is not None and init is not None

    def k_block(k0, steps):
        starts = bld.icmp_unsigned("==", k0, ir.Constant(I64, 0)) if first else None

        def row_block(i1, pick):
            def panel(j0, width):
                if panels:
                    q = bld.udiv(j0, ir.Constant(I64, nv * lanes))
                    bp, bj0 = panels.panel(k, q), ir.Constant(I64, 0)
                else:
                    bp, bj0 = b, j0

                def row_tile(i0, rows):
                    tile(bld.add(i1, i0), rows, j0, width, k0, steps, bp, bj0, first=starts)

                lengths = [n for _, n, _ in row_blocks]
                overlap = source is not c and not first
                _row_tile_runs(k, lengths, pick, mr, row_tile, overlap=overlap)

            _blocked(k, n, nv * lanes, panel, "nv")

        _each_block(k, row_blocks, row_block, "mb")

    k_blocks(k_block)


def _packed_blocks(
    k: KernelBuilder, a: View, c: View, tile, mr: int, width: int, kc: int, k_blocks, pack
) -> None:
    """The axpy kernel's loops on copies of B (the BLIS scheme, A in place): for each block of
    B's columns and of `kc` k steps (`k_blocks`), B's block is copied (`pack`:
    `_pack_panels`) into panels of `width` columns on the stack; each panel then meets every row
    tile, read as one stream from L1."""
    m = a.shape[0]
    n = c.shape[1]
    bld = k.builder
    size = c.dtype.itemsize
    nc = width * max(1, min(-(-n // width), PACKED_B_BYTES // (kc * width * size)))
    mc = max(mr, L2_BLOCK_BYTES // (kc * size) // mr * mr)  # a block of A's rows stays in L2
    buffer = _stack_buffer(k, c.dtype, kc * nc)
    zero = ir.Constant(I64, 0)
    row_blocks = _row_blocks(m, mc)

    def column_block(j1, cpick):
        # whole panels, then one of the last columns in the last block
        panels = cpick(lambda cols: cols // width)
        rest = cpick(lambda cols: int(cols % width > 0))

        def k_block(k0, steps):
            first = bld.icmp_unsigned("==", k0, zero)
            pack(k0, steps, j1, panels, rest, n % width, width, buffer)

            def row_block(i1, pick):
                def panel(j0, w):
                    start = bld.mul(j0, _i64(steps))  # panel j0 / width
                    bp = View(buffer, start, (kc, width), (width, 1), c.dtype)

                    def row_tile(i0, r):
                        i, j = bld.add(i1, i0), bld.add(j1, j0)
                        tile(i, r, j, w, k0, steps, bp, zero, zero, first)

                    _row_tile_runs(k, [n for _, n, _ in row_blocks], pick, mr, row_tile)

                _repeat(
                    k, panels, lambda q: panel(bld.mul(q, ir.Constant(I64, width)), width), "nv"
                )
                if n % width:
                    at = bld.mul(_i64(panels), ir.Constant(I64, width))
                    _repeat(k, rest, lambda _: panel(at, n % width), "nr")

            _each_block(k, row_blocks, row_block, "mb")

        k_blocks(k_block)

    _each_block(k, _tiles(n, nc), column_block, "nb")


def _i64(value) -> ir.Value:
    return ir.Constant(I64, value) if isinstance(value, int) else value


def _stack_buffer(k: KernelBuilder, dtype, count: int) -> ir.Value:
    """A pointer to `count` elements of `dtype` on the stack, allocated once in the function's
    entry block (an alloca inside a loop would grow the stack on every iteration). The builder
    adds code at the end of its block: it goes back there."""
    b = k.builder
    block = b.block
    b.position_at_start(k.function.entry_basic_block)
    buffer = b.alloca(ir.ArrayType(llvm_type(dtype), count))
    buffer.align = 64
    buffer.type = ir.PointerType()  # opaque, as every view's pointer (llvmlite types it)
    b.position_at_end(block)
    return buffer


def _pack_panels(k: KernelBuilder, b: View, k0, steps, j1, full, rest, last: int, width: int, dst):
    """Copy B[k0:k0+steps, j1:...] (rows contiguous) into panels at dst: `full` panels of
    `width` columns, then `rest` (0 or 1) of `last` columns; panel q holds columns q*width on as
    (steps, width) (the last one's columns past `last` unused). Counts are ints or i64 values."""
    bld = k.builder
    lanes = vector_width(b.dtype)

    def panel(q, w: int):
        counts = [min(lanes, w - v) for v in range(0, w, lanes)]

        def step(p):
            row = bld.add(k0, p)
            out = View(
                dst,
                bld.mul(bld.add(bld.mul(q, _i64(steps)), p), ir.Constant(I64, width)),
                (width,),
                (1,),
                b.dtype,
            )
            for v, count in enumerate(counts):
                col = bld.add(
                    j1, bld.add(bld.mul(q, ir.Constant(I64, width)), ir.Constant(I64, v * lanes))
                )
                value = _vload_n(k, b, [row, col], lanes, count)
                _vstore_n(k, value, out, [ir.Constant(I64, v * lanes)], count)

        k.loop(steps, step, "pb")

    _repeat(k, full, lambda q: panel(q, width), "pq")
    if last:
        _repeat(k, rest, lambda _: panel(_i64(full), last), "pr")


def _activate(
    k: KernelBuilder, c: View, i0, rows: int, j0, counts: list, activation, backwards=None
) -> None:
    """c = activation(c) on a tile of rows x vectors (`counts`: lanes used in each vector), the
    whole vectors last to first where `backwards` (an i1) holds. Helper functions (one per
    module) do it: inlined, their constants would be hoisted and held in registers the kernel
    needs. One call does the whole vectors of every row: a call per row loads the constants
    again (~40 instructions for tanh) for a few vectors (~40 each)."""
    lanes = counts[0]
    full = sum(1 for n in counts if n == lanes)
    b = k.builder
    if full:
        flag = ir.Constant(ir.IntType(1), 0) if backwards is None else backwards
        whole = _activation_function(k.module, activation, c.dtype, lanes, masked=False)
        count, stride = ir.Constant(I64, full), ir.Constant(I64, c.strides[0])
        b.call(whole, [k.address(c, [i0, j0]), count, flag, ir.Constant(I64, rows), stride])
    if full < len(counts):
        part = _activation_function(k.module, activation, c.dtype, lanes, masked=True)

        def row(r):
            at = k.address(c, [b.add(i0, r), _add(k, j0, full * lanes)])
            b.call(part, [at, ir.Constant(I64, counts[-1]), ir.Constant(ir.IntType(1), 0)])

        k.loop(rows, row, "ar")


def _activation_function(module, activation, dtype, lanes: int, masked: bool) -> ir.Function:
    """`void f(ptr p, i64 count, i1 backwards, i64 rows, i64 stride)`: p[...] =
    activation(p[...]) on `count` whole vectors (last to first if `backwards`) in each of `rows`
    rows `stride` elements apart; if `masked`, `void f(ptr p, i64 count, i1)` on the first
    `count` lanes of one vector."""
    dtype = np.dtype(dtype)
    name = f"activation.{activation.name}.{dtype.name}.{lanes}{'.masked' if masked else ''}"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    args = [ir.PointerType(), I64, ir.IntType(1)] + ([] if masked else [I64, I64])
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    k = KernelBuilder(module, fn)
    b = k.builder
    ptr, count, backwards = fn.args[:3]
    vec, ety, align = _vec_type(dtype, lanes), llvm_type(dtype), dtype.itemsize
    if masked:
        iota = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
        mask = b.icmp_signed("<", iota, _splat(k, count, lanes))
        value = activation.emit(b, _masked_load(b, ptr, mask, vec, align))
        _masked_store(b, value, ptr, mask, align)
    else:
        rows, stride = fn.args[3:]

        def row(r):
            start = b.gep(ptr, [b.mul(r, stride)], source_etype=ety)

            def vector(v):
                v = b.select(backwards, b.sub(b.sub(count, ir.Constant(I64, 1)), v), v)
                at = b.gep(start, [b.mul(v, ir.Constant(I64, lanes))], source_etype=ety)
                b.store(activation.emit(b, b.load(at, typ=vec, align=align)), at, align=align)

            k.loop(count, vector, "v")

        k.loop(rows, row, "r")
    b.ret_void()
    return fn


# ---- anything else -----------------------------------------------------------------------------


def scalar_kernel(k: KernelBuilder, a: View, b: View, c: View) -> None:
    """C[i, j] += sum_k A[i, k] * B[k, j], in i-k-j order (any strides, any numeric dtype)."""
    m, depth = a.shape
    n = c.shape[1]
    bld = k.builder
    is_float = c.dtype.kind == "f"
    add, mul = (bld.fadd, bld.fmul) if is_float else (bld.add, bld.mul)

    def row(i):
        def reduce_step(p):
            a_ik = k.load(a, [i, p])

            def axpy(j):
                prod = mul(a_ik, k.load(b, [p, j]))
                k.store(add(k.load(c, [i, j]), prod), c, [i, j])

            k.loop(n, axpy, "j")

        k.loop(depth, reduce_step, "p")

    k.loop(m, row, "m")


def batched(k: KernelBuilder, batch_shape, views, fn) -> None:
    """Run fn on the 2-D views at every batch index (views already broadcast to batch_shape)."""
    if not batch_shape:
        fn(*views)
        return

    def body(idx):
        sub = []
        for v in views:
            offset = v.offset
            for i, s in zip(idx, v.strides[: len(batch_shape)], strict=True):
                if s:
                    offset = k.builder.add(offset, k.builder.mul(i, ir.Constant(I64, s)))
            rank = len(batch_shape)
            sub.append(View(v.ptr, offset, v.shape[rank:], v.strides[rank:], v.dtype))
        fn(*sub)

    k.loop_nest(batch_shape, body, "b")
