"""Training through compiled code.

For one compiled signature and one set of inputs that need gradients, the backward graph is
derived from the optimized forward graph (`ir.autodiff`), optimized by the same pass pipeline and
built by the same backend. The forward is rebuilt to also return what the backward reads; its
outputs join the autograd tape through one node, whose backward calls the compiled backward with
the outputs' gradients and adds the results into the inputs' `.grad`, as eager ops do.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from operator import itemgetter

import numpy as np

from .ir.autodiff import clone, optimized_backward
from .ir.graph import Graph
from .tensor import Tensor, accumulate_grad, wrap


class CompiledBackward:
    """The training build of one signature: a forward that saves, and its compiled backward."""

    def __init__(self, forward: Graph, wrt: tuple[int, ...], optimize, build, dump=None):
        backward = optimized_backward(forward, wrt, optimize, dump)
        self.graph = backward.graph
        self.gradients = backward.gradients

        # Where each backward input comes from at run time: an output's gradient, a forward
        # input, or a forward output (the user's, or one added here to save an intermediate).
        saving, mapping = clone(forward, f"{forward.name}_saving")
        position = {n: k for k, n in enumerate(forward.inputs)}
        outputs = {n: k for k, n in reversed(list(enumerate(forward.outputs)))}
        self._feeds: list[tuple[str, int]] = []
        for kind, what in backward.sources:
            if kind == "cotangent":
                self._feeds.append(("cotangent", what))
            elif what in position:
                self._feeds.append(("input", position[what]))
            else:
                if what not in outputs:
                    outputs[what] = len(saving.outputs)
                    saving.outputs.append(mapping[what])
                self._feeds.append(("output", outputs[what]))
        self.forward_graph = saving
        # (position among the backward's inputs, output index) of every output's gradient
        self._cotangent_slots = [
            (slot, k) for slot, (kind, k) in enumerate(self._feeds) if kind == "cotangent"
        ]
        self.num_outputs = len(forward.outputs)
        if dump:
            dump.stage("forward_saving", saving)
        self.forward_runner = build(saving)
        self.backward_runner = build(self.graph)
        self._forward = _tuple_call(self.forward_runner, len(saving.inputs))
        self._backward = _tuple_call(self.backward_runner, len(self.graph.inputs))
        # The backward's inputs picked from the forward's inputs and outputs in one C call
        # (a cotangent's slot takes any one: it is overwritten before the backward runs).
        n = len(forward.inputs)
        picks = [{"input": k, "output": n + k}.get(kind, 0) for kind, k in self._feeds]
        self._pick = itemgetter(*picks) if len(picks) > 1 else lambda row: [row[k] for k in picks]
        self._single = len(forward.outputs) == 1 and forward.outputs[0].dtype.kind == "f"
        self._zeros = [np.zeros(o.shape, o.dtype) for o in forward.outputs]
        self._scalar = np.zeros(())  # the joint node's value (never written)

    def run(self, sources: list[Tensor], arrays: list, trainable: tuple | None = None):
        """Run the forward; its float outputs' `.backward()` reaches the trainable `sources`
        (`trainable`: those of them that are, if the caller knows)."""
        results = self._forward(arrays)
        feeds = list(self._pick([*arrays, *results]))
        if trainable is None:
            trainable = tuple([t for t in sources if t.trainable])
        if self._single:
            # One output (a loss, usually): it is the tape node that runs the backward.
            out = wrap(results[0], "compiled")
            out._prev, out.trainable = trainable, True
            out._backward = _backward_of_single(self, weakref.ref(out), sources, feeds)
            return [out]
        outputs = [wrap(o, "compiled") for o in results[: self.num_outputs]]
        self._attach(trainable, sources, feeds, outputs)
        return outputs

    def _attach(self, trainable: tuple, sources: list[Tensor], feeds: list, outputs: list) -> None:
        cotangents: list = [None] * len(outputs)
        joint = wrap(self._scalar, "compiled")  # the tape node all outputs lead to
        joint._prev, joint.trainable = trainable, True

        def joint_backward():
            zeros = self._zeros  # for the outputs the loss does not read
            self.backward(
                sources, feeds, [zeros[k] if c is None else c for k, c in enumerate(cotangents)]
            )
            cotangents[:] = [None] * len(outputs)

        joint._backward = joint_backward
        for k, out in enumerate(outputs):
            if out.dtype.kind != "f":
                continue
            out._prev, out.trainable, out._op = (joint,), True, "compiled"
            out._backward = _store_cotangent(weakref.ref(out), cotangents, k)

    def backward(self, sources: list[Tensor], feeds: list, cotangents: list) -> None:
        """Run the compiled backward given the outputs' gradients; add into the sources'."""
        for slot, k in self._cotangent_slots:
            feeds[slot] = cotangents[k]
        for k, g in zip(self.gradients, self._backward(feeds), strict=True):
            source = sources[k]
            if source.trainable:
                accumulate_grad(source, g)  # g is a fresh output array


def _tuple_call(runner, n_inputs: int) -> Callable[[list], tuple]:
    """`runner(arrays)` as a tuple of arrays; through the backend's fast call where it has one
    (one C call, no list made), its general path for any call the fast one does not take."""
    fast = runner.fast_call(n_inputs) if hasattr(runner, "fast_call") else None
    if fast is None:
        return runner

    def call(arrays):
        result = fast(*arrays)
        return result if type(result) is tuple else runner(arrays)

    return call


def _backward_of_single(training: CompiledBackward, out_ref, sources, feeds) -> Callable[[], None]:
    def _backward():
        out = out_ref()
        training.backward(sources, feeds, [np.asarray(out.grad, dtype=out.dtype)])

    return _backward


def _store_cotangent(out_ref, cotangents: list, k: int) -> Callable[[], None]:
    def _backward():
        out = out_ref()
        # a copy, as an array of the output's dtype (0-d gradients become numpy scalars)
        cotangents[k] = np.array(out.grad, dtype=out.dtype)

    return _backward
