"""`hoist_input_projection`: in a chain of T `rnn_cell`s sharing their weights, the input
projection `x_t @ W_ih.T + b` does not depend on the recurrence. It becomes one large product
over all steps before the loop, `P = X @ W_ih.T + b` with X the (T, B, I) stack of inputs, and
each cell becomes `rnn_step(P[t], h, W_hh)`: only `h @ W_hh.T` stays sequential.

The same holds for a `loop` over xs whose body is one `rnn_cell(x, h, W_ih, W_hh, b)` on the
step's input and state (what `roll` and `fuse_rnn_cell` make of a traced loop): P is
`xs @ W_ih.T + b`, and the loop runs `rnn_step(P[t], h, W_hh)`.
"""

from __future__ import annotations

import networkx as nx

from ..ir.graph import Graph, Node
from .base import PassResult, register_pass, remark
from .chains import cell_chains
from .rewrite import (
    hoist_out,
    is_forward_loop,
    prune,
    replace,
    rnn_step_body,
    stacked_source,
    transposed,
)

PATTERN = "hoist_input_projection: chain of rnn_cells"
LOOP_PATTERN = "hoist_input_projection: loop over an rnn_cell"


def _weights(cell: Node) -> tuple:
    _, _, w_ih, w_hh, bias = cell.inputs
    return (w_ih, w_hh, bias, cell.params["nonlinearity"])


@register_pass("hoist_input_projection")
def hoist_input_projection(graph: Graph) -> PassResult:
    changed = False
    for chain in cell_chains(graph, "rnn_cell", _weights):
        if _hoistable(graph, chain):
            _hoist(graph, chain)
            changed = True
    for loop in list(graph.nodes):
        if is_forward_loop(loop) and loop.graph is graph and _loop_cell(loop) is not None:
            changed |= _hoist_loop(graph, loop)
    if changed:
        graph.sort()
    return PassResult(graph, changed)


def _hoistable(graph: Graph, chain: list[Node]) -> bool:
    first = chain[0]
    if len(chain) < 2:
        return remark(PATTERN, first, False, "a single cell: no recurrence to hoist from")
    inside = nx.descendants(graph.to_networkx(), first) | {first}
    for t, cell in enumerate(chain):
        if cell.inputs[0] in inside:
            return remark(PATTERN, first, False, f"the input of step {t} depends on the recurrence")
    return remark(PATTERN, first, True, f"{len(chain)} steps")


def _hoist(graph: Graph, chain: list[Node]) -> None:
    w_ih, w_hh, bias, nonlinearity = _weights(chain[0])
    xs = [c.inputs[0] for c in chain]
    stacked = stacked_source(xs) or graph.add_node("stack", xs, {"dim": 0})
    w_t = transposed(graph, w_ih)
    projected = graph.add_node("add", [graph.add_node("matmul", [stacked, w_t]), bias])
    h = chain[0].inputs[1]
    for t, cell in enumerate(chain):
        xw = graph.add_node("getitem", [projected], {"index": (t,)})
        step = graph.add_node("rnn_step", [xw, h, w_hh], {"nonlinearity": nonlinearity})
        replace(graph, cell, step)
        h = step


def _loop_cell(loop: Node) -> Node | None:
    """The body's one output when it is an rnn_cell (the candidates of the loop pattern)."""
    body = loop.params["body"]
    out = body.outputs[0] if len(body.outputs) == 1 else None
    return out if out is not None and out.op == "rnn_cell" else None


def _hoist_loop(graph: Graph, loop: Node) -> bool:
    cell = _loop_cell(loop)
    x, h, *_ = cell.inputs
    body = loop.params["body"]
    if x is not body.inputs[0] or h is not body.inputs[1]:
        return remark(LOOP_PATTERN, loop, False, "the cell does not read the step's x and h")
    w_ih, w_hh, bias, nonlinearity = _weights(cell)
    outer = [hoist_out(graph, loop, v, before=loop) for v in (w_ih, w_hh, bias)]
    if any(v is None for v in outer):
        prune(graph, [v for v in outer if v is not None])
        return remark(LOOP_PATTERN, loop, False, "the weights depend on the step")
    w_ih, w_hh, bias = outer
    w_t = transposed(graph, w_ih)
    projected = graph.add_node("add", [graph.add_node("matmul", [loop.inputs[0], w_t]), bias])
    h0 = loop.inputs[1]
    body = rnn_step_body(projected, h0, w_hh, nonlinearity)
    replace(graph, loop, graph.add_node("loop", [projected, h0, w_hh], {"body": body}))
    return remark(LOOP_PATTERN, loop, True)
