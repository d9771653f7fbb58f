"""Shared helpers for the pass tests: run a pass on a graph written as text and check it; the
tutorial RNN and loops over RNN modules for the pipeline tests."""

from __future__ import annotations

import textwrap

import numpy as np

import mytorch
from mytorch import nn
from mytorch.ir import Graph, parse, verify
from mytorch.ir.interpreter import run
from mytorch.passes.base import PASSES, PassManager, PassResult
from tests.graphs import random_inputs
from tests.ir.programs import RNN

# float32 results may differ by reassociation: fused ops sum their terms in another order.
RTOL, ATOL = 1e-4, 1e-5


def dedent(text: str) -> str:
    """A graph literal as `str(graph)` prints it: no common indent, no surrounding blank lines."""
    return textwrap.dedent(text).strip("\n")


def run_graph(graph: Graph, arrays, seed: int = 0) -> list[np.ndarray]:
    """The interpreter's outputs; random ops draw from mytorch's RNG seeded with `seed`."""
    mytorch.manual_seed(seed)
    return run(graph, [a.copy() for a in arrays])


def assert_same_results(expected, got) -> None:
    """Same number of outputs, each with the same shape and dtype and close values."""
    assert len(expected) == len(got)
    for k, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert np.shape(e) == np.shape(g), f"output {k}: shape {np.shape(g)} != {np.shape(e)}"
        assert np.asarray(e).dtype == np.asarray(g).dtype, f"output {k}: dtype changed"
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=f"output {k}")


def apply_pass(name: str, graph: Graph) -> PassResult:
    """Run the registered pass `name` once; it must return an honest PassResult."""
    before = str(graph)
    result = PASSES[name](graph)
    assert isinstance(result, PassResult), f"{name} returned {type(result).__name__}"
    verify(result.graph)
    text_changed = str(result.graph) != before
    assert result.changed == text_changed, (
        f"{name}: changed={result.changed}, but the text {'did' if text_changed else 'did not'} "
        f"change:\n{before}\n->\n{result.graph}"
    )
    return result


def check_values(name: str, before: str, seed: int = 0) -> PassResult:
    """Run pass `name` on the graph `before` (text): it must verify, be honest about `changed`,
    keep the interpreter's results on random inputs, and change nothing on a second run."""
    before = dedent(before)
    graph = parse(before)
    assert str(graph) == before, "the test graph is not in canonical text form"
    arrays = random_inputs(graph, seed)
    expected = run_graph(parse(before), arrays)
    result = apply_pass(name, graph)
    assert_same_results(expected, run_graph(result.graph, arrays))
    text = str(result.graph)
    again = apply_pass(name, result.graph)
    assert not again.changed, f"{name} is not idempotent:\n{text}\n->\n{again.graph}"
    assert str(again.graph) == text
    return result


def check_pass(name: str, before: str, after: str | None = None, seed: int = 0) -> Graph:
    """`check_values`, and the printed result is `after` (None: the graph must not change)."""
    result = check_values(name, before, seed)
    assert str(result.graph) == dedent(before if after is None else after)
    assert result.changed == (after is not None)
    return result.graph


def remarks_of(name: str, text: str) -> list[tuple[str, bool, str]]:
    """(node, fired, reason) for every fusion decision pass `name` makes on the graph `text`."""
    manager = PassManager([(name, PASSES[name])], remarks=[])
    manager.run(parse(dedent(text)))
    return [(r.node, r.fired, r.reason) for r in manager.remarks]


# ---- programs: loops over the tutorial's RNN (tests/ir/programs.py) and over RNN modules ----


def tutorial_loop(rnn: RNN):
    """The tutorial's sequence loop over its RNN step."""

    def run_sequence(xs, h):
        for t in range(xs.shape[0]):
            out, h = rnn(xs[t], h)
        return out, h

    return run_sequence


def cell_loop(cell: nn.RNNCell):
    """A Python loop over nn.RNNCell."""

    def run_cells(xs, h):
        for t in range(xs.shape[0]):
            h = cell(xs[t], h)
        return h

    return run_cells
