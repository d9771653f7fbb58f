"""The promises of the random-graph strategy in tests/graphs.py, which other tests rely on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mytorch
from mytorch import Tensor
from mytorch.ir import verify
from mytorch.ir.interpreter import run
from mytorch.ops import OPS
from tests.graphs import (
    ALL_FAMILIES,
    FAMILIES,
    graphs_with_inputs,
    random_graphs,
    random_inputs,
)


@settings(max_examples=80, deadline=None)
@given(graphs_with_inputs(families=ALL_FAMILIES))
def test_random_graphs_are_valid_finite_float32_programs(case):
    graph, arrays = case
    assert verify(graph) is graph
    kinds = [i.op for i in graph.inputs]
    assert kinds == sorted(kinds, key=lambda k: k == "param"), "params must follow the arguments"
    assert 1 <= len(graph.outputs) <= 3
    assert all(o in graph.nodes and not o.is_const for o in graph.outputs)
    assert all(n.op == "const" or n.op in OPS for n in graph.nodes)
    assert all(i.type.dtype == np.float32 for i in graph.inputs)
    assert all(np.all(np.abs(a) <= 2.0) for a in arrays)
    mytorch.manual_seed(0)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        outputs = run(graph, arrays)
    for out, node in zip(outputs, graph.outputs, strict=True):
        assert out.shape == node.type.shape and out.dtype == np.float32
        assert np.all(np.isfinite(out))


@settings(max_examples=30, deadline=None)
@given(random_graphs(min_ops=3, max_ops=3, families=["matmul"]), st.integers(0, 100))
def test_families_and_sizes_can_be_chosen(graph, seed):
    ops = graph.op_counts()
    assert ops.get("matmul", 0) + ops.get("tanh", 0) >= 3  # tanh: where matmul cannot apply
    assert len(random_inputs(graph, seed)) == len(graph.inputs)


def test_unknown_family_is_an_error():
    @given(random_graphs(families=["frobnicate"]))
    def draw_one(graph):
        pass

    with pytest.raises(ValueError, match="frobnicate"):
        draw_one()


def test_random_inputs_are_deterministic_per_seed():
    indices = Tensor(np.zeros(2, np.int64), dtype=np.int64, trainable=False)
    graph = mytorch.trace(lambda x, i: x * 2, mytorch.ones(2, 3), indices)
    first, again, other = (random_inputs(graph, s) for s in (1, 1, 2))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert first[1].dtype == np.int64 and first[0].dtype == np.float32


def test_every_family_is_registered():
    assert set(ALL_FAMILIES) == set(FAMILIES)
