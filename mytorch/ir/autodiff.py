"""Reverse mode over the IR: gradients of a graph's inputs from its outputs' cotangents,
by each op's own gradient rule (the one definition in `mytorch.ops`)."""

from __future__ import annotations

import weakref

import numpy as np

from ..ops import get_op
from ..tensor import Tensor
from .graph import Graph
from .interpreter import run


def input_gradients(graph: Graph, values: dict, cotangents) -> list:
    """Gradients of every graph input (None where none flows), given all forward values."""
    grads: dict = {}
    for out, ct in zip(graph.outputs, cotangents, strict=True):
        if ct is not None:
            _accumulate(grads, out, ct)
    for node in reversed(graph.nodes):
        g = grads.pop(node, None)
        if g is None or node.is_const:
            continue
        op = get_op(node.op)
        if not op.differentiable:
            continue
        args = [values[i] for i in node.inputs]
        for inp, gi in zip(node.inputs, op.vjp(g, values[node], *args, **node.params), strict=True):
            if gi is not None:
                _accumulate(grads, inp, gi)
    return [grads.get(i) for i in graph.inputs]


def _accumulate(grads: dict, node, g) -> None:
    grads[node] = g if node not in grads else grads[node] + g


def attach_gradients(graph: Graph, sources: list[Tensor], arrays: list, outputs: list[Tensor]):
    """Make compiled `outputs` part of the autograd tape, so `.backward()` reaches `sources`.

    The outputs share one tape node, whose backward re-runs the graph with the reference
    interpreter and applies the graph's reverse mode to all the outputs' gradients at once.
    """
    trainable = tuple(t for t in sources if t.trainable)
    joint = Tensor._from_op(np.zeros(()), trainable, "compiled")
    cotangents: list = [None] * len(outputs)

    def joint_backward():
        _, values = run(graph, arrays, keep_values=True)
        grads = input_gradients(graph, values, cotangents)
        for t, g in zip(sources, grads, strict=True):
            if g is not None and t.trainable:
                t.grad += g
        cotangents[:] = [None] * len(outputs)

    joint._backward = joint_backward
    for k, out in enumerate(outputs):
        if out.dtype.kind != "f":
            continue
        out._prev, out.trainable, out._op = (joint,), True, "compiled"
        out._backward = _store_cotangent(weakref.ref(out), cotangents, k)


def _store_cotangent(out_ref, cotangents: list, k: int):
    def _backward():
        cotangents[k] = out_ref().grad.copy()

    return _backward
