"""`mytorch.ir.parse` reads the text form back: `str(parse(str(g))) == str(g)` for traced graphs
and random graphs, the parsed graph computes the same values, and bad text is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import mytorch
from mytorch import nn
from mytorch.ir import Graph, parse, verify
from mytorch.ir.interpreter import run
from tests.graphs import ALL_FAMILIES, graphs_with_inputs, random_graphs

from .op_cases import CASES, IRCase
from .programs import mlp, sequence_inputs, tutorial_rnn, unrolled
from .test_printer import PARAMS_AND_CONSTS


def assert_round_trip(graph: Graph) -> Graph:
    text = str(graph)
    parsed = parse(text)
    assert str(parsed) == text
    verify(parsed)
    assert [i.op for i in parsed.inputs] == [i.op for i in graph.inputs]
    return parsed


def _lstm_outputs(x):
    output, (h_n, c_n) = _LSTM(x)
    return output, h_n, c_n


mytorch.manual_seed(0)
_LSTM = nn.LSTM(3, 4, num_layers=2)

TRACED = {
    "tutorial-rnn-step": lambda: (tutorial_rnn(), mytorch.randn(1, 12), mytorch.zeros(1, 4)),
    "tutorial-rnn-unrolled": lambda: (unrolled(tutorial_rnn(), 5), *sequence_inputs(5)),
    "mlp": lambda: (mlp(), mytorch.randn(4, 3)),
    "nn-rnn-2-layers": lambda: (nn.RNN(3, 4, num_layers=2), mytorch.randn(5, 2, 3)),
    "nn-lstm": lambda: (_lstm_outputs, mytorch.randn(5, 2, 3)),
    "nn-gru-batch-first": lambda: (nn.GRU(3, 4, batch_first=True), mytorch.randn(2, 5, 3)),
}


@pytest.mark.parametrize("name", list(TRACED))
def test_traced_programs_round_trip(name):
    fn, *args = TRACED[name]()
    assert_round_trip(mytorch.trace(fn, *args))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_op_case_round_trips(case: IRCase):
    graph = mytorch.trace(case.fn, *case.tensors())
    parsed = assert_round_trip(graph)
    for before, after in zip(graph.nodes, parsed.nodes, strict=True):
        assert after.op == before.op and after.type == before.type
        if before.is_const:
            np.testing.assert_array_equal(after.value, before.value)
            assert after.value.dtype == before.value.dtype


def test_the_golden_text_parses_to_itself():
    graph = parse(PARAMS_AND_CONSTS)
    assert str(graph) == PARAMS_AND_CONSTS
    assert [n.op for n in graph.nodes][:2] == ["const", "mul"]
    assert float(graph.nodes[0].value) == 2.0


def test_a_parsed_graph_computes_what_the_traced_one_does():
    model = mlp()
    x = mytorch.randn(4, 3)
    graph = mytorch.trace(model, x)
    parsed = parse(str(graph))
    arrays = [x.data] + [p.data for p in model.parameters()]
    for a, b in zip(run(parsed, arrays), run(graph, arrays), strict=True):
        np.testing.assert_array_equal(a, b)


def test_hand_written_text():
    graph = parse(
        """
        graph(%x: f32[2,3], %w: f32[3,4] param) {
          %mm = matmul(%x, %w) : f32[2,4]
          %one = const() {fill=1.0} : f32[]
          %y = add(%mm, %one) : f32[2,4]
          %s = sum(%y) {dim=(1,), keepdim=False} : f32[2]
          return (%s, %mm)
        }
        """
    )
    verify(graph)
    assert [(i.name, i.op) for i in graph.inputs] == [("x", "input"), ("w", "param")]
    assert [n.op for n in graph.nodes] == ["matmul", "const", "add", "sum"]
    assert dict(graph.nodes[3].params) == {"dim": (1,), "keepdim": False}
    assert [o.name for o in graph.outputs] == ["s", "mm"]
    x, w = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    s, mm = run(graph, [x, w])
    np.testing.assert_array_equal(s, [16.0, 16.0])
    assert mm.shape == (2, 4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("graph(%x: f32[2]) {\n  return (%x)\n", "line 2"),
        ("grph(%x: f32[2]) {\n  return (%x)\n}", "line 1"),
        ("graph(%x: q8[2]) {\n  return (%x)\n}", "dtype"),
        ("graph(%x: f32[2]) {\n  %y = tanh(%z) : f32[2]\n  return (%y)\n}", "line 2.*%z"),
        ("graph(%x: f32[2]) {\n  %y = tanh(%x) f32[2]\n  return (%y)\n}", "line 2"),
        ("graph(%x: f32[2]) {\n  %y = sum(%x) {dim=(0,} : f32[]\n  return (%y)\n}", "line 2"),
        ("graph(%x: f32[2]) {\n  return (%q)\n}", "%q"),
    ],
    ids=["empty", "no-brace", "header", "dtype", "undefined", "no-colon", "bad-params", "output"],
)
def test_bad_text_is_a_clear_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)


# ---- random graphs --------------------------------------------------------------------------

RANDOM = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RANDOM
@given(random_graphs(families=ALL_FAMILIES))
def test_random_graphs_round_trip(graph):
    assert_round_trip(graph)


@RANDOM
@given(graphs_with_inputs())
def test_random_graphs_parse_to_the_same_computation(case):
    graph, arrays = case
    parsed = parse(str(graph))
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # promised: no inf, NaN
        expected = run(graph, arrays)
    actual = run(parsed, arrays)
    assert len(actual) == len(expected) == len(graph.outputs)
    for a, e, node in zip(actual, expected, graph.outputs, strict=True):
        assert a.shape == node.type.shape and a.dtype == node.type.dtype
        assert np.all(np.isfinite(e))
        np.testing.assert_array_equal(a, e)
