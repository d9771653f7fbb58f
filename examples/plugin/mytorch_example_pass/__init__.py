"""An example mytorch plugin: the graph pass `fold_double_neg`, registered by entry point."""

from __future__ import annotations

from mytorch.ir import Graph
from mytorch.passes import PassResult

__all__ = ["fold_double_neg"]


def fold_double_neg(graph: Graph) -> PassResult:
    """Rewrite `neg(neg(x))` to `x`; the negations that become unused are removed."""
    changed = False
    for node in list(graph.nodes):
        if node.graph is not graph or node.op != "neg" or node.inputs[0].op != "neg":
            continue
        inner = node.inputs[0]
        graph.replace_all_uses(node, inner.inputs[0])
        graph.remove_node(node)
        # NOTE: the inner neg may still have other users; only drop it when it became dead.
        if not inner.users and inner not in graph.outputs:
            graph.remove_node(inner)
        changed = True
    return PassResult(graph, changed)
