"""Matrix products, with NumPy's `matmul` semantics (1-D operands, batch broadcasting)."""

from __future__ import annotations

import numpy as np

from .elementwise import unbroadcast
from .registry import TensorType, bind, broadcast_shapes, def_op, fmt, result_dtype


def _matmul_type(a, b) -> TensorType:
    if len(a.shape) == 0 or len(b.shape) == 0:
        raise ValueError(
            f"matmul: both operands need at least 1 dim, got {fmt(a.shape)} and {fmt(b.shape)}"
        )
    k_a = a.shape[-1]
    k_b = b.shape[0] if len(b.shape) == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(
            f"matmul: shapes {fmt(a.shape)} and {fmt(b.shape)} cannot be multiplied "
            f"({k_a} != {k_b})"
        )
    batch_a, batch_b = tuple(a.shape[:-2]), tuple(b.shape[:-2])
    try:
        batch = broadcast_shapes(batch_a, batch_b)
    except ValueError:
        raise ValueError(
            f"matmul: the batch dims of {fmt(a.shape)} and {fmt(b.shape)} do not broadcast"
        ) from None
    rows = (a.shape[-2],) if len(a.shape) > 1 else ()
    cols = (b.shape[-1],) if len(b.shape) > 1 else ()
    return TensorType(batch + rows + cols, result_dtype(a, b))


def _swap_last(x):
    n = len(x.shape)
    return bind("transpose", x, d0=n - 2, d1=n - 1)


def _matmul_vjp(g, out, a, b):
    if len(a.shape) > 2 and len(b.shape) == 2:  # a linear layer on a batch of matrices:
        return _batched_linear_vjp(g, a, b)  # b's gradient is one product, not a sum of many
    # Treat 1-D operands as a row (a) or a column (b) matrix, then undo that on the gradients.
    a2 = bind("reshape", a, shape=(1, a.shape[0])) if len(a.shape) == 1 else a
    b2 = bind("reshape", b, shape=(b.shape[0], 1)) if len(b.shape) == 1 else b
    g_shape = broadcast_shapes(tuple(a2.shape[:-2]), tuple(b2.shape[:-2]))
    g_shape += (a2.shape[-2], b2.shape[-1])
    g2 = bind("reshape", g, shape=g_shape) if tuple(g.shape) != g_shape else g
    ga = unbroadcast(g2 @ _swap_last(b2), a2.shape)
    gb = unbroadcast(_swap_last(a2) @ g2, b2.shape)
    if ga.shape != tuple(a.shape):
        ga = bind("reshape", ga, shape=tuple(a.shape))
    if gb.shape != tuple(b.shape):
        gb = bind("reshape", gb, shape=tuple(b.shape))
    return ga, gb


def_op("matmul", impl=np.matmul, shape=_matmul_type, vjp=_matmul_vjp)


def _batched_linear_vjp(g, a, b):
    rows = int(np.prod(a.shape[:-1]))
    a2 = bind("reshape", a, shape=(rows, a.shape[-1]))
    g2 = bind("reshape", g, shape=(rows, g.shape[-1]))
    return g @ _swap_last(b), _swap_last(a2) @ g2
