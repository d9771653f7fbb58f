"""The `loop` op: a recurrence whose step is a small graph (made by the `reroll` pass).

    loop(xs, h0, *invariants) {body}  ->  hs,  hs[t] = body(xs[t], h_{t-1}, *invariants)

`xs` has the steps on dim 0; `h0` is the initial carry; the result stacks every step's carry,
so the last state is `hs[T-1]`. The body is a Graph with inputs (x_t, h, *invariants) and one
output, the next h. Graph size no longer grows with the number of steps.

Two params generalize it for backpropagation through time: `sequences=k` takes k stacked inputs
(all sliced at step t, in order) before the carry, and `reverse=True` runs the steps from T-1
down to 0, so that hs[t] = body(xs[t], h_{t+1}) with h_T = h0.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import CompileError
from ..ops.registry import TensorType, bind, def_op, fmt
from ..ops.shape import Slice
from .autodiff import GraphBuilder, backpropagate, memoized_values, remove_dead
from .graph import Graph
from .interpreter import run
from .trace import TracerTensor


def _split(args, sequences: int):
    return args[:sequences], args[sequences], args[sequences + 1 :]


def _loop_impl(*args, body: Graph, sequences: int = 1, reverse: bool = False):
    seqs, h, invariants = _split(args, sequences)
    steps = seqs[0].shape[0]
    hs = np.empty((steps,) + h.shape, dtype=h.dtype)
    for t in reversed(range(steps)) if reverse else range(steps):
        (h,) = run(body, [*(s[t] for s in seqs), h, *invariants])
        hs[t] = h
    return hs


def _loop_type(*args, body: Graph, sequences: int = 1, reverse: bool = False) -> TensorType:
    if not 1 <= sequences < len(args):
        raise ValueError(f"loop: sequences={sequences} does not fit its {len(args)} inputs")
    seqs, h0, invariants = _split(args, sequences)
    if any(len(s.shape) < 1 or s.shape[0] != seqs[0].shape[0] for s in seqs):
        shapes = ", ".join(fmt(s.shape) for s in seqs)
        raise ValueError(f"loop: sequences need the same leading steps dim, got shapes {shapes}")
    given = [TensorType(tuple(s.shape[1:]), np.dtype(s.dtype)) for s in seqs]
    given += [TensorType(tuple(t.shape), np.dtype(t.dtype)) for t in (h0, *invariants)]
    carry = given[sequences]
    expected = [i.type for i in body.inputs]
    if given != expected or len(body.outputs) != 1 or body.outputs[0].type != carry:
        raise ValueError(
            f"loop: body takes ({', '.join(map(str, expected))}) -> "
            f"({', '.join(str(o.type) for o in body.outputs)}), but the loop passes "
            f"({', '.join(map(str, given))}) and carries {carry}"
        )
    return TensorType((seqs[0].shape[0],) + tuple(h0.shape), np.dtype(h0.dtype))


# ---- backpropagation through time --------------------------------------------------------------
#
# With cotangents G[t] of every state hs[t], the total cotangent of hs[t] is
#     L[t] = G[t] + (what step t+1 sends back to its incoming state).
# 1. A reverse loop carries exactly that: C[t] = d body / d h_{t-1} at step t applied to
#    G[t] + C[t+1], so L[t] = G[t] + C[t+1] and h0's gradient is C[0].
# 2. The gradients of xs and of the invariants need no recurrence: they are the body's own
#    gradient at every step, given L[t]. A body that works row by row on its batch (an rnn_step)
#    gives all steps at once when the steps are folded into the batch: one large product for
#    the weight gradient instead of T small ones.

ROW_WISE = {"rnn_step", "rnn_cell", "add", "sub", "mul", "tanh", "sigmoid", "relu", "neg", "exp"}


def _loop_vjp(g, hs, *args, body: Graph, sequences: int = 1, reverse: bool = False):
    if sequences != 1 or reverse:
        raise CompileError("loop: only forward loops over one sequence have a gradient rule")
    (xs,), h0, invariants = _split(args, sequences)
    check_differentiable_body(body)
    steps, rows = xs.shape[0], h0.shape[0]
    zeros = np.zeros(tuple(h0.shape), dtype=h0.dtype)

    @functools.cache
    def h_prev():  # the state each step starts from, made only if a gradient reads it
        first = _unsqueeze(h0)
        return first if steps == 1 else bind("cat", first, _steps(hs, None, steps - 1), dim=0)

    step_grad, fed = _state_gradient_body(body)
    sequences_by_name = {"x": _given(xs), "h_prev": h_prev, "h": _given(hs), "g": _given(g)}
    seqs = [sequences_by_name[name]() for name in fed["sequences"]]
    used_invariants = [invariants[k] for k in fed["invariants"]]
    carried = bind(
        "loop", *seqs, zeros, *used_invariants, body=step_grad, sequences=len(seqs), reverse=True
    )
    later = (
        _unsqueeze(zeros)
        if steps == 1
        else bind("cat", _steps(carried, 1, steps), _unsqueeze(zeros), dim=0)
    )
    total = g + later
    g_h0 = _step(carried, 0)

    def fold(v):
        return bind("reshape", v, shape=(steps * rows,) + tuple(v.shape[2:]))

    x, h = body.inputs[0], body.inputs[1]
    known = {x: lambda: fold(xs), h: lambda: fold(h_prev()), body.outputs[0]: lambda: fold(hs)}
    known.update((i, _given(v)) for i, v in zip(body.inputs[2:], invariants, strict=True))
    wanted = [x, *body.inputs[2:]]
    cotangent = {body.outputs[0]: fold(total)}
    grads = backpropagate(body, memoized_values(body, known), cotangent, wanted)
    g_xs = grads[x]
    if g_xs is not None:
        g_xs = bind("reshape", g_xs, shape=tuple(xs.shape))
    return (g_xs, g_h0, *(grads[i] for i in body.inputs[2:]))


def check_differentiable_body(body: Graph) -> None:
    """Raise CompileError unless the loop gradient rule takes `body` (it works row by row)."""
    rows = body.inputs[1].shape[0]
    for node in body.nodes:
        if not node.is_const and node.op not in ROW_WISE:
            raise CompileError(
                f"loop: no gradient rule for a body with {node.op!r} (%{node.name}); only bodies "
                f"that work row by row on the batch ({', '.join(sorted(ROW_WISE))}) have one"
            )
        if node.op in ROW_WISE - {"rnn_step", "rnn_cell"} and any(
            len(i.shape) != len(node.shape) or i.shape[0] != rows for i in node.inputs
        ):
            raise CompileError(f"loop: body op %{node.name} broadcasts across the batch rows")


def _state_gradient_body(body: Graph) -> tuple[Graph, dict]:
    """The reverse loop's step: (x_t, h_prev_t, h_t, g_t, carry, *invariants) -> the cotangent of
    h_prev_t, given the cotangent g_t + carry of the step's output h_t. Inputs the gradient does
    not read are dropped; `fed` says which sequences and invariants remain, in order."""
    graph = Graph("body_grad")
    x, h, *invariants = body.inputs
    sequences = {
        "x": graph.add_input("x", x.type),
        "h_prev": graph.add_input("h_prev", h.type),
        "h": graph.add_input("h", body.outputs[0].type),
        "g": graph.add_input("g", body.outputs[0].type),
    }
    carry = graph.add_input("carry", h.type)
    inv_inputs = [graph.add_input(i.name, i.type, rename=True) for i in invariants]
    builder = GraphBuilder(graph)
    with builder.recording():
        known = {x: _given(TracerTensor(sequences["x"]))}
        known[h] = _given(TracerTensor(sequences["h_prev"]))
        known[body.outputs[0]] = _given(TracerTensor(sequences["h"]))
        known.update(
            (i, _given(TracerTensor(n))) for i, n in zip(invariants, inv_inputs, strict=True)
        )
        total = TracerTensor(sequences["g"]) + TracerTensor(carry)
        g_h = backpropagate(body, memoized_values(body, known), {body.outputs[0]: total}, [h])[h]
        out = builder.node(g_h if g_h is not None else np.zeros(h.shape, h.dtype))
    graph.set_outputs([out])
    remove_dead(graph)
    used = [name for name, node in sequences.items() if node.users or node in graph.outputs]
    used_inv = [k for k, n in enumerate(inv_inputs) if n.users or n in graph.outputs]
    graph.inputs = [sequences[n] for n in used] + [carry] + [inv_inputs[k] for k in used_inv]
    return graph, {"sequences": used, "invariants": used_inv}


def _given(value):
    return lambda: value


def _unsqueeze(v):
    return bind("reshape", v, shape=(1,) + tuple(v.shape))


def _step(v, t: int):
    return bind("getitem", v, index=(t,))


def _steps(v, start, stop):
    return bind("getitem", v, index=(Slice(start, stop, None),))


def_op("loop", impl=_loop_impl, shape=_loop_type, vjp=_loop_vjp)
