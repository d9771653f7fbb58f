"""`roll`: the identical steps of a traced loop become one `loop` node whose body is one step."""

from __future__ import annotations

import sys

import pytest

import mytorch
from mytorch import nn
from mytorch.passes.base import PASSES

from .helpers import check_pass, check_values, remarks_of

TUTORIAL_LOOP = """
graph(%xs: f32[3,2,3], %h: f32[2,4], %w: f32[4,7] param, %wo: f32[2,4] param) {
  %getitem0 = getitem(%xs) {index=[0]} : f32[2,3]
  %cat0 = cat(%getitem0, %h) {dim=1} : f32[2,7]
  %transpose0 = transpose(%w) {d0=0, d1=1} : f32[7,4]
  %matmul0 = matmul(%cat0, %transpose0) : f32[2,4]
  %tanh0 = tanh(%matmul0) : f32[2,4]
  %transpose1 = transpose(%wo) {d0=0, d1=1} : f32[4,2]
  %matmul1 = matmul(%tanh0, %transpose1) : f32[2,2]
  %getitem1 = getitem(%xs) {index=[1]} : f32[2,3]
  %cat1 = cat(%getitem1, %tanh0) {dim=1} : f32[2,7]
  %transpose2 = transpose(%w) {d0=0, d1=1} : f32[7,4]
  %matmul2 = matmul(%cat1, %transpose2) : f32[2,4]
  %tanh1 = tanh(%matmul2) : f32[2,4]
  %transpose3 = transpose(%wo) {d0=0, d1=1} : f32[4,2]
  %matmul3 = matmul(%tanh1, %transpose3) : f32[2,2]
  %getitem2 = getitem(%xs) {index=[2]} : f32[2,3]
  %cat2 = cat(%getitem2, %tanh1) {dim=1} : f32[2,7]
  %transpose4 = transpose(%w) {d0=0, d1=1} : f32[7,4]
  %matmul4 = matmul(%cat2, %transpose4) : f32[2,4]
  %tanh2 = tanh(%matmul4) : f32[2,4]
  %transpose5 = transpose(%wo) {d0=0, d1=1} : f32[4,2]
  %matmul5 = matmul(%tanh2, %transpose5) : f32[2,2]
  %stack0 = stack(%matmul1, %matmul3, %matmul5) {dim=0} : f32[3,2,2]
  return (%stack0, %tanh2)
}
"""


def test_the_steps_become_a_loop_over_one_step_and_stacked_work_on_the_states_is_batched():
    # Each step's W.T is computed afresh, so it goes into the body; W itself is an invariant.
    # The stacked output projections become one product over all the states (batch_steps' rule).
    check_pass(
        "roll",
        TUTORIAL_LOOP,
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w: f32[4,7] param, %wo: f32[2,4] param) {
          %loop0 = loop(%xs, %h, %w) : f32[3,2,4] graph(%x: f32[2,3], %h: f32[2,4], %w: f32[4,7]) {
            %cat0 = cat(%x, %h) {dim=1} : f32[2,7]
            %transpose0 = transpose(%w) {d0=0, d1=1} : f32[7,4]
            %matmul0 = matmul(%cat0, %transpose0) : f32[2,4]
            %tanh0 = tanh(%matmul0) : f32[2,4]
            return (%tanh0)
          }
          %transpose1 = transpose(%wo) {d0=0, d1=1} : f32[4,2]
          %getitem3 = getitem(%loop0) {index=[2]} : f32[2,4]
          %matmul6 = matmul(%loop0, %transpose1) : f32[3,2,2]
          return (%matmul6, %getitem3)
        }
        """,  # noqa: E501
    )
    assert remarks_of("roll", TUTORIAL_LOOP) == [
        ("%tanh0", True, "3 steps"),
        ("%stack0", True, "3 steps"),
    ]


def test_work_on_the_states_that_is_not_stacked_reads_loop_t_or_goes_when_unused():
    stack = "  %stack0 = stack(%matmul1, %matmul3, %matmul5) {dim=0} : f32[3,2,2]\n"
    text = TUTORIAL_LOOP.replace(stack, "").replace("(%stack0, %tanh2)", "(%matmul3, %tanh2)")
    check_pass(
        "roll",
        text,
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w: f32[4,7] param, %wo: f32[2,4] param) {
          %loop0 = loop(%xs, %h, %w) : f32[3,2,4] graph(%x: f32[2,3], %h: f32[2,4], %w: f32[4,7]) {
            %cat0 = cat(%x, %h) {dim=1} : f32[2,7]
            %transpose0 = transpose(%w) {d0=0, d1=1} : f32[7,4]
            %matmul0 = matmul(%cat0, %transpose0) : f32[2,4]
            %tanh0 = tanh(%matmul0) : f32[2,4]
            return (%tanh0)
          }
          %getitem3 = getitem(%loop0) {index=[1]} : f32[2,4]
          %transpose3 = transpose(%wo) {d0=0, d1=1} : f32[4,2]
          %matmul3 = matmul(%getitem3, %transpose3) : f32[2,2]
          %getitem4 = getitem(%loop0) {index=[2]} : f32[2,4]
          return (%matmul3, %getitem4)
        }
        """,  # noqa: E501
    )


def test_a_stack_of_every_state_is_the_loop_itself_and_work_only_the_next_step_uses_joins_it():
    # nn.RNN's step multiplies the previous state first: `h @ W_hh.T` depends on step t-1 only,
    # but only step t uses it, so it belongs to step t's body and the state stays h.
    check_pass(
        "roll",
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param) {
          %transpose0 = transpose(%w_hh) {d0=0, d1=1} : f32[4,4]
          %matmul0 = matmul(%h, %transpose0) : f32[2,4]
          %getitem0 = getitem(%xs) {index=[0]} : f32[2,3]
          %transpose1 = transpose(%w_ih) {d0=0, d1=1} : f32[3,4]
          %matmul1 = matmul(%getitem0, %transpose1) : f32[2,4]
          %add0 = add(%matmul0, %matmul1) : f32[2,4]
          %relu0 = relu(%add0) : f32[2,4]
          %matmul2 = matmul(%relu0, %transpose0) : f32[2,4]
          %getitem1 = getitem(%xs) {index=[1]} : f32[2,3]
          %matmul3 = matmul(%getitem1, %transpose1) : f32[2,4]
          %add1 = add(%matmul2, %matmul3) : f32[2,4]
          %relu1 = relu(%add1) : f32[2,4]
          %matmul4 = matmul(%relu1, %transpose0) : f32[2,4]
          %getitem2 = getitem(%xs) {index=[2]} : f32[2,3]
          %matmul5 = matmul(%getitem2, %transpose1) : f32[2,4]
          %add2 = add(%matmul4, %matmul5) : f32[2,4]
          %relu2 = relu(%add2) : f32[2,4]
          %stack0 = stack(%relu0, %relu1, %relu2) {dim=0} : f32[3,2,4]
          return (%stack0, %relu2)
        }
        """,
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param) {
          %transpose0 = transpose(%w_hh) {d0=0, d1=1} : f32[4,4]
          %transpose1 = transpose(%w_ih) {d0=0, d1=1} : f32[3,4]
          %loop0 = loop(%xs, %h, %transpose0, %transpose1) : f32[3,2,4] graph(%x: f32[2,3], %h: f32[2,4], %transpose0: f32[4,4], %transpose1: f32[3,4]) {
            %matmul0 = matmul(%h, %transpose0) : f32[2,4]
            %matmul1 = matmul(%x, %transpose1) : f32[2,4]
            %add0 = add(%matmul0, %matmul1) : f32[2,4]
            %relu0 = relu(%add0) : f32[2,4]
            return (%relu0)
          }
          %getitem3 = getitem(%loop0) {index=[2]} : f32[2,4]
          return (%loop0, %getitem3)
        }
        """,  # noqa: E501
    )


def lstm_like(xs, h):
    """Two values flow from one step to the next: h and c."""
    c = h
    for t in range(xs.shape[0]):
        c = c * 0.5 + xs[t]
        h = mytorch.tanh(c) + h
    return h


def escaping(xs, h):
    """The pre-activation of the last step is returned too."""
    for t in range(xs.shape[0]):
        pre = xs[t] + h
        h = mytorch.tanh(pre)
    return h, pre


def changing(xs, h):
    """The last step computes its state differently."""
    for t in range(xs.shape[0]):
        h = mytorch.tanh(xs[t] + h) if t < xs.shape[0] - 1 else mytorch.relu(xs[t] + h)
    return h


def random_steps(xs, h):
    """Each step draws a dropout mask: the draws must stay distinct."""
    for t in range(xs.shape[0]):
        h = mytorch.nn.functional.dropout(xs[t] + h, 0.5, True)
    return h


def swapped_middle(xs, h):
    """A middle step adds its operands in the other order."""
    for t in range(xs.shape[0]):
        h = mytorch.tanh(h + xs[t] if t == 2 else xs[t] + h)
    return h


def other_params_middle(xs, h):
    """A middle step's op has other params (the same op, types and inputs)."""
    for t in range(xs.shape[0]):
        h = mytorch.softmax(xs[t] + h, dim=0 if t == 2 else 1)
    return h


def other_constant_middle(xs, h):
    """A middle step scales by another constant (an equal-looking computation of another value)."""
    for t in range(xs.shape[0]):
        h = mytorch.tanh((xs[t] + h) * (0.25 if t == 2 else 0.5))
    return h


def independent(xs, h):
    """A map, not a recurrence: no step reads another."""
    return mytorch.stack([mytorch.tanh(xs[t] + h) for t in range(xs.shape[0])])


NOT_ROLLED = {
    "two states": (lstm_like, "more than one value flows from a step to the next"),
    "a value escapes": (escaping, "made inside a step, is used outside the loop's state"),
    "a step differs": (changing, "computes its state differently from step 1"),
    "random steps": (random_steps, "step 0 computes its state differently from step 1"),
    "independent steps": (independent, "the steps are independent"),
    "a middle step reads its inputs in another order": (swapped_middle, "step 2 reads another"),
    "a middle step's params differ": (other_params_middle, "step 2 computes its state differently"),
    "a middle step's constant differs": (other_constant_middle, "step 2 reads another value"),
}


@pytest.mark.parametrize("case", NOT_ROLLED)
def test_steps_that_cannot_be_rolled_are_kept_and_say_why(case):
    fn, reason = NOT_ROLLED[case]
    text = str(mytorch.trace(fn, mytorch.randn(4, 2, 3), mytorch.randn(2, 3)))
    check_pass("roll", text)
    ((node, fired, why),) = remarks_of("roll", text)
    assert node == "%xs" and not fired
    assert reason in why


def test_fewer_than_three_steps_are_left_to_the_other_passes():
    text = str(mytorch.trace(escaping, mytorch.randn(2, 2, 3), mytorch.randn(2, 3)))
    check_pass("roll", text)
    assert remarks_of("roll", text) == []


@pytest.mark.parametrize("layers", [1, 2])
def test_each_layer_of_nn_rnn_becomes_a_loop(layers):
    mytorch.manual_seed(0)
    rnn = nn.RNN(3, 5, num_layers=layers)
    graph = check_values("roll", str(mytorch.trace(rnn, mytorch.randn(4, 2, 3)))).graph
    # Per layer: the loop, its zero h0 and its last state; h_n stacks the last states. The
    # weights' transposes, recorded once by the tracer, are the loops' invariants.
    counts = {"loop": layers, "const": layers, "getitem": layers, "stack": 1}
    assert graph.op_counts() == {**counts, "transpose": 2 * layers}


def test_long_loops_roll_without_recursion_and_to_the_same_graph():
    mytorch.manual_seed(0)
    rnn = nn.RNN(3, 5)
    sizes = []
    for steps in (5, 3000):
        graph = mytorch.trace(rnn, mytorch.randn(steps, 2, 3))
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(200)
        try:
            PASSES["roll"](graph)
        finally:
            sys.setrecursionlimit(old)
        sizes.append(len(graph))
    assert sizes[0] == sizes[1]
