"""The verifier accepts valid graphs and rejects hand-broken ones with messages that name the
node, its op and the types involved."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import mytorch
from mytorch.ir import Graph, VerifyError, parse, verify
from mytorch.ops import TensorType
from tests.graphs import random_graphs

from .programs import sequence_inputs, tutorial_rnn, unrolled

F32 = np.dtype(np.float32)

SMALL = """\
graph(%x: f32[2,3], %b: f32[3] param) {
  %t = tanh(%x) : f32[2,3]
  %y = add(%t, %b) : f32[2,3]
  return (%y)
}"""


def small() -> Graph:
    graph = parse(SMALL)
    verify(graph)
    return graph


def test_verify_returns_a_valid_graph_unchanged():
    graph = small()
    text = str(graph)
    assert verify(graph) is graph
    assert str(graph) == text


def test_traced_graphs_verify():
    rnn = tutorial_rnn()
    verify(mytorch.trace(unrolled(rnn, 4), *sequence_inputs(4)))


@settings(max_examples=40, deadline=None)
@given(random_graphs())
def test_random_graphs_verify(graph):
    assert verify(graph) is graph


def test_use_before_definition():
    graph = small()
    graph.nodes.reverse()  # %y = add(%t, %b) now comes before %t
    with pytest.raises(VerifyError, match=r"%y.*add.*%t.*before its definition"):
        verify(graph)


def test_use_of_a_value_from_another_graph():
    graph, other = small(), small()
    add = graph.nodes[1]
    add.inputs = (other.nodes[0], add.inputs[1])
    with pytest.raises(VerifyError, match=r"%y.*add.*%t"):
        verify(graph)


def test_wrong_recorded_shape():
    graph = parse(SMALL.replace("%y = add(%t, %b) : f32[2,3]", "%y = add(%t, %b) : f32[3,2]"))
    pattern = (
        r"node 1 \(%y = add\).*recorded type f32\[3,2\].*f32\[2,3\]"
        r".*%t: f32\[2,3\], %b: f32\[3\]"
    )
    with pytest.raises(VerifyError, match=pattern):
        verify(graph)


def test_wrong_recorded_dtype():
    graph = parse(SMALL.replace("%t = tanh(%x) : f32[2,3]", "%t = tanh(%x) : f64[2,3]"))
    with pytest.raises(VerifyError, match=r"%t = tanh.*f64\[2,3\].*f32\[2,3\]"):
        verify(graph)


def test_inputs_the_shape_rule_rejects():
    graph = parse(SMALL.replace("%b: f32[3] param", "%b: f32[4] param"))
    with pytest.raises(VerifyError, match=r"%y = add.*%t: f32\[2,3\], %b: f32\[4\].*\(2, 3\)"):
        verify(graph)


def test_wrong_params():
    text = SMALL.replace("%t = tanh(%x) : f32[2,3]", "%t = softmax(%x) {dim=5} : f32[2,3]")
    with pytest.raises(VerifyError, match=r"%t = softmax.*dim"):
        verify(parse(text))


@pytest.mark.parametrize("index, other", [(1, "t"), (1, "x"), (0, "b")])
def test_duplicate_name(index, other):
    graph = small()
    node = graph.nodes[index]
    node.name = other
    with pytest.raises(VerifyError, match=rf"%{other}\b.*more than once"):
        verify(graph)


def test_duplicate_name_message_names_the_op():
    graph = small()
    graph.nodes[1].name = "t"
    with pytest.raises(VerifyError, match=r"%t.*add.*more than once|more than once.*add"):
        verify(graph)


def test_unknown_op():
    graph = parse(SMALL.replace("tanh(%x)", "frobnicate(%x)"))
    with pytest.raises(VerifyError, match=r"node 0 \(%t = frobnicate\).*unknown op 'frobnicate'"):
        verify(graph)


def test_users_out_of_step_with_inputs():
    graph = small()
    graph.nodes[0].users.clear()  # %y still reads %t
    with pytest.raises(VerifyError, match=r"%t.*users"):
        verify(graph)


def test_undefined_output():
    graph, other = small(), small()
    graph.set_outputs([other.nodes[1]])
    with pytest.raises(VerifyError, match=r"output %y"):
        verify(graph)


def test_constant_value_disagrees_with_its_type():
    graph = Graph("consts")
    const = graph.add_const(np.zeros((2, 3), np.float32))
    graph.set_outputs([const])
    const.type = TensorType((3, 2), F32)
    with pytest.raises(VerifyError, match=r"%c0 = const.*f32\[3,2\]"):
        verify(graph)


def test_verify_error_is_an_assertion_error():
    # Broken invariants are internal bugs, not user errors (STYLE.md section 7).
    assert issubclass(VerifyError, AssertionError)
