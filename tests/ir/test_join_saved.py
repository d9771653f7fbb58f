"""`join_saved`: saved values a backward reads side by side are saved as one join, which the
forward makes in place; on graphs written as text, and through compiled training."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.ir import parse, verify
from mytorch.ir.autodiff import Backward, remove_dead
from mytorch.ir.interpreter import run
from mytorch.ir.join_saved import SavedJoin, join_saved

FORWARD = """
graph(%x: f32[2,3], %xs: f32[4,2,3]) {
  %tanh0 = tanh(%x) : f32[2,3]
  %tanh1 = tanh(%xs) : f32[4,2,3]
  return (%tanh0, %tanh1)
}
"""

# BPTT's weight gradient: the states each step started from, h0 then hs[:3], in one product.
BACKWARD = """
graph(%g: f32[8,3], %h0: f32[2,3], %hs: f32[4,2,3]) {
  %reshape0 = reshape(%h0) {shape=(1, 2, 3)} : f32[1,2,3]
  %getitem0 = getitem(%hs) {index=[0:3]} : f32[3,2,3]
  %cat0 = cat(%reshape0, %getitem0) {dim=0} : f32[4,2,3]
  %reshape1 = reshape(%cat0) {shape=(8, 3)} : f32[8,3]
  %transpose0 = transpose(%reshape1) {d0=0, d1=1} : f32[3,8]
  %matmul0 = matmul(%transpose0, %g) : f32[3,3]
  %mul0 = mul(%h0, %h0) : f32[2,3]
  %getitem1 = getitem(%hs) {index=[3]} : f32[2,3]
  return (%matmul0, %mul0, %getitem1)
}
"""


def _joined(backward_text: str, forward_text: str = FORWARD) -> Backward:
    forward = parse(forward_text)
    graph = parse(backward_text)
    by_name = {n.name: n for n in [*forward.inputs, *forward.nodes]}
    saved_as = {"h0": "tanh0", "hs": "tanh1", "x": "x"}
    sources = [("cotangent", 0)] + [("saved", by_name[saved_as[i.name]]) for i in graph.inputs[1:]]
    backward = Backward(graph, sources, [0])
    if join_saved(graph, backward.sources):
        remove_dead(graph)
    backward.prune_inputs()
    verify(graph)
    return backward


def test_a_cat_of_saved_values_reads_one_join_of_them():
    backward = _joined(BACKWARD)
    graph = backward.graph
    assert [i.name for i in graph.inputs] == ["g", "saved_join"]
    kind, join = backward.sources[1]
    assert kind == "joined" and isinstance(join, SavedJoin)
    assert [(node.name, lifted) for node, lifted in join] == [("tanh0", True), ("tanh1", False)]
    assert str(join) == "cat(%tanh0[None], %tanh1) f32[5,2,3]"
    assert "cat" not in graph.op_counts()
    # Same values as the original graph, given the join the forward makes.
    rng = np.random.default_rng(0)
    g, h0, hs = (rng.standard_normal(s).astype(np.float32) for s in ((8, 3), (2, 3), (4, 2, 3)))
    expected = run(parse(BACKWARD), [g, h0, hs])
    got = run(graph, [g, np.concatenate([h0[None], hs])])
    for e, r in zip(expected, got, strict=True):
        np.testing.assert_array_equal(r, e)


@pytest.mark.parametrize(
    "change",
    [
        ("%getitem0 = getitem(%hs) {index=[0:3]}", "%getitem0 = getitem(%hs) {index=[1:4]}"),
        ("cat(%reshape0, %getitem0)", "cat(%getitem0, %reshape0)"),
    ],
    ids=["a later piece not from its first step", "an earlier piece not to its last step"],
)
def test_a_cat_that_is_no_run_of_the_join_is_kept(change):
    text = BACKWARD.replace(*change)
    backward = _joined(text)
    assert str(backward.graph) == str(parse(text))
    assert all(kind != "joined" for kind, _ in backward.sources)


def test_a_forward_input_is_not_joined():
    # the forward would copy it into the join: nothing saved
    text = BACKWARD.replace("%h0: f32[2,3]", "%x: f32[2,3]").replace("%h0", "%x")
    backward = _joined(text)
    assert "cat" in backward.graph.op_counts()
    assert all(kind != "joined" for kind, _ in backward.sources)


def _rnn_loss(cell: nn.Module, steps: int, batch: int, hidden: int):
    def loss(xs):
        h = mytorch.zeros(batch, hidden)
        for t in range(steps):
            h = mytorch.tanh(cell(Tensor.cat((xs[t], h), 1)))
        return (h * h).mean()

    return loss


def test_compiled_bptt_saves_the_states_joined_and_gets_eager_gradients():
    mytorch.manual_seed(0)
    steps, batch, inputs, hidden = 5, 3, 4, 6
    cell = nn.Linear(inputs + hidden, hidden)
    loss = _rnn_loss(cell, steps, batch, hidden)
    xs = mytorch.randn(steps, batch, inputs)
    report = str(mytorch.explain(loss, xs))
    saves = report[report.index("the forward saves:") :].splitlines()[0]
    assert f"f32[{steps},{batch},{hidden}]" in saves and "cat(%" in saves, saves

    eager = loss(xs)
    eager.backward()
    expected = [p.grad.copy() for p in cell.parameters()]
    cell.zero_grad()
    compiled = mytorch.compile(loss)
    got = compiled(xs)
    got.backward()
    assert compiled.backward_graph.inputs[-1].name.startswith("saved_join")
    np.testing.assert_allclose(got.item(), eager.item(), rtol=1e-5)
    for p, e in zip(cell.parameters(), expected, strict=True):
        np.testing.assert_allclose(p.grad, e, rtol=1e-4, atol=1e-6)
