"""`dce`: remove values no output depends on. Graph inputs and random ops always stay."""

from __future__ import annotations

from ..ir.graph import Graph
from .base import PassResult, register_pass
from .rewrite import is_pure, subgraphs


@register_pass("dce")
def dce(graph: Graph) -> PassResult:
    changed = False
    for g, _ in subgraphs(graph):
        changed |= _dce(g)
    return PassResult(graph, changed)


def _dce(graph: Graph) -> bool:
    # Users come after their inputs, so one backward sweep sees every user of a node first.
    live = set(graph.outputs)
    dead = []
    for node in reversed(graph.nodes):
        if node in live or not is_pure(node):
            live.update(node.inputs)
        else:
            dead.append(node)
    graph.remove_nodes(dead)
    return bool(dead)
