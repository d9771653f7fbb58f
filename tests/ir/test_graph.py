"""The Graph's building blocks that keep long traces cheap: shared params and cached types,
placing nodes before others, removing many nodes at once, and the stable topological sort."""

from __future__ import annotations

import random

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mytorch.ir import Graph, parse, verify
from mytorch.ir.graph import freeze_params, infer_type
from mytorch.ops import TensorType
from tests.graphs import random_graphs

F32 = np.dtype(np.float32)


def small() -> Graph:
    return parse(
        "graph(%x: f32[2,3]) {\n"
        "  %tanh0 = tanh(%x) : f32[2,3]\n"
        "  %exp0 = exp(%tanh0) : f32[2,3]\n"
        "  %add0 = add(%tanh0, %exp0) : f32[2,3]\n"
        "  return (%add0)\n"
        "}"
    )


def test_equal_params_share_one_frozen_mapping_but_equal_values_of_other_types_do_not():
    assert freeze_params({"d0": 0, "d1": 1}) is freeze_params({"d1": 1, "d0": 0})
    assert list(freeze_params({"d1": 1, "d0": 0})) == ["d0", "d1"]  # sorted, as printed
    ints, bools, floats = (freeze_params({"k": v}) for v in (1, True, 1.0))
    assert ints is not bools and ints is not floats and bools is not floats
    assert type(bools["k"]) is bool and type(floats["k"]) is float


def test_params_holding_a_graph_are_never_shared():
    body = Graph("body")
    assert freeze_params({"body": body}) is not freeze_params({"body": body})


def test_types_come_from_the_shape_rule_and_errors_are_not_cached():
    graph = Graph()
    x = graph.add_input("x", TensorType((2, 3), F32))
    params = freeze_params({"d0": 0, "d1": 1})
    first = infer_type("transpose", [x], params)
    assert first == TensorType((3, 2), F32)
    assert infer_type("transpose", [x], params) is first
    bad = freeze_params({"d0": 0, "d1": 5})
    for _ in range(2):
        with pytest.raises(IndexError, match="out of range"):
            infer_type("transpose", [x], bad)


def test_nodes_placed_before_others_take_their_place_in_order():
    graph = small()
    tanh, exp, add = graph.nodes
    a = graph.add_node("neg", [tanh], before=exp)
    b = graph.add_node("neg", [a], before=exp)
    c = graph.add_node("abs", [tanh], before=a)  # before a node that is itself placed
    graph.remove_node(c)
    d = graph.add_node("abs", [tanh], before=a)
    assert graph.nodes == [tanh, d, a, b, exp, add]
    verify(graph)
    with pytest.raises(ValueError, match="not an op here"):
        graph.add_node("neg", [tanh], before=graph.inputs[0])


def test_remove_nodes_removes_unused_groups_at_once():
    graph = small()
    tanh, exp, add = graph.nodes
    graph.set_outputs([tanh])
    graph.remove_nodes([add, exp])
    assert graph.nodes == [tanh] and tanh.users == []
    verify(graph)
    graph = small()
    with pytest.raises(AssertionError, match="still used"):
        graph.remove_nodes([graph.nodes[1]])


@settings(max_examples=40, deadline=None)
@given(graph=random_graphs(), seed=st.integers(0, 2**16))
def test_sort_restores_the_order_networkx_gives(graph, seed):
    """Shuffled nodes come back in the lexicographically smallest topological order by
    position, as `nx.lexicographical_topological_sort` gives."""
    nodes = list(graph.nodes)
    random.Random(seed).shuffle(nodes)
    graph._nodes = nodes
    position = {n: k for k, n in enumerate(nodes)}
    deps = nx.DiGraph()
    deps.add_nodes_from(nodes)
    deps.add_edges_from((i, n) for n in nodes for i in n.inputs if i in position)
    expected = list(nx.lexicographical_topological_sort(deps, key=position.__getitem__))
    graph.sort()
    assert graph.nodes == expected
    verify(graph)
