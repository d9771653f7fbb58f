"""Matrix products for the llvm backend: register-blocked micro-kernels on explicit vector types.

`accumulate(k, a, b, c)` computes C += A @ B for 2-D views. Two kernels, chosen by B's layout:

- dot form, when B is a weight used as W.T (B[k, j] = W[j, k], contiguous along k, the PyTorch
  layout of every `x @ W.T`): a tile of MR rows x NJ columns keeps MR*NJ vector accumulators in
  registers while k advances one vector at a time, then sums each accumulator's lanes. No packed
  copy of W is ever made, so live parameters cost nothing extra per call.
- axpy form, when B's rows are contiguous: a tile of MR rows x NV vectors of C stays in registers
  while `C[i, :] += A[i, k] * B[k, :]` runs over k.

Vector width comes from the host's features (AVX-512, AVX2, or a generic 4 lanes). Each C
element still sums its products in a fixed order (by lane, then across lanes), the same on every
call. Leftover rows, columns and k steps use smaller tiles or scalar code.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from .kernel import I64, KernelBuilder, View, intrinsic, llvm_type, type_suffix
from .runtime import host_features

KC = 256  # k-steps per cache block: a 256 x 64 panel of B (64 KiB in float32) stays in L2


def max_accumulators() -> int:
    """Vector registers to spend on the C tile: 24 of AVX-512's 32, 12 of AVX2's 16."""
    return 24 if "avx512f" in host_features() else 12


def prefers_packing(rows: int, b: View, reuse: int = 1) -> bool:
    """True when C += A @ B should first copy B into row-major form (the axpy kernel).

    Reading W in place costs a lane sum (~12 instructions) per C element; packing costs ~3 per
    element of B, paid once for `reuse` products (the steps of a loop).
    """
    if b.strides[1] == 1 or b.shape[1] == 1:
        return False
    return 12 * rows * reuse >= 3 * b.shape[0]


def vector_width(dtype) -> int:
    """Lanes per vector register for `dtype` on this host."""
    features = host_features()
    bits = 512 if "avx512f" in features else 256 if "avx2" in features else 128
    return bits // (8 * np.dtype(dtype).itemsize)


def copy(k: KernelBuilder, src: View, dst: View) -> None:
    """dst[...] = src[...] (same shape)."""
    k.loop_nest(dst.shape, lambda idx: k.store(k.load(src, idx), dst, idx), "cp")


def fill(k: KernelBuilder, dst: View, value) -> None:
    k.loop_nest(dst.shape, lambda idx: k.store(value, dst, idx), "fill")


def accumulate(
    k: KernelBuilder, a: View, b: View, c: View, init: View | None = None, activation=None
) -> None:
    """c = activation(start + a @ b) for 2-D float views of one dtype, where start is `init`
    (broadcast to c) or c's own contents. The epilogue (init, activation) is fused into the
    kernel, on values still in registers, where the kernel allows it."""
    fusable_init = init is None or init.strides[-1] == 1 or init.shape[-1] == 1
    if b.strides[0] == 1 and a.strides[1] == 1 and fusable_init:
        _dot_kernel(k, a, b, c, init, activation)
        return
    if b.strides[1] == 1 and a.shape[1] <= KC and fusable_init:
        _axpy_kernel(k, a, b, c, init, activation)
        return
    if init is not None:
        copy(k, init.broadcast_to(c.shape), c)
    if b.strides[1] == 1:
        _axpy_kernel(k, a, b, c)
    else:
        scalar_kernel(k, a, b, c)
    if activation is not None:
        k.loop_nest(c.shape, lambda idx: k.store(activation(k.load(c, idx)), c, idx), "act")


# ---- helpers ---------------------------------------------------------------------------------


def _vec_type(dtype, lanes: int) -> ir.VectorType:
    return ir.VectorType(llvm_type(dtype), lanes)


def _vload(k: KernelBuilder, view: View, indices, lanes: int) -> ir.Value:
    """`lanes` consecutive elements starting at view[indices] (the last dim has stride 1)."""
    ptr = k.address(view, indices)
    return k.builder.load(ptr, typ=_vec_type(view.dtype, lanes), align=view.dtype.itemsize)


def _vload_head(k: KernelBuilder, view: View, indices, lanes: int, count: int) -> ir.Value:
    """Like `_vload`, but only the first `count` lanes are read; the others are zero."""
    vec = _vec_type(view.dtype, lanes)
    fn_type = ir.FunctionType(
        vec, [ir.PointerType(), ir.IntType(32), ir.VectorType(ir.IntType(1), lanes), vec]
    )
    name = f"llvm.masked.load.{type_suffix(vec)}.p0"
    try:
        fn = k.module.get_global(name)
    except KeyError:
        fn = ir.Function(k.module, fn_type, name=name)
    mask = ir.Constant(ir.VectorType(ir.IntType(1), lanes), [1] * count + [0] * (lanes - count))
    align = ir.Constant(ir.IntType(32), view.dtype.itemsize)
    zero = ir.Constant(vec, [0.0] * lanes)
    return k.builder.call(fn, [k.address(view, indices), align, mask, zero])


def _vstore(k: KernelBuilder, value: ir.Value, view: View, indices) -> None:
    k.builder.store(value, k.address(view, indices), align=view.dtype.itemsize)


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


def _add(k: KernelBuilder, x: ir.Value, i) -> ir.Value:
    return k.builder.add(x, ir.Constant(I64, i)) if i else x


# ---- dot form: C[i, j] += dot(A[i, :], W[j, :]) ------------------------------------------------


def _dot_kernel(k: KernelBuilder, a: View, b: View, c: View, init=None, activation=None) -> None:
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
            value = k.builder.fadd(_vload(k, start, [i, j0], cols), sums)
            _vstore(k, activation(value) if activation else value, c, [i, j0])
        else:
            for j in range(cols):
                total = k.builder.extract_element(sums, ir.Constant(ir.IntType(32), j))
                idx = [i, _add(k, j0, j)]
                value = k.builder.fadd(k.load(start, idx), total)
                k.store(activation(value) if activation else value, c, idx)

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


def _axpy_kernel(k: KernelBuilder, a: View, b: View, c: View, init=None, activation=None) -> None:
    """Cache-blocked: for each block of KC k-steps and each panel of B columns (which then stays
    in L2), every MR-row tile of C accumulates in registers."""
    m, depth = a.shape
    n = c.shape[1]
    lanes = vector_width(c.dtype)
    vectors = n // lanes
    nv = min(vectors, 8 if m < 4 else 4)
    mr = max(1, min(m, max_accumulators() // max(nv, 1), 6))
    bld = k.builder

    assert (init is None and activation is None) or depth <= KC, "fused only in one k block"
    source = c if init is None else init.broadcast_to(c.shape)

    def tile(i0, rows, j0, nvec, k0, steps):
        cols = [bld.add(j0, ir.Constant(I64, v * lanes)) for v in range(nvec)]
        start = [
            _vload(k, source, [_add(k, i0, r), cols[v]], lanes)
            for r in range(rows)
            for v in range(nvec)
        ]

        def step(p, accs):
            p = bld.add(p, k0)
            bvs = [_vload(k, b, [p, cols[v]], lanes) for v in range(nvec)]
            out = []
            for r in range(rows):
                a_s = _splat(k, k.load(a, [_add(k, i0, r), p]), lanes)
                out += [_fma(k, a_s, bvs[v], accs[r * nvec + v]) for v in range(nvec)]
            return out

        accs = k.loop_carry(steps, start, step, "p")
        if activation is not None:
            accs = [activation(acc) for acc in accs]
        for r in range(rows):
            for v in range(nvec):
                _vstore(k, accs[r * nvec + v], c, [_add(k, i0, r), cols[v]])

    if nv:
        block = nv * lanes

        def k_block(k0, steps):
            def panel(j0, cols):
                _blocked(
                    k, m, mr, lambda i0, rows: tile(i0, rows, j0, cols // lanes, k0, steps), "mi"
                )

            _blocked(k, vectors * lanes, block, panel, "nv")

        _blocked(k, depth, KC, k_block, "kb")
    done = vectors * lanes
    if done < n:  # columns left over after whole vectors
        tail_b = View(
            b.ptr, _add(k, b.offset, done * b.strides[1]), (depth, n - done), b.strides, b.dtype
        )
        tail_c = View(
            c.ptr, _add(k, c.offset, done * c.strides[1]), (m, n - done), c.strides, c.dtype
        )
        if init is not None:
            tail_init = init.broadcast_to(c.shape)
            tail_init = View(
                tail_init.ptr,
                _add(k, tail_init.offset, done * tail_init.strides[1]),
                tail_c.shape,
                tail_init.strides,
                tail_init.dtype,
            )
            copy(k, tail_init, tail_c)
        scalar_kernel(k, a, tail_b, tail_c)
        if activation is not None:
            k.loop_nest(
                tail_c.shape, lambda idx: k.store(activation(k.load(tail_c, idx)), tail_c, idx)
            )


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
