"""Matrix products for the llvm backend: C (+)= A @ B on strided views, with optional epilogue.

The product runs in i-k-j order, `C[i, :] += A[i, k] * B[k, :]`, whose inner loop is a vectorizable
axpy over a contiguous row of B and C. Each C[i, j] still sums over k in order, so results match
a plain dot product's rounding behaviour. B is copied into a contiguous workspace first when its
rows are not contiguous (a weight used as W.T).
"""

from __future__ import annotations

from llvmlite import ir

from .kernel import I64, KernelBuilder, View


def is_float_type(ty: ir.Type) -> bool:
    return isinstance(ty, (ir.FloatType, ir.DoubleType))


def copy(k: KernelBuilder, src: View, dst: View) -> None:
    """dst[...] = src[...] (same shape)."""
    k.loop_nest(dst.shape, lambda idx: k.store(k.load(src, idx), dst, idx), "cp")


def fill(k: KernelBuilder, dst: View, value) -> None:
    k.loop_nest(dst.shape, lambda idx: k.store(value, dst, idx), "fill")


def matmul_accumulate(k: KernelBuilder, a: View, b: View, c: View) -> None:
    """c[m, n] += sum_k a[m, k] * b[k, n] for 2-D views; b's rows must be contiguous."""
    m, kk = a.shape
    _, n = c.shape
    bld = k.builder

    def row(i):
        def reduce_step(p):
            a_ik = k.load(a, [i, p])

            def axpy(j):
                prod = bld.fmul(a_ik, k.load(b, [p, j]))
                k.store(bld.fadd(k.load(c, [i, j]), prod), c, [i, j])

            k.loop(n, axpy, "j")

        k.loop(kk, reduce_step, "p")

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
