"""`const_fold`: evaluate pure ops whose inputs are all constants, by the op's own reference
implementation, and replace them with the constant result. Parameters are never folded: they are
inputs, read live at every call."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph
from ..ir.interpreter import evaluate
from ..ops import get_op
from .base import PassResult, register_pass
from .rewrite import replace, subgraphs

# Folding must not turn a cheap broadcast of a scalar into a large stored array.
MAX_FOLDED_ELEMENTS = 1 << 16


@register_pass("const_fold")
def const_fold(graph: Graph) -> PassResult:
    changed = False
    for g, _ in subgraphs(graph):
        changed |= _fold(g)
    return PassResult(graph, changed)


def _fold(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.graph is not graph or node.is_const or not node.inputs:
            continue
        if not get_op(node.op).pure or not all(i.is_const for i in node.inputs):
            continue
        if np.prod(node.type.shape, dtype=np.int64) > MAX_FOLDED_ELEMENTS:
            continue
        value = evaluate(node, [i.value for i in node.inputs]).astype(node.type.dtype, copy=False)
        replace(graph, node, graph.add_const(np.array(value, order="C")))
        changed = True
    if changed:
        graph.sort()
    return changed
