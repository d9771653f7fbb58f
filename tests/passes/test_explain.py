"""`mytorch.explain` and dumps: what each pass did, and where each fusion fired or why not."""

from __future__ import annotations

import re

import numpy as np
import pytest

import mytorch
from mytorch.passes import PIPELINES

from .helpers import RNN, tutorial_loop

PASS_LINE = re.compile(r"^\s+(\w+)\s+(\d+) -> (\d+)\s+(yes|no)\s+(\d+\.\d+) ms$")


def pass_table(report: str) -> list[tuple[str, int, int, bool]]:
    """The pass rows of a report's first pass table (the forward's, if it has a backward)."""
    rows = []
    for line in report.split("\nbackward graph")[0].splitlines():
        m = PASS_LINE.match(line)
        if m:
            rows.append((m[1], int(m[2]), int(m[3]), m[4] == "yes"))
    return rows


def fusion_lines(report: str) -> list[str]:
    return [line.strip() for line in report.splitlines() if line.startswith("    %")]


@pytest.fixture
def tutorial_step():
    mytorch.manual_seed(0)
    rnn = RNN(12, 4, 3)
    return rnn, mytorch.randn(1, 12), mytorch.zeros(1, 4)


def test_every_pass_is_listed_with_node_counts_and_time(tutorial_step):
    rnn, x, h = tutorial_step
    explanation = mytorch.explain(rnn, x, h)
    report = str(explanation)
    rows = pass_table(report)
    assert [name for name, *_ in rows] == PIPELINES["default"]
    traced = len(mytorch.trace(rnn, x, h))
    assert rows[0][1] == traced
    assert f"traced graph: {traced} nodes" in report
    for (_, _, after, _), (_, before, _, _) in zip(rows, rows[1:], strict=False):
        assert after == before  # each pass starts from what the previous one left
    assert rows[-1][2] == len(explanation.graph)
    assert all(changed == (b != a) for _, b, a, changed in rows if b != a)
    assert re.search(r"^\s+total\s+\d+\.\d+ ms$", report, re.M)
    assert f"optimized graph: {len(explanation.graph)} nodes (" in report


def test_the_tutorial_step_reports_its_fusions_and_the_single_cell(tutorial_step):
    report = str(mytorch.explain(*tutorial_step))
    assert "split_concat: cat -> matmul: fired 1 of 1 candidates" in report
    lines = fusion_lines(report)
    assert "%cat0: fired" in lines
    assert "%tanh0: fired" in lines
    assert any(
        line.startswith("%rnn_cell") and "not fired" in line and "single cell" in line
        for line in lines
    )
    assert "rnn_cell x1" in report and "cat x" not in report.split("optimized graph")[1]


def test_a_loop_reports_rolling_with_the_step_count_and_the_fusions_in_its_body():
    mytorch.manual_seed(0)
    loop = tutorial_loop(RNN(12, 4, 3))
    report = str(mytorch.explain(loop, mytorch.randn(5, 1, 12), mytorch.zeros(1, 4)))
    assert "roll: a loop's identical steps: fired 1 of" in report
    assert "%tanh0: fired (5 steps)" in fusion_lines(report)
    # The passes after `roll` see one step: the loop's body.
    assert "split_concat: cat -> matmul: fired 1 of 1 candidates" in report
    assert "fuse_rnn_cell: products + bias -> tanh/relu: fired 1 of 1 candidates" in report
    assert "hoist_input_projection: loop over an rnn_cell: fired 1 of 1 candidates" in report
    assert "loop x1" in report


def test_without_roll_the_unrolled_steps_are_fused_hoisted_and_rerolled():
    mytorch.manual_seed(0)
    loop = tutorial_loop(RNN(12, 4, 3))
    passes = [name for name in PIPELINES["default"] if name != "roll"]
    report = str(mytorch.explain(loop, mytorch.randn(5, 1, 12), mytorch.zeros(1, 4), passes=passes))
    assert "split_concat: cat -> matmul: fired 5 of 5 candidates" in report
    assert "fuse_rnn_cell: products + bias -> tanh/relu: fired 5 of 5 candidates" in report
    assert "%rnn_cell0: fired (5 steps)" in fusion_lines(report)
    assert "%rnn_step0: fired (5 steps)" in fusion_lines(report)
    assert "loop x1" in report


W = mytorch.randn(4, 7)
B = mytorch.randn(4)
V = mytorch.randn(4, 3)
WX = mytorch.randn(4, 3)
WH = mytorch.randn(4, 4)
B_ROW = mytorch.randn(1, 4)


def cat_with_second_user(x, h):
    c = mytorch.cat((x, h), 1)
    return mytorch.tanh(c @ W.T + B), c.sum()


def cat_on_dim_0(x, h):
    return mytorch.tanh(mytorch.cat((x, h), 0) @ V.T)


def bias_of_wrong_shape(x, h):
    return mytorch.tanh(x @ WX.T + h @ WH.T + B_ROW)


@pytest.mark.parametrize(
    "fn, h_size, line",
    [
        (cat_with_second_user, 4, "%cat0: not fired (cat has 2 users, not 1)"),
        (cat_on_dim_0, 3, "%cat0: not fired (cat dim is 0, not the last dim)"),
        (
            bias_of_wrong_shape,
            4,
            "%tanh0: not fired (term %B_ROW of shape (1, 4) is not a (4,) bias)",
        ),
    ],
)
def test_patterns_that_did_not_fire_name_the_failed_condition(fn, h_size, line):
    report = str(mytorch.explain(fn, mytorch.randn(1, 3), mytorch.randn(1, h_size)))
    assert line in fusion_lines(report)
    assert "fired 0 of 1 candidates" in report
    assert report.startswith(f"explain: {fn.__name__}(x: f32[1,3], h: f32[1,{h_size}])")


def test_a_function_without_candidates_says_so():
    report = str(mytorch.explain(lambda x: x * 2.0 + 1.0, mytorch.randn(3)))
    assert "fusion patterns:\n  (no candidates)" in report


def test_explain_takes_a_pipeline(tutorial_step):
    report = str(mytorch.explain(*tutorial_step, passes=["cse", "dce"]))
    assert [name for name, *_ in pass_table(report)] == ["cse", "dce"]
    assert "(no candidates)" in report


def stage_files(pipeline) -> list[str]:
    return ["000_trace.txt"] + [f"{k:03d}_{name}.txt" for k, name in enumerate(pipeline, 1)]


def test_dump_writes_every_stage_and_the_explanation(tmp_path, tutorial_step):
    rnn, x, h = tutorial_step
    loop = tutorial_loop(rnn)
    xs = mytorch.randn(3, 1, 12)
    fn = mytorch.compile(loop, backend="numpy", dump=str(tmp_path))
    with mytorch.no_grad():  # forward only: no backward graph to dump
        out, h_last = fn(xs, h)
    folder = tmp_path / "run_sequence-0"
    expected = stage_files(PIPELINES["default"])
    assert expected[1] == "001_roll.txt" and expected[-1].endswith("_dce.txt")
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected + ["explain.txt"])
    assert (folder / "000_trace.txt").read_text() == str(mytorch.trace(loop, xs, h)) + "\n"
    assert (folder / expected[-1]).read_text() == str(fn.graph) + "\n"
    explanation = (folder / "explain.txt").read_text()
    assert explanation.startswith("explain: run_sequence(xs: f32[3,1,12], h: f32[1,4])")
    assert [name for name, *_ in pass_table(explanation)] == PIPELINES["default"]
    assert "%tanh0: fired (3 steps)" in fusion_lines(explanation)
    # Dumping changes nothing about the results.
    ref_out, ref_h = loop(xs, h)
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), rtol=1e-5, atol=1e-6)
    # A new signature gets the next folder.
    fn(mytorch.randn(2, 1, 12), h)
    assert (tmp_path / "run_sequence-1" / "000_trace.txt").exists()


def test_dump_writes_the_backward_stages_when_gradients_are_needed(tmp_path, tutorial_step):
    rnn, x, h = tutorial_step
    fn = mytorch.compile(tutorial_loop(rnn), backend="numpy", dump=str(tmp_path))
    out, h_last = fn(mytorch.randn(3, 1, 12), h)
    out.sum().backward()
    names = sorted(p.name for p in (tmp_path / "run_sequence-0").iterdir())
    backward = [n for n in names if n.startswith("backward_")]
    pipeline = PIPELINES["default"]
    assert backward[0] == "backward_000_derived.txt"
    assert backward[1 : len(pipeline) + 1] == [
        f"backward_{k:03d}_{name}.txt" for k, name in enumerate(pipeline, 1)
    ]
    assert backward[len(pipeline) + 1] == f"backward_{len(pipeline) + 1:03d}_forward_saving.txt"
    derived = (tmp_path / "run_sequence-0" / "backward_000_derived.txt").read_text()
    assert "reverse=True" in derived  # backpropagation through time: a reverse loop


def test_the_environment_variable_turns_dumps_on(tmp_path, monkeypatch, tutorial_step):
    monkeypatch.setenv("MYTORCH_DUMP", str(tmp_path))
    rnn, x, h = tutorial_step
    with mytorch.no_grad():
        mytorch.compile(rnn, backend="numpy", passes=["cse", "dce"])(x, h)
    folder = tmp_path / "RNN-0"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        stage_files(["cse", "dce"]) + ["explain.txt"]
    )


def test_explain_shows_the_backward_graph_when_gradients_are_needed(tutorial_step):
    rnn, x, h = tutorial_step
    loop = tutorial_loop(rnn)
    xs = mytorch.randn(6, 1, 12)
    report = str(mytorch.explain(loop, xs, h))
    backward = report[report.index("backward graph") :]
    assert "reverse mode over the optimized graph" in backward
    assert [name for name, *_ in pass_table(backward)] == PIPELINES["default"]
    assert "loop x1" in backward.split("optimized backward graph:")[1]
    assert "the forward saves: " in backward and "%loop" in backward
    with mytorch.no_grad():
        assert "backward graph" not in str(mytorch.explain(loop, xs, h))
