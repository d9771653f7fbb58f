"""Values computed straight into their slice of a cat along its first dim
(`llvm._placed_in_cats`), and the cat's other pieces copied with memcpy (no kernel, so a cat of
any length compiles nothing new). Every graph runs on the llvm backend and the numpy
interpreter: same values, whatever else reads the pieces or the cat."""

from __future__ import annotations

import numpy as np
import pytest

from mytorch.codegen import BACKENDS, llvm
from mytorch.ir import parse

RNN_LOOP = """graph(%xh: f32[3,2,4], %w: f32[4,4]) {
  %g0 = getitem(%xh) {index=[0:1]} : f32[1,2,4]
  %r0 = reshape(%g0) {shape=(2, 4)} : f32[2,4]
  %h0 = tanh(%r0) : f32[2,4]
  %rest = getitem(%xh) {index=[1:3]} : f32[2,2,4]
  %loop0 = loop(%rest, %h0, %w) : f32[2,2,4] graph(%x: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4]) {
    %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
    return (%rnn_step0)
  }
  %s0 = reshape(%h0) {shape=(1, 2, 4)} : f32[1,2,4]
  %cat0 = cat(%s0, %loop0) {dim=0} : f32[3,2,4]
  READS
}"""

BACKWARD_LOOP = """graph(%hs: f32[3,2,4], %gs: f32[3,2,4], %w: f32[4,4], %d0: f32[1,2,4]) {
  %getitem0 = getitem(%hs) {index=[2:3]} : f32[1,2,4]
  %reshape1 = reshape(%getitem0) {shape=(2, 4)} : f32[2,4]
  %getitem1 = getitem(%gs) {index=[2:3]} : f32[1,2,4]
  %reshape2 = reshape(%getitem1) {shape=(2, 4)} : f32[2,4]
  %mul0 = mul(%reshape2, %reshape1) : f32[2,4]
  %reshape3 = reshape(%mul0) {shape=(1, 2, 4)} : f32[1,2,4]
  %getitem2 = getitem(%hs) {index=[0:2]} : f32[2,2,4]
  %getitem3 = getitem(%gs) {index=[0:2]} : f32[2,2,4]
  %loop1 = loop(%getitem2, %getitem3, %mul0, %w) {reverse=True, sequences=2} : f32[2,2,4] graph(%h: f32[2,4], %g: f32[2,4], %carry: f32[2,4], %w_hh: f32[4,4]) {
    %matmul0 = matmul(%carry, %w_hh) : f32[2,4]
    %add0 = add(%g, %matmul0) : f32[2,4]
    %mul0 = mul(%add0, %h) : f32[2,4]
    return (%mul0)
  }
  %cat2 = cat(%d0, %loop1, %reshape3) {dim=0} : f32[4,2,4]
  READS
}"""  # noqa: E501

CASES = {
    # the peeled step and the loop both in the cat, an output
    "loop, cat output": (RNN_LOOP, "return (%cat0)"),
    # readers of the loop and of the peeled step in their slices, of the cat after it
    "loop, other readers": (
        RNN_LOOP,
        """%l1 = getitem(%loop0) {index=[0]} : f32[2,4]
  %m0 = mul(%l1, %h0) : f32[2,4]
  %c1 = getitem(%cat0) {index=[1:3]} : f32[2,2,4]
  %e0 = exp(%c1) : f32[2,2,4]
  return (%m0, %e0)""",
    ),
    # the loop an output too: it keeps its own value, the cat copies it
    "loop also an output": (RNN_LOOP, "return (%cat0, %loop0, %h0)"),
    "cat twice an output": (RNN_LOOP, "return (%cat0, %cat0)"),
    # a reverse loop between an input and its first step, whose carry is in the same cat
    "reverse loop": (
        BACKWARD_LOOP,
        """%getitem4 = getitem(%cat2) {index=[1:4]} : f32[3,2,4]
  %reshape0 = reshape(%getitem4) {shape=(6, 4)} : f32[6,4]
  %l0 = getitem(%loop1) {index=[1]} : f32[2,4]
  return (%cat2, %reshape0, %l0)""",
    ),
    "reverse loop, not output": (
        BACKWARD_LOOP,
        """%sum0 = sum(%cat2) {dim=(1,), keepdim=False} : f32[4,4]
  return (%sum0, %mul0)""",
    ),
}


def run_both(text: str, seed: int = 0):
    graph = parse(text)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(i.type.shape).astype(i.type.dtype) * 0.5 for i in graph.inputs]
    expected = BACKENDS["numpy"](graph)([a.copy() for a in arrays])
    actual = BACKENDS["llvm"](graph)(arrays)
    return actual, expected


@pytest.mark.parametrize("case", list(CASES))
def test_loops_and_steps_written_into_their_cat_match_the_interpreter(case, assert_same):
    template, reads = CASES[case]
    actual, expected = run_both(template.replace("READS", reads))
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_same(a, np.asarray(e), what=f"output {k}")


@pytest.mark.parametrize(
    "body",
    [
        # a piece read elsewhere too, computed in its place
        """%e0 = exp(%a) : f32[2,3]
  %t0 = tanh(%b) : f32[3,3]
  %cat0 = cat(%e0, %t0) {dim=0} : f32[5,3]
  %m0 = mul(%e0, %e0) : f32[2,3]
  return (%cat0, %m0)""",
        # a cat in a cat; an input piece and a piece of another dtype
        """%e0 = exp(%a) : f32[2,3]
  %t0 = tanh(%b) : f32[3,3]
  %cat0 = cat(%e0, %t0) {dim=0} : f32[5,3]
  %n0 = neg(%a) : f32[2,3]
  %cat1 = cat(%cat0, %n0, %a) {dim=0} : f32[9,3]
  %cat2 = cat(%cat1, %d) {dim=0} : f64[10,3]
  return (%cat2, %t0)""",
        # after dims of 1 the slice is contiguous too; along dim 1 of a matrix it is not
        """%r0 = reshape(%a) {shape=(1, 2, 3)} : f32[1,2,3]
  %e0 = exp(%r0) : f32[1,2,3]
  %r1 = reshape(%b) {shape=(1, 3, 3)} : f32[1,3,3]
  %t0 = tanh(%r1) : f32[1,3,3]
  %cat0 = cat(%e0, %t0) {dim=1} : f32[1,5,3]
  %tb = transpose(%b) {d0=0, d1=1} : f32[3,3]
  %e1 = exp(%tb) : f32[3,3]
  %cat1 = cat(%e1, %b) {dim=1} : f32[3,6]
  return (%cat0, %cat1, %e1)""",
    ],
)
def test_cat_pieces_placed_or_copied_match_the_interpreter(body, assert_same):
    text = "graph(%a: f32[2,3], %b: f32[3,3], %d: f64[1,3]) {\n  " + body + "\n}"
    actual, expected = run_both(text)
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_same(a, np.asarray(e), what=f"output {k}")


def test_a_cat_in_a_loop_body_writes_its_pieces_in_place(assert_same):
    text = """graph(%xs: f32[4,2,3], %h0: f32[2,3]) {
  %loop0 = loop(%xs, %h0) : f32[4,2,3] graph(%x: f32[2,3], %h: f32[2,3]) {
    %a = getitem(%h) {index=[0:1]} : f32[1,3]
    %t = tanh(%a) : f32[1,3]
    %b = getitem(%x) {index=[1:2]} : f32[1,3]
    %m = mul(%b, %t) : f32[1,3]
    %cat0 = cat(%t, %m) {dim=0} : f32[2,3]
    %out = add(%cat0, %x) : f32[2,3]
    return (%out)
  }
  return (%loop0)
}"""
    actual, expected = run_both(text)
    assert_same(actual[0], np.asarray(expected[0]))


def test_a_cat_of_any_length_along_its_first_dim_compiles_no_kernel(monkeypatch, assert_same):
    made = []
    new_kernel = llvm._new_kernel
    monkeypatch.setattr(llvm, "_new_kernel", lambda *a: made.append(a) or new_kernel(*a))
    for n in (3, 5, 8):
        text = f"""graph(%a: f32[1,4,5], %b: f32[{n},4,5]) {{
  %cat0 = cat(%a, %b, %a) {{dim=0}} : f32[{n + 2},4,5]
  return (%cat0)
}}"""
        actual, expected = run_both(text, seed=n)
        assert_same(actual[0], np.asarray(expected[0]))
    assert not made
