"""Finding recurrences: chains of cells where each step's hidden state feeds the next step."""

from __future__ import annotations

from collections.abc import Callable

from ..ir.graph import Graph, Node


def cell_chains(graph: Graph, op: str, shared_key: Callable[[Node], tuple]) -> list[list[Node]]:
    """Chains c_1..c_T of `op` nodes with c_t's hidden input (input 1) equal to c_{t-1}.

    Cells join a chain only if `shared_key` (the weights, say) agrees. Chains come in graph
    order; a cell whose state feeds two cells of the same kind ends its chain there.
    """
    cells = [n for n in graph.nodes if n.op == op]
    key = {c: shared_key(c) for c in cells}
    follows: dict[Node, Node] = {}
    for c in cells:
        prev = c.inputs[1]
        if prev in key and key[prev] == key[c]:
            successors = [u for u in prev.users if u in key and u.inputs[1] is prev]
            if len(successors) == 1:
                follows[prev] = c
    starts = [c for c in cells if c not in follows.values()]
    chains = []
    for c in starts:
        chain = [c]
        while chain[-1] in follows:
            chain.append(follows[chain[-1]])
        chains.append(chain)
    return chains
