"""The `loop` op: a recurrence whose step is a small graph (made by the `reroll` pass).

    loop(xs, h0, *invariants) {body}  ->  hs,  hs[t] = body(xs[t], h_{t-1}, *invariants)

`xs` has the steps on dim 0; `h0` is the initial carry; the result stacks every step's carry,
so the last state is `hs[T-1]`. The body is a Graph with inputs (x_t, h, *invariants) and one
output, the next h. Graph size no longer grows with the number of steps.
"""

from __future__ import annotations

import numpy as np

from ..ops.registry import TensorType, def_op, fmt
from .autodiff import input_gradients
from .graph import Graph
from .interpreter import run


def _loop_impl(xs, h0, *invariants, body: Graph):
    h = h0
    hs = np.empty((xs.shape[0],) + h0.shape, dtype=h0.dtype)
    for t in range(xs.shape[0]):
        (h,) = run(body, [xs[t], h, *invariants])
        hs[t] = h
    return hs


def _loop_type(xs, h0, *invariants, body: Graph) -> TensorType:
    if len(xs.shape) < 1:
        raise ValueError(f"loop: xs needs a leading steps dim, got shape {fmt(xs.shape)}")
    given = [TensorType(tuple(xs.shape[1:]), np.dtype(xs.dtype))]
    given += [TensorType(tuple(t.shape), np.dtype(t.dtype)) for t in (h0, *invariants)]
    expected = [i.type for i in body.inputs]
    if given != expected or len(body.outputs) != 1 or body.outputs[0].type != given[1]:
        raise ValueError(
            f"loop: body takes ({', '.join(map(str, expected))}) -> "
            f"({', '.join(str(o.type) for o in body.outputs)}), but the loop passes "
            f"({', '.join(map(str, given))}) and carries {given[1]}"
        )
    return TensorType((xs.shape[0],) + tuple(h0.shape), np.dtype(h0.dtype))


def _loop_vjp(g, hs, xs, h0, *invariants, body: Graph):
    # NOTE: backpropagation through time on numpy values; a compiled backward would emit a
    # reverse loop op instead.
    g_xs = np.zeros_like(xs)
    g_inv = [np.zeros_like(v) for v in invariants]
    g_h = np.zeros_like(h0)
    for t in reversed(range(xs.shape[0])):
        h_prev = hs[t - 1] if t > 0 else h0
        _, values = run(body, [xs[t], h_prev, *invariants], keep_values=True)
        grads = input_gradients(body, values, [g[t] + g_h])
        g_xs[t], g_h = _or_zero(grads[0], xs[t]), _or_zero(grads[1], h0)
        for acc, gi in zip(g_inv, grads[2:], strict=True):
            if gi is not None:
                acc += gi
    return (g_xs, g_h, *g_inv)


def _or_zero(g, like):
    return np.zeros_like(like) if g is None else g


def_op("loop", impl=_loop_impl, shape=_loop_type, vjp=_loop_vjp)
