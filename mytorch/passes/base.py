"""Pass infrastructure: the pass protocol, the registry, named pipelines and the PassManager.

A pass is any callable taking a Graph and returning a Graph or a `PassResult(graph, changed)`;
an object with a `name` attribute and `__call__` is one too. Passes may rewrite the graph in
place. The PassManager verifies the graph after every pass that changed it, times each pass,
and reports each stage to instruments (the dump writer, `explain`). A pass that returns a
PassResult must say honestly whether it changed the graph (tests check it).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..ir.graph import Graph, collector_paused
from ..ir.verify import verify


class PassResult(NamedTuple):
    """What a pass returns: the graph and whether the pass changed it (honestly)."""

    graph: Graph
    changed: bool


PASSES: dict[str, Callable] = {}


@dataclass
class Remark:
    """What a pattern did at one candidate node: fired, or the first condition that failed."""

    pass_name: str
    pattern: str
    node: str
    fired: bool
    reason: str = ""


_remarks: list[Remark] | None = None  # collected while a PassManager runs with remarks on
_current_pass = ""


def remark(pattern: str, node, fired: bool, reason: str = "") -> bool:
    """Record a fusion decision for `explain`; returns `fired`, so a check can return it."""
    if _remarks is not None:
        _remarks.append(Remark(_current_pass, pattern, f"%{node.name}", fired, reason))
    return fired


# The order DESIGN.md gives; each name is registered by its module in mytorch/passes/.
PIPELINES: dict[str, list[str]] = {
    "default": [
        "roll",
        "batch_steps",
        "simplify",
        "const_fold",
        "cse",
        "split_concat",
        "fuse_rnn_cell",
        "hoist_input_projection",
        "one_hot_lookup",
        "reroll",
        "batch_steps",
        "unroll",
        "peel",
        "dce",
    ],
    "none": [],
}


def register_pass(name: str):
    """Decorator registering a pass (function or class instance) under `name`."""

    def decorate(obj):
        add_pass(name, obj)
        return obj

    return decorate


def add_pass(name: str, obj) -> None:
    """Register pass `obj` under `name`; a duplicate name is an error."""
    if name in PASSES:
        raise ValueError(f"a pass named {name!r} is already registered")
    if not callable(obj):
        raise TypeError(f"pass {name!r} must be callable, got {type(obj).__name__}")
    PASSES[name] = obj


def resolve_pipeline(passes) -> list[tuple[str, Callable]]:
    """A pipeline name, or a list of pass names and pass objects, as (name, pass) pairs."""
    from ..plugins import load_entry_points

    load_entry_points()
    if isinstance(passes, str):
        if passes not in PIPELINES:
            raise ValueError(
                f"unknown pipeline {passes!r}; pipelines: {', '.join(sorted(PIPELINES))}"
            )
        passes = PIPELINES[passes]
    out = []
    for p in passes:
        if isinstance(p, str):
            if p not in PASSES:
                raise ValueError(f"unknown pass {p!r}; registered: {', '.join(sorted(PASSES))}")
            out.append((p, PASSES[p]))
        elif callable(p):
            out.append((getattr(p, "name", getattr(p, "__name__", type(p).__name__)), p))
        else:
            raise TypeError(f"passes= takes names or callables, got {p!r}")
    return out


@dataclass
class PassRecord:
    """One pass's run: its name, node counts before and after, whether it changed, its time."""

    name: str
    nodes_before: int
    nodes_after: int
    changed: bool
    seconds: float


@dataclass
class PassManager:
    """Runs (name, pass) pairs in order, verifying after each and telling the instruments."""

    passes: Sequence[tuple[str, Callable]]
    instruments: list = field(default_factory=list)  # objects with after_pass(name, graph)
    records: list[PassRecord] = field(default_factory=list)
    remarks: list[Remark] | None = None  # a list to collect fusion remarks into, or None

    def run(self, graph: Graph, *, verified: bool = True) -> Graph:
        """Run the passes on `graph`. `verified=False` takes a graph not verified yet (a fresh
        trace): the first pass's result is verified whether or not it changed the graph, so a
        traced loop is verified once `roll` has made it one step long, not T steps long."""
        global _remarks, _current_pass
        saved = _remarks, _current_pass
        _remarks = self.remarks
        try:
            with collector_paused():  # (see collector_paused: rewriting a long graph)
                graph = self._run(graph, verified)
                if not self.passes and not verified:
                    verify(graph)
                return graph
        finally:
            _remarks, _current_pass = saved

    def _run(self, graph: Graph, verified: bool) -> Graph:
        global _current_pass
        done: list[str] = []
        for name, pass_ in self.passes:
            _current_pass = name
            before = len(graph)
            # A pass that returns a PassResult says itself whether it changed the graph; for
            # others, compare (taking this copy of a long traced graph is not free).
            snapshot = None if _reports_changes(pass_) else _snapshot(graph)
            start = time.perf_counter()
            try:
                result = pass_(graph)
                seconds = time.perf_counter() - start
                graph, changed = _unpack(result, graph, snapshot)
                if changed or not verified:  # (an unchanged graph is as valid as it was)
                    verify(graph)
                    verified = True
            except Exception as e:
                raise RuntimeError(f"pass {name!r} failed after passes {done}: {e}") from e
            self.records.append(PassRecord(name, before, len(graph), changed, seconds))
            done.append(name)
            for inst in self.instruments:
                inst.after_pass(name, graph)
        return graph


def _reports_changes(pass_) -> bool:
    """True for passes declared to return a PassResult (`-> PassResult`)."""
    try:
        return _REPORTS_CHANGES[pass_]
    except (KeyError, TypeError):  # not seen yet, or unhashable
        pass
    try:
        annotation = inspect.signature(pass_).return_annotation
    except (TypeError, ValueError):
        annotation = None
    reports = annotation in (PassResult, "PassResult")
    try:
        _REPORTS_CHANGES[pass_] = reports
    except TypeError:
        pass
    return reports


_REPORTS_CHANGES: dict = {}  # pass -> whether it is declared to return a PassResult


def _snapshot(graph: Graph) -> list:
    """What a pass may change in place: the nodes, their wiring, params and types, the outputs.
    (Params are read-only mappings: changing them means assigning a new one.)"""
    nodes = [(n, n.inputs, n.params, n.type) for n in graph.nodes]
    return nodes + [tuple(graph.outputs)]


def _unpack(result, graph: Graph, snapshot) -> tuple[Graph, bool]:
    if isinstance(result, PassResult):
        return result.graph, bool(result.changed)
    if snapshot is None:
        raise TypeError("a pass declared to return a PassResult returned something else")
    if isinstance(result, Graph):
        # A plain Graph says nothing about change: compare its nodes and their wiring.
        return result, result is not graph or snapshot != _snapshot(result)
    if result is None:
        raise TypeError("a pass must return a Graph or a PassResult, got None")
    raise TypeError(f"a pass must return a Graph or a PassResult, got {type(result).__name__}")
