"""Hypothesis-generated graphs: every pass, and the default pipeline, keeps the graph valid and
its values unchanged, and is idempotent.

Two sources of graphs: `tests.graphs.random_graphs` (broad random op mixes, random ops
included), and small random recurrences traced from Python (the shapes the RNN passes look for,
with random sizes, forms, biases, activations, and values that escape).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

import mytorch
from mytorch.ir import Graph, parse, verify
from mytorch.passes import PIPELINES, PassManager, resolve_pipeline
from mytorch.passes.base import PASSES
from tests.graphs import ALL_FAMILIES, random_graphs, random_inputs

from .helpers import apply_pass, assert_same_results, run_graph

PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no slow "explain" phase
SETTINGS = settings(
    max_examples=40, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow]
)

# Taken at import, before any plugin test registers more passes.
BUILTIN_PASSES = sorted(PASSES)


def copy(graph: Graph) -> Graph:
    return parse(str(graph))


def check_each_pass(graph: Graph, names, seed: int = 0) -> Graph:
    """Run `names` in order; after each: valid, honest, same values, and idempotent."""
    arrays = random_inputs(graph, seed)
    expected = run_graph(copy(graph), arrays)
    for name in names:
        result = apply_pass(name, graph)
        assert_same_results(expected, run_graph(result.graph, arrays))
        text = str(result.graph)
        again = apply_pass(name, result.graph)
        assert not again.changed and str(again.graph) == text, f"{name} is not idempotent"
        graph = result.graph
    return graph


@pytest.mark.parametrize("name", BUILTIN_PASSES)
@SETTINGS
@given(graph=random_graphs(families=ALL_FAMILIES), seed=st.integers(0, 2**16))
def test_every_pass_on_random_graphs(name, graph, seed):
    note(f"graph:\n{graph}")
    check_each_pass(graph, [name], seed)


@SETTINGS
@given(graph=random_graphs(families=ALL_FAMILIES), seed=st.integers(0, 2**16))
def test_const_fold_on_random_graphs(graph, seed):
    note(f"graph:\n{graph}")
    check_each_pass(graph, ["const_fold"], seed)


@SETTINGS
@given(graph=random_graphs(families=ALL_FAMILIES), seed=st.integers(0, 2**16))
def test_the_default_pipeline_on_random_graphs(graph, seed):
    note(f"graph:\n{graph}")
    arrays = random_inputs(graph, seed)
    expected = run_graph(copy(graph), arrays)
    optimized = PassManager(resolve_pipeline("default")).run(graph)  # verifies after each pass
    assert_same_results(expected, run_graph(optimized, arrays))
    assert str(parse(str(optimized))) == str(optimized)


# ---- random recurrences -------------------------------------------------------------------------


@st.composite
def recurrences(draw):
    """A traced RNN-like program with random sizes and form, and its graph."""
    steps = draw(st.integers(1, 4))
    batch, inp, hid = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    # NOTE: "h @ W_hh.T + x @ W_ih.T" (the recurrent product first) is left out: fuse_rnn_cell
    # crashes on it (a reported bug, see test_fuse_rnn_cell.py).
    form = draw(st.sampled_from(["cat", "split"]))
    act = draw(st.sampled_from([mytorch.tanh, mytorch.relu]))
    bias_shapes = draw(st.lists(st.sampled_from([(hid,), (hid,), (1, hid)]), max_size=2))
    outputs = draw(st.sets(st.sampled_from(["states", "projected", "escape"])))

    mytorch.manual_seed(draw(st.integers(0, 2**16)))
    w = mytorch.randn(hid, inp + hid)
    w_x, w_h = w[:, :inp].detach(), w[:, inp:].detach()
    biases = [mytorch.randn(*s) for s in bias_shapes]
    w_out, b_out = mytorch.randn(2, hid), mytorch.randn(2)

    def program(xs, h):
        states = []
        for t in range(xs.shape[0]):
            if form == "cat":
                pre = mytorch.cat((xs[t], h), 1) @ w.T
            else:
                pre = xs[t] @ w_x.T + h @ w_h.T
            for b in biases:
                pre = pre + b
            h = act(pre)
            states.append(h)
        result = [h]
        if "states" in outputs:
            result.append(mytorch.stack(states))
        if "projected" in outputs:
            result.append(mytorch.stack([s @ w_out.T + b_out for s in states]))
        if "escape" in outputs:
            result.append(pre)
        return tuple(result)

    xs, h0 = mytorch.randn(steps, batch, inp), mytorch.randn(batch, hid)
    return mytorch.trace(program, xs, h0)


@settings(
    max_examples=40, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow]
)
@given(graph=recurrences(), seed=st.integers(0, 2**16))
def test_the_default_pipeline_pass_by_pass_on_random_recurrences(graph, seed):
    note(f"graph:\n{graph}")
    verify(graph)
    optimized = check_each_pass(graph, PIPELINES["default"], seed)
    assert str(parse(str(optimized))) == str(optimized)


def test_recurrences_do_reach_the_rnn_passes():
    # The strategy is only useful if the patterns fire: check one fixed draw end to end.
    mytorch.manual_seed(0)
    w = mytorch.randn(4, 7)

    def program(xs, h):
        for t in range(xs.shape[0]):
            h = mytorch.tanh(mytorch.cat((xs[t], h), 1) @ w.T)
        return h

    graph = mytorch.trace(program, mytorch.randn(3, 2, 3), mytorch.randn(2, 4))
    optimized = check_each_pass(graph, PIPELINES["default"])
    assert optimized.op_counts().get("loop") == 1
    assert np.all([n.op != "cat" for n in optimized.nodes])
