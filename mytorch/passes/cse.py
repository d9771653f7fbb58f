"""`cse`: common subexpressions. Two pure nodes with the same op, inputs and params (inputs in
any order for commutative ops), or two equal constants, become one. Random ops never merge."""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ops import get_op
from .base import PassResult, register_pass
from .rewrite import replace, subgraphs


@register_pass("cse")
def cse(graph: Graph) -> PassResult:
    changed = False
    for g, _ in subgraphs(graph):
        changed |= _merge(g)
    return PassResult(graph, changed)


def _merge(graph: Graph) -> bool:
    seen: dict = {}
    changed = False
    for node in list(graph.nodes):
        key = _key(node)
        if key is None:
            continue
        first = seen.setdefault(key, node)
        if first is not node:
            replace(graph, node, first)
            changed = True
    return changed


def _key(node: Node):
    if node.is_const:
        v = node.value
        return ("const", v.dtype.str, v.shape, v.tobytes())
    op = get_op(node.op)
    if not op.pure:
        return None
    inputs = tuple(id(i) for i in node.inputs)
    if op.commutative:
        inputs = tuple(sorted(inputs))
    return (node.op, inputs, tuple((k, _hashable(v)) for k, v in node.params.items()))


def _hashable(value):
    # Loop bodies compare by identity; everything else in params is hashable by value.
    try:
        hash(value)
        return value
    except TypeError:
        return id(value)
