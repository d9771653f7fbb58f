"""`hoist_input_projection`: in a chain of T `rnn_cell`s sharing their weights, the input
projection `x_t @ W_ih.T + b` does not depend on the recurrence. It becomes one large product
over all steps before the loop, `P = X @ W_ih.T + b` with X the (T, B, I) stack of inputs, and
each cell becomes `rnn_step(P[t], h, W_hh)`: only `h @ W_hh.T` stays sequential.
"""

from __future__ import annotations

import networkx as nx

from ..ir.graph import Graph, Node
from ..ops.shape import Slice
from .base import PassResult, register_pass, remark
from .chains import cell_chains
from .rewrite import replace, stacked_source

PATTERN = "hoist_input_projection: chain of rnn_cells"
ALL = Slice(None, None, None)


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
    w_t = graph.add_node("transpose", [w_ih], {"d0": 0, "d1": 1})
    projected = graph.add_node("add", [graph.add_node("matmul", [stacked, w_t]), bias])
    h = chain[0].inputs[1]
    for t, cell in enumerate(chain):
        xw = graph.add_node("getitem", [projected], {"index": (t,)})
        step = graph.add_node("rnn_step", [xw, h, w_hh], {"nonlinearity": nonlinearity})
        replace(graph, cell, step)
        h = step
