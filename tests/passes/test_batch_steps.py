"""`batch_steps`: a stack of the same per-step work on h[0], ..., h[T-1] becomes one computation
on h (the output projection moved out of the loop)."""

from __future__ import annotations

from .helpers import check_pass, check_values, remarks_of

PROJECTIONS = """
graph(%hs: f32[3,2,4], %w: f32[5,4] param, %b: f32[5] param) {
  %transpose0 = transpose(%w) {d0=0, d1=1} : f32[4,5]
  %getitem0 = getitem(%hs) {index=[0]} : f32[2,4]
  %matmul0 = matmul(%getitem0, %transpose0) : f32[2,5]
  %add0 = add(%matmul0, %b) : f32[2,5]
  %getitem1 = getitem(%hs) {index=[1]} : f32[2,4]
  %matmul1 = matmul(%getitem1, %transpose0) : f32[2,5]
  %add1 = add(%matmul1, %b) : f32[2,5]
  %getitem2 = getitem(%hs) {index=[2]} : f32[2,4]
  %matmul2 = matmul(%getitem2, %transpose0) : f32[2,5]
  %add2 = add(%matmul2, %b) : f32[2,5]
  %stack0 = stack(%add0, %add1, %add2) {dim=0} : f32[3,2,5]
  return (%stack0)
}
"""


def test_stacked_per_step_projections_become_one_product():
    check_pass(
        "batch_steps",
        PROJECTIONS,
        """
        graph(%hs: f32[3,2,4], %w: f32[5,4] param, %b: f32[5] param) {
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[4,5]
          %matmul3 = matmul(%hs, %transpose0) : f32[3,2,5]
          %add3 = add(%matmul3, %b) : f32[3,2,5]
          return (%add3)
        }
        """,
    )
    assert remarks_of("batch_steps", PROJECTIONS) == [("%stack0", True, "3 steps")]


def test_softmax_over_steps_shifts_its_dim():
    check_pass(
        "batch_steps",
        """
        graph(%hs: f32[2,2,4]) {
          %getitem0 = getitem(%hs) {index=[0]} : f32[2,4]
          %softmax0 = softmax(%getitem0) {dim=1} : f32[2,4]
          %getitem1 = getitem(%hs) {index=[1]} : f32[2,4]
          %softmax1 = softmax(%getitem1) {dim=1} : f32[2,4]
          %stack0 = stack(%softmax0, %softmax1) {dim=0} : f32[2,2,4]
          return (%stack0)
        }
        """,
        """
        graph(%hs: f32[2,2,4]) {
          %softmax2 = softmax(%hs) {dim=2} : f32[2,2,4]
          return (%softmax2)
        }
        """,
    )


NEGATIVE = """
graph(%hs: f32[2,2,4]) {
  %getitem0 = getitem(%hs) {index=[0]} : f32[2,4]
  %getitem1 = getitem(%hs) {index=[1]} : f32[2,4]
  %sum0 = sum(%getitem0) {dim=(1,), keepdim=False} : f32[2]
  %sum1 = sum(%getitem1) {dim=(1,), keepdim=False} : f32[2]
  %stack0 = stack(%sum0, %sum1) {dim=0} : f32[2,2]
  %tanh0 = tanh(%getitem0) : f32[2,4]
  %exp0 = exp(%getitem1) : f32[2,4]
  %stack1 = stack(%tanh0, %exp0) {dim=0} : f32[2,2,4]
  %tanh1 = tanh(%getitem1) : f32[2,4]
  %tanh2 = tanh(%getitem0) : f32[2,4]
  %stack2 = stack(%tanh1, %tanh2) {dim=0} : f32[2,2,4]
  %stack3 = stack(%tanh0) {dim=0} : f32[1,2,4]
  %stack4 = stack(%tanh0, %tanh0) {dim=0} : f32[2,2,4]
  %stack5 = stack(%tanh0, %tanh1) {dim=1} : f32[2,2,4]
  return (%stack0, %stack1, %stack2, %stack3, %stack4, %stack5)
}
"""


def test_stacks_that_are_not_the_same_work_on_every_step_are_kept_and_say_why():
    check_pass("batch_steps", NEGATIVE)
    assert remarks_of("batch_steps", NEGATIVE) == [
        ("%stack0", False, "sum is not known to batch over a leading steps dim"),
        ("%stack1", False, "the steps differ at %tanh0 (tanh)"),
        ("%stack2", False, "the steps differ at %getitem1 (getitem)"),
        ("%stack3", False, "fewer than 2 steps"),
        ("%stack4", False, "every step is the same value"),
    ]  # stack5 (dim 1) is no candidate


def test_a_shared_operand_of_higher_rank_is_not_batched_and_does_not_crash():
    check_pass(
        "batch_steps",
        """
        graph(%hs: f32[2,4], %c: f32[3,4] param) {
          %getitem0 = getitem(%hs) {index=[0]} : f32[4]
          %add0 = add(%getitem0, %c) : f32[3,4]
          %getitem1 = getitem(%hs) {index=[1]} : f32[4]
          %add1 = add(%getitem1, %c) : f32[3,4]
          %stack0 = stack(%add0, %add1) {dim=0} : f32[2,3,4]
          return (%stack0)
        }
        """,
    )


def test_a_rejected_batch_leaves_no_nodes_behind():
    check_values(
        "batch_steps",
        """
        graph(%hs: f32[3,4], %c: f32[3,4] param) {
          %getitem0 = getitem(%hs) {index=[0]} : f32[4]
          %add0 = add(%getitem0, %c) : f32[3,4]
          %tanh0 = tanh(%add0) : f32[3,4]
          %getitem1 = getitem(%hs) {index=[1]} : f32[4]
          %add1 = add(%getitem1, %c) : f32[3,4]
          %tanh1 = tanh(%add1) : f32[3,4]
          %getitem2 = getitem(%hs) {index=[2]} : f32[4]
          %add2 = add(%getitem2, %c) : f32[3,4]
          %tanh2 = tanh(%add2) : f32[3,4]
          %stack0 = stack(%tanh0, %tanh1, %tanh2) {dim=0} : f32[3,3,4]
          return (%stack0)
        }
        """,
    )
