"""Small helpers shared by the passes: constant tests, pruning dead values, node placement."""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ops import get_op
from ..ops.shape import Slice

ALL = Slice(None, None, None)


def is_pure(node: Node) -> bool:
    """Constants and pure ops; inputs and random ops are never removed or merged."""
    return node.is_const or (not node.is_input and get_op(node.op).pure)


def const_equals(node: Node, value: float) -> bool:
    """True if `node` is a constant whose every element equals `value`."""
    return node.is_const and node.value.size > 0 and bool(np.all(node.value == value))


def prune(graph: Graph, nodes) -> None:
    """Remove the given nodes, and then their inputs, as far as they became unused and pure."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.graph is graph and not node.users and node not in graph.outputs and is_pure(node):
            if node.is_input:
                continue
            graph.remove_node(node)
            stack.extend(node.inputs)


def replace(graph: Graph, old: Node, new: Node) -> None:
    """Use `new` wherever `old` was used, then drop what became dead."""
    graph.replace_all_uses(old, new)
    prune(graph, [old])


def step_index(node: Node) -> int | None:
    """t when `node` is `x[t]` (an int index on dim 0, the other dims whole), else None."""
    if node.op != "getitem":
        return None
    index = node.params["index"]
    if not index or not isinstance(index[0], int) or index[0] < 0:
        return None
    if any(i != ALL and i is not Ellipsis for i in index[1:]):
        return None
    return index[0]


def stacked_source(steps) -> Node | None:
    """x when `steps` are exactly x[0], x[1], ..., x[n-1] and x has n steps, else None."""
    steps = list(steps)
    source = steps[0].inputs[0] if steps and steps[0].op == "getitem" else None
    if source is None or not source.shape or source.shape[0] != len(steps):
        return None
    for t, node in enumerate(steps):
        if step_index(node) != t or node.inputs[0] is not source:
            return None
    return source
