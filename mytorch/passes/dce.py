"""`dce`: remove values no output depends on. Graph inputs and random ops always stay."""

from __future__ import annotations

import networkx as nx

from ..ir.graph import Graph
from .base import PassResult, register_pass
from .rewrite import is_pure


@register_pass("dce")
def dce(graph: Graph) -> PassResult:
    deps = graph.to_networkx()
    sink = object()  # one traversal from every root at once
    deps.add_edges_from((root, sink) for root in graph.outputs)
    deps.add_edges_from((n, sink) for n in graph.nodes if not is_pure(n))
    live = nx.ancestors(deps, sink) if sink in deps else set()
    dead = [n for n in graph.nodes if n not in live]
    for node in reversed(dead):  # users before their inputs
        graph.remove_node(node)
    return PassResult(graph, bool(dead))
