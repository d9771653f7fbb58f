"""The numpy reference interpreter: runs a Graph with each op's reference implementation."""

from __future__ import annotations

import numpy as np

from ..ops import get_op
from .graph import Graph, Node


def run(graph: Graph, inputs, *, keep_values: bool = False):
    """Run `graph` on numpy arrays (graph-input order); return its output arrays.

    With `keep_values`, also return the dict of every value computed (for the backward pass).
    """
    if len(inputs) != len(graph.inputs):
        raise ValueError(
            f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(inputs)}"
        )
    env: dict[Node, np.ndarray] = dict(zip(graph.inputs, inputs, strict=True))
    for node in graph.nodes:
        env[node] = evaluate(node, [env[i] for i in node.inputs])
    outputs = [env[o] for o in graph.outputs]
    return (outputs, env) if keep_values else outputs


def evaluate(node: Node, args) -> np.ndarray:
    """The value of one node given its input values."""
    if node.is_const:
        return node.value
    return np.asarray(get_op(node.op).impl(*args, **node.params))
