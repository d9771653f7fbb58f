"""Threads: `set_num_threads(n)`, and compiled calls split over the batch on n threads.

A large enough compiled graph whose rows never mix except in sums over the batch
(`ir.batch_axis`) is built once per slice of its batch (slices of one size share the build: a
twin runner with its own workspace). A split call runs slice 0 on the calling thread and the
others on persistent worker threads: each copies its rows of the arguments (a view when they
are the leading dim) and calls its slice's native code through the binder (which releases the
GIL); outputs are joined by rows, partial sums added in slice order (`combine`). Whether a call
takes the threads or one thread follows which has been faster lately (`_Choice`): on a machine
busy with other work, a worker may wait milliseconds for a core.

`BatchSplit` wraps a no-grad forward's bound call (one thread: the whole graph's). Training calls
split in `compiled_backward` (forward and backward per slice). Small graphs, batches of one and
calls the binder does not take run as before, on the calling thread.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time

import numpy as np

from .codegen.binder import BAD_INPUT
from .errors import CompileError
from .ir.batch_axis import BatchAxes, batch_axes, batch_slice
from .ir.graph import Graph
from .ir.verify import verify

# A split costs ~30 us (waking a worker, joining outputs); below this work it does not pay.
MIN_FLOPS = 8_000_000
ADAPT = True  # run each call the way (threads or not) that has been faster lately
# A no-grad graph splits from this call on: one called once or twice (a pass over held-out data,
# a batch size per length) would spend more building its slices than they save.
SPLIT_FROM_CALL = 3

_threads = 1
_workers: list[_Worker] = []


def set_num_threads(n: int) -> None:
    """Run large compiled calls (forward, training forward and backward) split over their batch
    on `n` threads (1: the calling thread only)."""
    global _threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    _threads = n


def get_num_threads() -> int:
    """The number of threads large compiled calls use."""
    return _threads


class _Worker:
    """A daemon thread running one task at a time: `submit(fn, args)`, then `result()`."""

    def __init__(self):
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="mytorch-worker", daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            fn, args, box, done = self._tasks.get()
            try:
                box.append(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.append(e)
            done.release()

    def submit(self, fn, args) -> tuple[list, threading.Lock]:
        box, done = [], threading.Lock()
        done.acquire()
        self._tasks.put((fn, args, box, done))
        return box, done


def _workers_for(n: int) -> list[_Worker]:
    while len(_workers) < n:
        _workers.append(_Worker())
    return _workers[:n]


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads
    os.register_at_fork(after_in_child=_workers.clear)


def flops(graph: Graph, times: int = 1) -> int:
    """Multiply-adds x 2 of the graph's products, a loop's body counted once per step."""
    total = 0
    for node in graph.nodes:
        if node.op == "matmul":
            total += 2 * math.prod(node.shape) * node.inputs[0].shape[-1]
        elif node.op in ("rnn_step", "rnn_cell"):
            w = node.inputs[2:4] if node.op == "rnn_cell" else node.inputs[2:3]
            total += 2 * node.shape[0] * sum(math.prod(x.shape) for x in w)
        elif node.op == "loop":
            total += flops(node.params["body"], node.shape[0])
    return total * times


def slice_rows(size: int, n: int) -> list[slice]:
    """The rows of each of min(n, size) slices of a batch of `size`: sizes differ by one at most."""
    n = min(n, size)
    edges = [round(k * size / n) for k in range(n + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def build_slices(graph: Graph, found: BatchAxes, n: int, build) -> list:
    """(rows, runner) of each slice of `graph`'s batch on `n` threads. Slices computing alike
    (one size, the same rows of any constant) share one build: a twin runner (its own
    workspace) where the backend makes them."""
    built: dict = {}
    slices = []
    for rows in slice_rows(found.size, n):
        key = found.slice_key(rows.start, rows.stop)
        first = built.get(key)
        if first is None:
            runner = built[key] = build(verify(batch_slice(graph, found, rows.start, rows.stop)))
        elif hasattr(first, "twin"):
            runner = first.twin()
        else:
            runner = build(verify(batch_slice(graph, found, rows.start, rows.stop)))
        slices.append((rows, runner))
    return slices


def run_slices(fn, count: int, threads: bool) -> list:
    """[fn(0), ..., fn(count - 1)]: fn(0) on the calling thread and the others on workers (with
    `threads`), or all on the calling thread one after the other."""
    if not threads:
        return [fn(k) for k in range(count)]
    workers = _workers_for(count - 1)
    pending = [w.submit(fn, (k,)) for k, w in zip(range(1, count), workers, strict=True)]
    try:
        first = fn(0)
    finally:
        rest = [_outcome(p) for p in pending]  # every worker done before anything is raised
    for r in rest:
        if isinstance(r, BaseException):
            raise r
    return [first, *rest]


def _outcome(pending: tuple[list, threading.Lock]):
    box, done = pending
    done.acquire()
    return box[0]


def rows_of(array: np.ndarray, axis: int | None, rows: slice) -> np.ndarray:
    """`array`'s batch rows (a contiguous copy unless they are its leading dim), or all of it."""
    if axis is None:
        return array
    return np.ascontiguousarray(array[(slice(None),) * axis + (rows,)])


def combine(parts: list, kinds: list, types: list, *, owned: bool = False) -> list:
    """Each output of the whole batch from the slices' (`parts[k][j]`): its rows joined along
    its axis (kind: an int), summed in slice order ("partial"), or slice 0's (None).

    `owned`: the parts are fresh arrays nothing else holds (a compiled backward's gradients), so
    a sum is made in slice 0's array. A fresh result array costs more than the adds (its pages
    are new to the process: ~0.13 ms a step for the names example's weight gradients)."""
    outs = []
    for j, (kind, t) in enumerate(zip(kinds, types, strict=True)):
        pieces = [p[j] for p in parts]
        if kind is None or len(pieces) == 1:
            out = pieces[0]
        elif kind == "partial":
            into = pieces[0] if owned else np.empty(t.shape, t.dtype)
            out = np.add(pieces[0], pieces[1], out=into)
            for piece in pieces[2:]:
                np.add(out, piece, out=out)
        else:
            out = np.concatenate(pieces, axis=kind)
        outs.append(out)
    return outs


def output_kinds(found: BatchAxes, nodes) -> list | None:
    """How the slices' values of `nodes` make the whole batch's (see `combine`); None when one
    is not a plain axis."""
    kinds = []
    for node in nodes:
        if node in found.partial:
            kinds.append("partial")
        elif not found.plain(node):
            return None
        else:
            kinds.append(found.axes[node])
    return kinds


class BatchSplit:
    """A compiled forward's call on the current number of threads (`wrap`)."""

    def __init__(self, graph: Graph, build):
        self.graph, self._build = graph, build  # build: graph -> runner
        self.found: BatchAxes | None = None  # the analysis, at the first call on threads
        self.in_types = [i.type for i in graph.inputs]
        self.out_types = [o.type for o in graph.outputs]
        self.in_axes: list = []  # each input's batch axis, and how outputs join, with the analysis
        self.out_kinds: list = []
        self._plans: dict[int, list | None] = {}  # thread count -> its slices (None: cannot)
        self._choices: dict[int, _Choice] = {}  # thread count -> threads or not, lately
        self._calls = 0  # on more than one thread, before the slices are built

    @classmethod
    def of(cls, graph: Graph, build) -> BatchSplit | None:
        """The split of `graph`, when it is large enough for one to pay."""
        return cls(graph, build) if flops(graph) >= MIN_FLOPS else None

    def plan(self, n: int) -> list | None:
        """The slices for `n` threads, built on first use: (index of its rows, bound call);
        None when the graph does not split or a slice cannot be built."""
        if n not in self._plans:
            self._plans[n] = None
            if self.found is None:
                self.found = batch_axes(self.graph) or False
            if self.found:
                try:
                    self._plans[n] = self._slices(n)
                except CompileError:
                    pass  # the whole graph, on the calling thread
        return self._plans[n]

    def _slices(self, n: int) -> list | None:
        found = self.found
        self.in_axes = [found.axes[i] for i in self.graph.inputs]
        self.out_kinds = output_kinds(found, self.graph.outputs)
        if self.out_kinds is None:
            return None
        slices = []
        for rows, runner in build_slices(self.graph, found, n, self._build):
            bound = runner.fast_call(len(self.in_types))  # arrays in, arrays out
            if bound is None:
                return None
            slices.append((rows, bound))
        return slices

    def _run(self, rows: slice, bound, arrays: list, outs: list):
        """One slice: copy its rows of the arguments in, call it, copy its outputs' rows out
        (numpy's copies release the GIL too): its outputs, or an int code if the binder did
        not take it."""
        ins = [rows_of(a, axis, rows) for a, axis in zip(arrays, self.in_axes, strict=True)]
        result = bound(*ins)
        if type(result) is int:
            return result
        for k, (r, kind) in enumerate(zip(result, self.out_kinds, strict=True)):
            if type(kind) is int:
                outs[k][(slice(None),) * kind + (rows,)] = r
        return result

    def wrap(self, native, n_args: int, params: list, finish):
        """A call taking what `native` (the whole graph's bound call: `n_args` Tensors) takes:
        on one thread `native` itself; on more, the slices on as many threads (or `native`,
        while that has been faster lately: `_Choice`), the outputs made into what `native`
        returns by `finish(arrays)`."""
        plans, choices, split = self._plans, self._choices, self._split

        def call(*args):
            n = _threads
            if n == 1 or len(args) != n_args:
                return native(*args)
            slices = plans.get(n, False)
            if slices is False:
                self._calls += 1
                if self._calls < SPLIT_FROM_CALL:
                    return native(*args)
                slices = self.plan(n)
                choices[n] = _Choice()
            if slices is None:
                return native(*args)
            choice = choices[n]
            threads = choice.pick() if ADAPT else True
            start = time.perf_counter()
            result = split(slices, args, params, finish) if threads else native(*args)
            if type(result) is not int:
                choice.record(threads, time.perf_counter() - start)
            return result

        return call

    def _split(self, slices: list, args, params: list, finish):
        """One call on len(slices) threads, or an int code for the general path."""
        arrays = [getattr(a, "data", None) for a in args] + [p.data for p in params]
        for a, t in zip(arrays, self.in_types, strict=True):
            if type(a) is not np.ndarray or a.shape != t.shape or a.dtype != t.dtype:
                return BAD_INPUT  # the general path takes (or turns down) whatever this is
        outs = [
            np.empty(t.shape, t.dtype) if type(kind) is int else None
            for t, kind in zip(self.out_types, self.out_kinds, strict=True)
        ]
        run = self._run

        def one(k):
            return run(*slices[k], arrays, outs)

        parts = run_slices(one, len(slices), True)
        for part in parts:
            if type(part) is int:
                return part
        kinds = [None if type(kind) is int else kind for kind in self.out_kinds]
        joined = combine(parts, kinds, self.out_types)
        return finish([o if o is not None else j for o, j in zip(outs, joined, strict=True)])


class _Choice:
    """Whether the threads or one thread ran a call faster lately, on this machine under its
    current load: the median of each way's last few times. The way not chosen is tried again
    every `period` calls, less often while the choice holds, and taken only when it was faster
    by more than `MARGIN`: noise would flip a close choice back and forth, and each call the
    slower way costs more than a close call gains (a training step's slices one after the
    other on one thread take ~1.2x the whole batch's time)."""

    KEEP, FIRST, LONGEST = 5, 4, 64
    MARGIN = 0.1

    def __init__(self):
        self.times: tuple[list, list] = ([], [])  # seconds: one thread, threads
        self.threads = True
        self.period = self.countdown = self.FIRST

    def _ready(self) -> bool:
        return all(len(t) == self.KEEP for t in self.times)

    def pick(self) -> bool:
        """Whether this call runs on the threads."""
        if not self._ready():  # each way in turn
            return len(self.times[True]) <= len(self.times[False])
        self.countdown -= 1
        return self.threads if self.countdown > 0 else not self.threads

    def record(self, threads: bool, seconds: float) -> None:
        kept = self.times[threads]
        kept.append(seconds)
        del kept[: -self.KEEP]
        if not self._ready():
            return
        one, many = (sorted(t)[self.KEEP // 2] for t in self.times)
        best = many < one * (1 + self.MARGIN) if self.threads else many * (1 + self.MARGIN) < one
        if threads != self.threads:  # the other way, tried
            self.period = self.FIRST if best != self.threads else min(2 * self.period, self.LONGEST)
            self.countdown = self.period
        self.threads = best
