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
# One step's gradient is recorded once as a graph (`StepGradient`): given the cotangent
# L[t] = G[t] + C[t+1] of its output (G: of hs[t] from outside, C[t+1]: what step t+1 sends back
# to its incoming state), it gives C[t] and the step's share of the gradients of xs and of the
# invariants.
# 1. C[t] is usually a fixed linear map of one value the step computes from L[t] and its
#    forward values: for an rnn_step, C[t] = d[t] @ w_hh with d[t] the pre-activation's
#    cotangent. The reverse loop carries that value ("the frontier") instead of C: each step
#    first applies the map to the carry (C[t+1] = d[t+1] @ w_hh), then computes its own d[t],
#    and the loop's stacked output is every step's d.
# 2. The gradients of xs and of the invariants need no recurrence: they are the step gradient's
#    other outputs given d (and the forward values). A body that works row by row on its batch
#    gives all steps at once when the steps are folded into the batch: one large product per
#    weight gradient over the stacked d, instead of T small ones, and nothing recomputed.

ROW_WISE = {"rnn_step", "rnn_cell", "add", "sub", "mul", "tanh", "sigmoid", "relu", "neg", "exp"}
SEQUENCES = ("x", "h_prev", "h", "g")  # what the step gradient reads at step t, in this order


def _loop_vjp(g, hs, *args, body: Graph, sequences: int = 1, reverse: bool = False):
    if sequences != 1 or reverse:
        raise CompileError("loop: only forward loops over one sequence have a gradient rule")
    (xs,), h0, invariants = _split(args, sequences)
    check_differentiable_body(body)
    steps, rows = xs.shape[0], h0.shape[0]
    step = StepGradient(body)

    @functools.cache
    def h_prev():  # the state each step starts from, made only if a gradient reads it
        first = _unsqueeze(h0)
        return first if steps == 1 else bind("cat", first, _steps(hs, None, steps - 1), dim=0)

    stacked = {"x": _given(xs), "h_prev": h_prev, "h": _given(hs), "g": _given(g)}
    seqs = [stacked[name]() for name in step.fed_sequences]
    used_invariants = [invariants[k] for k in step.fed_invariants]
    zeros = np.zeros(tuple(step.frontier.shape), dtype=step.frontier.dtype)
    ds = bind(
        "loop",
        *seqs,
        zeros,
        *used_invariants,
        body=step.loop_body,
        sequences=len(seqs),
        reverse=True,
    )

    def fold(v):
        return bind("reshape", v, shape=(steps * rows,) + tuple(v.shape[2:]))

    # The steps' other gradients, all steps at once: the step gradient at the folded batch.
    known = {step.sequences[name]: (lambda f=fn: fold(f())) for name, fn in stacked.items()}
    known.update((i, _given(v)) for i, v in zip(step.invariants, invariants, strict=True))
    known[step.frontier] = lambda: fold(ds)

    def later_carry():  # C[t+1] for every step (C[T] = 0), only if a gradient reads it
        last = _unsqueeze(_zeros_like(h0))
        if steps == 1:
            return fold(last)
        sent = bind("reshape", folded(step.state_grad), shape=(steps,) + tuple(h0.shape))
        return fold(bind("cat", _steps(sent, 1, steps), last, dim=0))

    known[step.carry] = later_carry
    folded = memoized_values(step.graph, known)
    g_xs = folded(step.outputs["x"]) if "x" in step.outputs else None
    if g_xs is not None:
        g_xs = bind("reshape", g_xs, shape=tuple(xs.shape))
    g_invariants = [
        folded(step.outputs[k]) if k in step.outputs else None for k in range(len(invariants))
    ]
    # h0's gradient: what step 0 sends back, from its frontier value.
    first = {**known, step.frontier: lambda: _step(ds, 0)}
    g_h0 = memoized_values(step.graph, first)(step.state_grad)
    return (g_xs, g_h0, *g_invariants)


def _zeros_like(v) -> np.ndarray:
    return np.zeros(tuple(v.shape), dtype=v.dtype)


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


class StepGradient:
    """One step's gradient as a graph, and the reverse loop's body made from it.

    `graph`: (x, h_prev, h, g, carry, *invariants) -> the cotangent of h_prev (`state_grad`) and
    of x and the invariants (`outputs`, by "x" or invariant position; absent: no gradient), where
    the step's output has the cotangent g + carry. `frontier`: the value the reverse loop carries
    and stacks; `state_grad` depends on the step only through it. `loop_body`: (the sequences it
    reads, the frontier of step t+1, the invariants it reads) -> the frontier of step t;
    `fed_sequences` / `fed_invariants` say which, in order.
    """

    def __init__(self, body: Graph):
        graph = Graph("step_grad")
        x, h, *invariants = body.inputs
        out_type = body.outputs[0].type
        types = {"x": x.type, "h_prev": h.type, "h": out_type, "g": out_type}
        seqs = {name: graph.add_input(name, types[name]) for name in SEQUENCES}
        self.carry = graph.add_input("carry", h.type)
        self.invariants = [graph.add_input(i.name, i.type, rename=True) for i in invariants]
        builder = GraphBuilder(graph)
        with builder.recording():
            known = {x: seqs["x"], h: seqs["h_prev"], body.outputs[0]: seqs["h"]}
            known.update(zip(invariants, self.invariants, strict=True))
            known = {k: _given(TracerTensor(v)) for k, v in known.items()}
            total = TracerTensor(seqs["g"]) + TracerTensor(self.carry)
            wanted = [h, x, *invariants]
            grads = backpropagate(
                body, memoized_values(body, known), {body.outputs[0]: total}, wanted
            )
            g_h = grads[h] if grads[h] is not None else _zeros_like(h)
            self.state_grad = builder.node(g_h)
            self.outputs: dict = {}
            for key, inp in [("x", x), *enumerate(invariants)]:
                if grads[inp] is not None:
                    self.outputs[key] = builder.node(grads[inp])
        graph.set_outputs([self.state_grad, *self.outputs.values()])
        remove_dead(graph)
        self.graph, self.sequences = graph, seqs
        self.frontier = _frontier(graph, self.state_grad, set(seqs.values()) | {self.carry})
        self._loop_body()

    def _loop_body(self) -> None:
        seqs = self.sequences
        loop_body = Graph("body_grad")
        new_seqs = {name: loop_body.add_input(name, n.type) for name, n in seqs.items()}
        carry = loop_body.add_input("carry", self.frontier.type)
        new_inv = [loop_body.add_input(i.name, i.type, rename=True) for i in self.invariants]
        builder = GraphBuilder(loop_body)
        with builder.recording():
            known = {seqs[name]: _given(TracerTensor(n)) for name, n in new_seqs.items()}
            known.update(
                (i, _given(TracerTensor(n))) for i, n in zip(self.invariants, new_inv, strict=True)
            )
            # what step t+1 sent back, from its frontier value
            sent = {**known, self.frontier: _given(TracerTensor(carry))}
            known[self.carry] = lambda: memoized_values(self.graph, sent)(self.state_grad)
            out = builder.node(memoized_values(self.graph, known)(self.frontier))
        loop_body.set_outputs([out])
        remove_dead(loop_body)

        def read(n):
            return n.users or n in loop_body.outputs

        self.fed_sequences = [name for name, n in new_seqs.items() if read(n)]
        self.fed_invariants = [k for k, n in enumerate(new_inv) if read(n)]
        loop_body.inputs = (
            [new_seqs[n] for n in self.fed_sequences]
            + [carry]
            + [new_inv[k] for k in self.fed_invariants]
        )
        self.loop_body = loop_body


def _frontier(graph: Graph, state_grad, varying_inputs: set) -> object:
    """The value nearest `state_grad` from which it follows by a chain of ops whose other
    operands are fixed over the steps (invariants, constants): walking back from `state_grad`
    while exactly one operand varies."""
    varying = set(varying_inputs)
    for node in graph.nodes:
        if any(i in varying for i in node.inputs):
            varying.add(node)
    node = state_grad
    while True:
        moving = [i for i in node.inputs if i in varying]
        if len(moving) != 1 or moving[0] in varying_inputs:
            return node
        node = moving[0]


def _given(value):
    return lambda: value


def _unsqueeze(v):
    return bind("reshape", v, shape=(1,) + tuple(v.shape))


def _step(v, t: int):
    return bind("getitem", v, index=(t,))


def _steps(v, start, stop):
    return bind("getitem", v, index=(Slice(start, stop, None),))


def_op("loop", impl=_loop_impl, shape=_loop_type, vjp=_loop_vjp)
