"""Training through compiled code.

For one compiled signature and one set of inputs that need gradients, the backward graph is
derived from the optimized forward graph (`ir.autodiff`), optimized by the same pass pipeline and
built by the same backend. The forward is rebuilt to also return what the backward reads; its
outputs join the autograd tape through one node, whose backward calls the compiled backward with
the outputs' gradients and adds the results into the inputs' `.grad`, as eager ops do.

On `set_num_threads(n > 1)`, a large enough pair whose rows never mix except in sums over the
batch (`ir.batch_axis`: the loss, the weight gradients) runs data-parallel: forward and backward
are built per slice of the batch, each slice runs on its own thread (or all, one after the
other, on the calling thread, while that has been faster: `parallel._Choice`), what a slice's
forward saves stays with that slice for its backward, and the slices' outputs are joined by
rows or, for partial sums, summed in slice order (as DDP's all-reduce does).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from operator import itemgetter

import numpy as np

from . import parallel
from .errors import CompileError
from .ir.autodiff import clone, optimized_backward
from .ir.batch_axis import batch_axes
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
                continue
            if kind == "joined":  # made by the forward, its pieces computed in place
                what = what.make(saving, mapping)
                mapping[what] = what  # (a node of `saving` already)
            if what in position:
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
        # The backward's inputs picked from the forward's inputs and outputs in one C call
        # (a cotangent's slot takes any one: it is overwritten before the backward runs).
        n = len(forward.inputs)
        picks = [{"input": k, "output": n + k}.get(kind, 0) for kind, k in self._feeds]
        self._pick = itemgetter(*picks) if len(picks) > 1 else lambda row: [row[k] for k in picks]
        self._single = len(forward.outputs) == 1 and forward.outputs[0].dtype.kind == "f"
        self._zeros = [np.zeros(o.shape, o.dtype) for o in forward.outputs]
        self._scalar = np.zeros(())  # the joint node's value (never written)

        self._build = build
        self._whole: _Whole | None = None
        self._splits: dict[int, _Split | None] = {}  # thread count -> its split (None: cannot)
        self.artifacts = None  # the first build's (what `llvm_ir` and `asm` show)
        n_threads = parallel.get_num_threads()
        if n_threads == 1 or self._split(n_threads) is None:
            self._whole_build()

    def _whole_build(self) -> _Whole:
        if self._whole is None:
            self._whole = _Whole(self, self._build)
            self.artifacts = self.artifacts or self._whole.artifacts
        return self._whole

    def _split(self, n: int) -> _Split | None:
        """The pair split over the batch on `n` threads, built on first use (None: it does not
        split, is too small, or a slice cannot be built)."""
        if n not in self._splits:
            self._splits[n] = None
            flops = parallel.flops(self.forward_graph) + parallel.flops(self.graph)
            if flops >= parallel.MIN_FLOPS:
                try:
                    self._splits[n] = _Split.of(self, n, self._build)
                except CompileError:
                    pass  # the whole batch, on the calling thread
                if self._splits[n] is not None:
                    self.artifacts = self.artifacts or self._splits[n].artifacts
        return self._splits[n]

    def run(self, sources: list[Tensor], arrays: list, trainable: tuple | None = None):
        """Run the forward; its float outputs' `.backward()` reaches the trainable `sources`
        (`trainable`: those of them that are, if the caller knows)."""
        n = parallel._threads
        split = self._split(n) if n > 1 else None
        if split is None:
            way = self._whole or self._whole_build()
            results, saved = way.forward(arrays)
        else:
            way, results, saved = self._forward_split(split, arrays)
        if trainable is None:
            trainable = tuple([t for t in sources if t.trainable])
        if self._single:
            # One output (a loss, usually): it is the tape node that runs the backward.
            out = wrap(results[0], "compiled")
            out._prev, out.trainable = trainable, True
            out._backward = _backward_of_single(self, weakref.ref(out), sources, way, saved)
            return [out]
        outputs = [wrap(o, "compiled") for o in results[: self.num_outputs]]
        self._attach(trainable, sources, way, saved, outputs)
        return outputs

    def _forward_split(self, split: _Split, arrays: list) -> tuple:
        """The forward on the slices' threads, or the slices one after the other on the calling
        thread while that has been faster lately (`parallel._Choice`). One thread runs the
        slices, not a whole-batch build: that ran no faster on one core, and building it when the
        choice first turned cost a long run a second or more of compiling."""
        choice = split.choice
        threads = choice.pick() if parallel.ADAPT else True
        start = time.perf_counter()
        results, saved = split.forward(arrays, threads)
        choice.record(threads, time.perf_counter() - start)
        return split, results, saved

    def _attach(self, trainable: tuple, sources, way, saved, outputs: list) -> None:
        cotangents: list = [None] * len(outputs)
        joint = wrap(self._scalar, "compiled")  # the tape node all outputs lead to
        joint._prev, joint.trainable = trainable, True

        def joint_backward():
            zeros = self._zeros  # for the outputs the loss does not read
            self.backward(
                sources,
                way,
                saved,
                [zeros[k] if c is None else c for k, c in enumerate(cotangents)],
            )
            cotangents[:] = [None] * len(outputs)

        joint._backward = joint_backward
        for k, out in enumerate(outputs):
            if out.dtype.kind != "f":
                continue
            out._prev, out.trainable, out._op = (joint,), True, "compiled"
            out._backward = _store_cotangent(weakref.ref(out), cotangents, k)

    def backward(self, sources: list[Tensor], way, saved, cotangents: list) -> None:
        """Run the compiled backward (of the forward `way` ran, which `saved` what it reads)
        given the outputs' gradients; add into the sources'."""
        for k, g in zip(self.gradients, way.backward(saved, cotangents), strict=True):
            source = sources[k]
            if source.trainable:
                accumulate_grad(source, g)  # g is a fresh output array


class _Whole:
    """The pair over the whole batch, on the calling thread."""

    def __init__(self, owner: CompiledBackward, build):
        self.owner = owner
        self.forward_runner = build(owner.forward_graph)
        self.backward_runner = build(owner.graph)
        self.artifacts = getattr(self.forward_runner, "artifacts", None)
        self._forward = _tuple_call(self.forward_runner, len(owner.forward_graph.inputs))
        self._backward = _tuple_call(self.backward_runner, len(owner.graph.inputs))

    def forward(self, arrays: list) -> tuple:
        """The forward's outputs, and what the backward reads."""
        results = self._forward(arrays)
        return results, list(self.owner._pick([*arrays, *results]))

    def backward(self, feeds: list, cotangents: list):
        for slot, k in self.owner._cotangent_slots:
            feeds[slot] = cotangents[k]
        return self._backward(feeds)


class _Split:
    """The pair built per slice of the batch (`parallel.build_slices`); a slice's forward saves
    for that slice's backward."""

    @classmethod
    def of(cls, owner: CompiledBackward, n: int, build) -> _Split | None:
        forward, backward = owner.forward_graph, owner.graph
        found = batch_axes(forward)
        if found is None or any(not found.plain(o) for o in forward.outputs):
            return None  # (the backward's analysis takes what a slice saved as plain rows)
        user = forward.outputs[: owner.num_outputs]
        kinds = parallel.output_kinds(found, user)
        if kinds is None:
            return None
        # The backward's inputs: a cotangent is an output's rows (whole, for a partial sum: the
        # slices' sum has that gradient in each slice); what a slice saved is its own.
        given, partial = {}, set()
        for node, (kind, k) in zip(backward.inputs, owner._feeds, strict=True):
            source = forward.inputs[k] if kind == "input" else forward.outputs[k]
            given[node] = found.axes[source]
            if kind == "output" and source in found.partial:
                partial.add(node)
        back = batch_axes(backward, given, partial, found.size)
        if back is None:
            return None
        grad_kinds = parallel.output_kinds(back, backward.outputs)
        if grad_kinds is None:
            return None
        return cls(owner, found, kinds, back, grad_kinds, n, build)

    def __init__(self, owner, found, kinds, back, grad_kinds, n, build):
        self.owner = owner
        forward, backward = owner.forward_graph, owner.graph
        self.in_axes = [found.axes[i] for i in forward.inputs]
        self.kinds, self.grad_kinds = kinds, grad_kinds
        self.types = [o.type for o in forward.outputs[: owner.num_outputs]]
        self.grad_types = [o.type for o in backward.outputs]
        cut = [None if k == "partial" else k for k in kinds]  # each cotangent's rows
        self.cotangent_axes = [(slot, k, cut[k]) for slot, k in owner._cotangent_slots]
        forwards = parallel.build_slices(forward, found, n, build)
        backwards = parallel.build_slices(backward, back, n, build)
        self.rows = [rows for rows, _ in forwards]
        self.artifacts = getattr(forwards[0][1], "artifacts", None)
        self._forwards = [_tuple_call(r, len(forward.inputs)) for _, r in forwards]
        self._backwards = [_tuple_call(r, len(backward.inputs)) for _, r in backwards]
        self.choice = parallel._Choice()  # the forward's: threads, or one thread
        self._backward_choice = parallel._Choice()  # after a forward on the slices

    def forward(self, arrays: list, threads: bool) -> tuple:
        """The forward's outputs for the whole batch, and what each slice's backward reads."""
        rows, in_axes, calls = self.rows, self.in_axes, self._forwards

        def one(k):
            ins = [parallel.rows_of(a, ax, rows[k]) for a, ax in zip(arrays, in_axes, strict=True)]
            return ins, calls[k](ins)

        parts = parallel.run_slices(one, len(rows), threads)
        pick = self.owner._pick
        saved = [list(pick([*ins, *outs])) for ins, outs in parts]
        outputs = parallel.combine([outs for _, outs in parts], self.kinds, self.types)
        return outputs, saved

    def backward(self, saved: list, cotangents: list):
        rows, slots, calls = self.rows, self.cotangent_axes, self._backwards

        def one(k):
            feeds = saved[k]
            for slot, j, axis in slots:
                feeds[slot] = parallel.rows_of(cotangents[j], axis, rows[k])
            return calls[k](feeds)

        choice = self._backward_choice
        threads = choice.pick() if parallel.ADAPT else True
        start = time.perf_counter()
        parts = parallel.run_slices(one, len(rows), threads)
        choice.record(threads, time.perf_counter() - start)
        return parallel.combine(parts, self.grad_kinds, self.grad_types, owned=True)


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


def _backward_of_single(training: CompiledBackward, out_ref, sources, way, saved):
    def _backward():
        out = out_ref()
        training.backward(sources, way, saved, [np.asarray(out.grad, dtype=out.dtype)])

    return _backward


def _store_cotangent(out_ref, cotangents: list, k: int) -> Callable[[], None]:
    def _backward():
        out = out_ref()
        # a copy, as an array of the output's dtype (0-d gradients become numpy scalars)
        cotangents[k] = np.array(out.grad, dtype=out.dtype)

    return _backward
