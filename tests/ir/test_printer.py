"""The text form of traced graphs (golden text), DOT export and rendering."""

from __future__ import annotations

import os
import stat
import sys

import numpy as np
import pytest

import mytorch
from mytorch.ir import printer

from .op_cases import CASES, IRCase
from .programs import mlp, tutorial_rnn

RNN_STEP = """\
graph(%input: f32[1,12], %hidden: f32[1,4], %i2h.weight: f32[4,16] param, \
%i2h.bias: f32[4] param, %h2o.weight: f32[3,4] param, %h2o.bias: f32[3] param) {
  %cat0 = cat(%input, %hidden) {dim=1} : f32[1,16]
  %transpose0 = transpose(%i2h.weight) {d0=0, d1=1} : f32[16,4]
  %matmul0 = matmul(%cat0, %transpose0) : f32[1,4]
  %add0 = add(%matmul0, %i2h.bias) : f32[1,4]
  %tanh0 = tanh(%add0) : f32[1,4]
  %transpose1 = transpose(%h2o.weight) {d0=0, d1=1} : f32[4,3]
  %matmul1 = matmul(%tanh0, %transpose1) : f32[1,3]
  %add1 = add(%matmul1, %h2o.bias) : f32[1,3]
  return (%add1, %tanh0)
}"""

MLP = """\
graph(%input: f32[2,3], %0.weight: f32[5,3] param, %0.bias: f32[5] param, \
%2.weight: f32[2,5] param, %2.bias: f32[2] param) {
  %transpose0 = transpose(%0.weight) {d0=0, d1=1} : f32[3,5]
  %matmul0 = matmul(%input, %transpose0) : f32[2,5]
  %add0 = add(%matmul0, %0.bias) : f32[2,5]
  %relu0 = relu(%add0) : f32[2,5]
  %transpose1 = transpose(%2.weight) {d0=0, d1=1} : f32[5,2]
  %matmul1 = matmul(%relu0, %transpose1) : f32[2,2]
  %add1 = add(%matmul1, %2.bias) : f32[2,2]
  return (%add1)
}"""

PARAMS_AND_CONSTS = """\
graph(%x: f32[2,3]) {
  %c0 = const() {fill=2.0} : f32[]
  %mul0 = mul(%x, %c0) : f32[2,3]
  %c1 = const() {value=[0.5, -1.0, 2.0]} : f32[3]
  %add0 = add(%mul0, %c1) : f32[2,3]
  %sum0 = sum(%add0) {dim=(0,), keepdim=True} : f32[1,3]
  %getitem0 = getitem(%x) {index=[:, 1:3]} : f32[2,2]
  %getitem1 = getitem(%x) {index=[None, ..., ::2]} : f32[1,2,2]
  %clamp0 = clamp(%x) {max=0.25, min=None} : f32[2,3]
  %softmax0 = softmax(%x) {dim=1} : f32[2,3]
  return (%sum0, %getitem0, %getitem1, %clamp0, %softmax0)
}"""


def test_golden_tutorial_rnn_step(capsys):
    graph = mytorch.trace(tutorial_rnn(), mytorch.randn(1, 12), mytorch.zeros(1, 4))
    print(graph)
    assert capsys.readouterr().out == RNN_STEP + "\n"


def test_golden_mlp():
    graph = mytorch.trace(mlp(), mytorch.randn(2, 3))
    assert str(graph) == MLP


def test_golden_params_and_constants():
    def f(x):
        scaled = x * 2 + mytorch.tensor(np.array([0.5, -1.0, 2.0], np.float32))
        return (
            scaled.sum(0, keepdim=True),
            x[:, 1:3],
            x[None, ..., ::2],
            x.clamp(max=0.25),
            x.softmax(-1),
        )

    assert str(mytorch.trace(f, mytorch.randn(2, 3))) == PARAMS_AND_CONSTS


def test_text_does_not_depend_on_the_values():
    first = mytorch.trace(tutorial_rnn(seed=1), mytorch.randn(1, 12), mytorch.zeros(1, 4))
    second = mytorch.trace(tutorial_rnn(seed=2), mytorch.ones(1, 12), mytorch.ones(1, 4))
    assert str(first) == str(second) == RNN_STEP


# ---- DOT ------------------------------------------------------------------------------------


def test_to_dot_mentions_every_node_and_edge():
    graph = mytorch.trace(tutorial_rnn(), mytorch.randn(1, 12), mytorch.zeros(1, 4))
    dot = graph.to_dot()
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for value in graph.all_values():
        assert f'"{value.name}"' in dot, f"%{value.name} is missing from the DOT text"
        assert str(value.type) in dot
    for node in graph.nodes:
        assert node.op in dot
        for i in node.inputs:
            assert f'"{i.name}" -> "{node.name}"' in dot
    assert dot.count("->") >= sum(len(n.inputs) for n in graph.nodes) + len(graph.outputs)
    assert dot.count("{") == dot.count("}") and dot.count('"') % 2 == 0


@pytest.mark.parametrize("case", CASES, ids=str)
def test_to_dot_handles_every_op(case: IRCase):
    graph = mytorch.trace(case.fn, *case.tensors())
    dot = graph.to_dot()
    for value in graph.all_values():
        assert f'"{value.name}"' in dot
    assert case.op in dot


def _fake_dot(tmp_path) -> str:
    """An executable standing in for Graphviz's dot: writes its -o file from stdin."""
    script = tmp_path / "dot"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "args = sys.argv[1:]\n"
        "out = args[args.index('-o') + 1]\n"
        "fmt = [a for a in args if a.startswith('-T')][0][2:]\n"
        "open(out, 'w').write(f'<{fmt}>' + sys.stdin.read())\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_render_writes_the_file_with_graphviz(tmp_path, monkeypatch):
    graph = mytorch.trace(mlp(), mytorch.randn(2, 3))
    real_dot = printer.shutil.which("dot")
    if real_dot is None:
        fake = _fake_dot(tmp_path)
        monkeypatch.setattr(printer.shutil, "which", lambda name: fake if name == "dot" else None)
    path = str(tmp_path / "graph.svg")
    graph.render(path)
    assert os.path.getsize(path) > 0
    text = open(path, encoding="utf-8", errors="replace").read()
    assert "<svg" in text
    if real_dot is None:
        assert graph.to_dot() in text, "render should hand dot the graph's DOT text"


def test_render_without_graphviz_raises_a_clear_error(tmp_path, monkeypatch):
    graph = mytorch.trace(mlp(), mytorch.randn(2, 3))
    monkeypatch.setattr(printer.shutil, "which", lambda name: None)
    path = tmp_path / "graph.png"
    with pytest.raises(RuntimeError, match="(?i)graphviz"):
        graph.render(str(path))
    assert not path.exists()


def test_render_rejects_an_unknown_format(tmp_path):
    graph = mytorch.trace(mlp(), mytorch.randn(2, 3))
    with pytest.raises(ValueError, match="svg"):
        graph.render(str(tmp_path / "graph.txt"))
