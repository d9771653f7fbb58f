"""Copies of parameters kept between calls (see `GraphLowering.kept_transpose`): the check of a
parameter against its snapshot, and the packing of a weight W into the column panels of W.T that
the GEMM kernels read (`gemm.Panels`).

Both are helper functions with runtime sizes, one per module and dtype. The check runs on every
call but is a plain stream; the pack runs only when a parameter changed. Specialized per use, they
cost compile time for nothing.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from .gemm import Panels, _masked_load, _masked_store, _splat, _vec_type, vector_width
from .kernel import I64, KernelBuilder, View, llvm_type, type_suffix

PTR = ir.PointerType()
I1 = ir.IntType(1)


def refresh(k: KernelBuilder, x: View, snapshot: View) -> ir.Value:
    """An i1: whether contiguous x differs from `snapshot` in any bit (NaNs and signed zeros
    compare by their bits); if it does, x is copied into the snapshot."""
    fn = _refresh_function(k.module, x.dtype)
    zero = [ir.Constant(I64, 0)] * len(x.shape)
    size = ir.Constant(I64, x.size)
    return k.builder.call(fn, [k.address(x, zero), k.address(snapshot, zero), size])


def pack(k: KernelBuilder, w: View, dst: Panels) -> None:
    """dst = w.T in panels, for an N x K matrix w with contiguous rows (a weight used as W.T)."""
    fn = _pack_function(k.module, w.dtype)
    zero = ir.Constant(I64, 0)
    n, depth = w.shape
    k.builder.call(
        fn,
        [
            k.address(w, [zero, zero]),
            ir.Constant(I64, n),
            ir.Constant(I64, depth),
            ir.Constant(I64, w.strides[0]),
            k.address(dst.view, [zero, zero, zero]),
            ir.Constant(I64, dst.width),
        ],
    )


def transpose(k: KernelBuilder, src: View, dst: View) -> None:
    """dst = src for a 2-D src seen transposed (strides (1, s)) and a dst with contiguous rows:
    a transpose a block of lanes x lanes at a time through registers, where an element-wise copy
    reads one scalar per column."""
    fn = _transpose_function(k.module, src.dtype)
    zero = ir.Constant(I64, 0)
    rows, cols = src.shape
    k.builder.call(
        fn,
        [
            k.address(src, [zero, zero]),
            ir.Constant(I64, cols),
            ir.Constant(I64, rows),
            ir.Constant(I64, src.strides[1]),
            k.address(dst, [zero, zero]),
            ir.Constant(I64, dst.strides[0]),
        ],
    )


def _helper(module: ir.Module, name: str, ret: ir.Type, args: list) -> tuple[ir.Function, bool]:
    """The module's function `name`, and whether it still needs a body."""
    fn = module.globals.get(name)
    if fn is not None:
        return fn, False
    fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    return fn, True


def _refresh_function(module: ir.Module, dtype) -> ir.Function:
    """`i1 f(ptr x, ptr snapshot, i64 count)`."""
    dtype = np.dtype(dtype)
    fn, new = _helper(module, f"kept.refresh.{dtype.name}", I1, [PTR, PTR, I64])
    if not new:
        return fn
    k = KernelBuilder(module, fn)
    b = k.builder
    x, snap, count = fn.args
    lanes = vector_width(dtype)
    vec = _vec_type(dtype, lanes)
    ivec = ir.VectorType(ir.IntType(8 * dtype.itemsize), lanes)
    ety, align = llvm_type(dtype), dtype.itemsize
    full = b.udiv(count, ir.Constant(I64, lanes))
    tail_at = b.mul(full, ir.Constant(I64, lanes))
    mask = b.icmp_signed(
        "<",
        ir.Constant(ir.VectorType(I64, lanes), list(range(lanes))),
        _splat(k, b.sub(count, tail_at), lanes),
    )

    def at(ptr, i):
        return b.gep(ptr, [i], source_etype=ety)

    def step(v, accs):
        i = b.mul(v, ir.Constant(I64, lanes))
        xv, sv = (b.load(at(p, i), typ=vec, align=align) for p in (x, snap))
        return [b.or_(accs[0], b.xor(b.bitcast(xv, ivec), b.bitcast(sv, ivec)))]

    acc = k.loop_carry(full, [ir.Constant(ivec, None)], step, "r")[0]
    xv, sv = (_masked_load(b, at(p, tail_at), mask, vec, align) for p in (x, snap))
    acc = b.or_(acc, b.xor(b.bitcast(xv, ivec), b.bitcast(sv, ivec)))
    reduce = module.globals.get(f"llvm.vector.reduce.or.{type_suffix(ivec)}") or ir.Function(
        module,
        ir.FunctionType(ivec.element, [ivec]),
        name=f"llvm.vector.reduce.or.{type_suffix(ivec)}",
    )
    changed = b.icmp_unsigned("!=", b.call(reduce, [acc]), ir.Constant(ivec.element, 0))
    with b.if_then(changed, likely=False):

        def copy(v):
            i = b.mul(v, ir.Constant(I64, lanes))
            b.store(b.load(at(x, i), typ=vec, align=align), at(snap, i), align=align)

        k.loop(full, copy, "c")
        _masked_store(
            b, _masked_load(b, at(x, tail_at), mask, vec, align), at(snap, tail_at), mask, align
        )
    b.ret(changed)
    return fn


def _pack_function(module: ir.Module, dtype) -> ir.Function:
    """`void f(ptr w, i64 n, i64 depth, i64 row_stride, ptr dst, i64 width)`: the n x depth
    matrix w (rows row_stride apart) transposed into panels of `width` columns of w.T."""
    dtype = np.dtype(dtype)
    args = [PTR, I64, I64, I64, PTR, I64]
    fn, new = _helper(module, f"kept.pack.{dtype.name}", ir.VoidType(), args)
    if not new:
        return fn
    k = KernelBuilder(module, fn)
    b = k.builder
    w, n, depth, stride, dst, width = fn.args
    transpose_fn = _transpose_function(module, dtype)
    ety = llvm_type(dtype)

    def panel(q):
        first = b.mul(q, width)
        cols = b.select(b.icmp_signed("<", width, b.sub(n, first)), width, b.sub(n, first))
        src_q = b.gep(w, [b.mul(first, stride)], source_etype=ety)
        dst_q = b.gep(dst, [b.mul(b.mul(q, depth), width)], source_etype=ety)
        b.call(transpose_fn, [src_q, cols, depth, stride, dst_q, width])

    k.loop(_ceil_div(b, n, width), panel, "q")
    b.ret_void()
    return fn


def _ceil_div(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.udiv(b.add(x, b.sub(y, ir.Constant(I64, 1))), y)


def _transpose_function(module: ir.Module, dtype) -> ir.Function:
    """`void f(ptr w, i64 n, i64 depth, i64 row_stride, ptr dst, i64 dst_row_stride)`: the
    n x depth matrix w (rows row_stride apart) transposed into dst (rows dst_row_stride apart).

    Blocks of 256-bit vectors even on AVX-512 (a 16 x 16 transpose costs LLVM twice the time to
    compile, for cold code), visited a cache line square at a time: each line read or written is
    used whole before it leaves L1. Line by line across a row of blocks instead, rows of a
    power-of-two stride all fall in a few cache sets (a 512 x 512 float32 transpose: ~1.5x)."""
    dtype = np.dtype(dtype)
    args = [PTR, I64, I64, I64, PTR, I64]
    fn, new = _helper(module, f"transpose.{dtype.name}", ir.VoidType(), args)
    if not new:
        return fn
    k = KernelBuilder(module, fn)
    b = k.builder
    w, n, depth, stride, dst, dst_stride = fn.args
    block = min(vector_width(dtype), 32 // dtype.itemsize)
    per_line = max(1, 64 // dtype.itemsize // block)  # blocks per cache line
    lanes = ir.Constant(I64, block)
    square = ir.Constant(I64, block * per_line)
    block_fn = _transpose_block_function(module, dtype, block)
    ety = llvm_type(dtype)

    def smin(x, y):
        return b.select(b.icmp_signed("<", x, y), x, y)

    def square_at(js, ks):
        for dj in range(per_line):
            for dk in range(per_line):
                j = b.add(b.mul(js, square), ir.Constant(I64, dj * block))
                kk = b.add(b.mul(ks, square), ir.Constant(I64, dk * block))
                # Past the matrix's edge, counts <= 0: the block touches nothing.
                rows, cols = smin(lanes, b.sub(n, j)), smin(lanes, b.sub(depth, kk))
                src = b.gep(w, [b.add(b.mul(j, stride), kk)], source_etype=ety)
                out = b.gep(dst, [b.add(b.mul(kk, dst_stride), j)], source_etype=ety)
                b.call(block_fn, [src, stride, out, dst_stride, rows, cols])

    k.loop(
        _ceil_div(b, n, square),
        lambda js: k.loop(_ceil_div(b, depth, square), lambda ks: square_at(js, ks), "ks"),
        "js",
    )
    b.ret_void()
    return fn


def _transpose_block_function(module: ir.Module, dtype, lanes: int) -> ir.Function:
    """`void f(src, src_row_stride, dst, dst_row_stride, rows, cols)`: dst = src.T for the rows x
    cols (each <= lanes) block at src, through registers. A whole block (most of them) moves
    with plain loads and stores; an edge block with masked ones that touch only its elements."""
    dtype = np.dtype(dtype)
    args = [PTR, I64, PTR, I64, I64, I64]
    fn, new = _helper(module, f"kept.transpose.{dtype.name}.{lanes}", ir.VoidType(), args)
    if not new:
        return fn
    k = KernelBuilder(module, fn)
    src_ptr, src_stride, dst_ptr, dst_stride, rows, cols = fn.args
    ety = llvm_type(dtype)
    b = k.builder
    vec = _vec_type(dtype, lanes)
    align = dtype.itemsize

    def row(ptr, stride, r):
        return b.gep(ptr, [b.mul(stride, ir.Constant(I64, r))], source_etype=ety)

    n = ir.Constant(I64, lanes)
    whole = b.and_(b.icmp_signed("==", rows, n), b.icmp_signed("==", cols, n))
    with b.if_else(whole, likely=True) as (then, otherwise):
        with then:
            vecs = [b.load(row(src_ptr, src_stride, r), typ=vec, align=align) for r in range(lanes)]
            for c, v in enumerate(_transpose_vectors(b, vecs)):
                b.store(v, row(dst_ptr, dst_stride, c), align=align)
        with otherwise:
            lane = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
            in_rows = b.icmp_signed("<", lane, _splat(k, rows, lanes))  # lanes of a dst row
            in_cols = b.icmp_signed("<", lane, _splat(k, cols, lanes))  # lanes of a src row

            def when(mask, i, count):
                inside = b.icmp_signed("<", ir.Constant(I64, i), count)
                return b.and_(mask, _splat(k, inside, lanes))

            vecs = [
                _masked_load(b, row(src_ptr, src_stride, r), when(in_cols, r, rows), vec, align)
                for r in range(lanes)
            ]
            for c, v in enumerate(_transpose_vectors(b, vecs)):
                _masked_store(b, v, row(dst_ptr, dst_stride, c), when(in_rows, c, cols), align)
    b.ret_void()
    return fn


def _transpose_vectors(b: ir.IRBuilder, vecs: list) -> list:
    """The transpose of a square matrix held as len(vecs) vectors of as many lanes: each round
    swaps the off-diagonal blocks of every 2x2 grid of blocks (half the size each round)."""
    n = len(vecs)
    mask_type = ir.VectorType(ir.IntType(32), n)
    half = n // 2
    while half:
        first = ir.Constant(
            mask_type, [c if c // half % 2 == 0 else n + c - half for c in range(n)]
        )
        second = ir.Constant(
            mask_type, [c + half if c // half % 2 == 0 else n + c for c in range(n)]
        )
        out = list(vecs)
        for r in range(n):
            if r // half % 2 == 0:
                x, y = vecs[r], vecs[r + half]
                out[r] = b.shuffle_vector(x, y, first)
                out[r + half] = b.shuffle_vector(x, y, second)
        vecs = out
        half //= 2
    return vecs
