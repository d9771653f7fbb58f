"""`split_concat`: `cat([x, h], -1) @ W.T` becomes `x @ Wx.T + h @ Wh.T` with slices of W."""

from __future__ import annotations

import pytest

from .helpers import check_pass, check_values, remarks_of

TUTORIAL_CELL = """
graph(%x: f32[1,3], %h: f32[1,2], %w: f32[2,5] param, %b: f32[2] param) {
  %cat0 = cat(%x, %h) {dim=1} : f32[1,5]
  %transpose0 = transpose(%w) {d0=0, d1=1} : f32[5,2]
  %matmul0 = matmul(%cat0, %transpose0) : f32[1,2]
  %add0 = add(%matmul0, %b) : f32[1,2]
  %tanh0 = tanh(%add0) : f32[1,2]
  return (%tanh0)
}
"""


def test_the_tutorial_cell_splits_into_two_products_of_weight_slices():
    check_pass(
        "split_concat",
        TUTORIAL_CELL,
        """
        graph(%x: f32[1,3], %h: f32[1,2], %w: f32[2,5] param, %b: f32[2] param) {
          %getitem0 = getitem(%w) {index=[:, 0:3]} : f32[2,3]
          %transpose1 = transpose(%getitem0) {d0=0, d1=1} : f32[3,2]
          %matmul1 = matmul(%x, %transpose1) : f32[1,2]
          %getitem1 = getitem(%w) {index=[:, 3:5]} : f32[2,2]
          %transpose2 = transpose(%getitem1) {d0=0, d1=1} : f32[2,2]
          %matmul2 = matmul(%h, %transpose2) : f32[1,2]
          %add1 = add(%matmul1, %matmul2) : f32[1,2]
          %add0 = add(%add1, %b) : f32[1,2]
          %tanh0 = tanh(%add0) : f32[1,2]
          return (%tanh0)
        }
        """,
    )
    assert remarks_of("split_concat", TUTORIAL_CELL) == [("%cat0", True, "")]


def test_three_pieces_and_an_untransposed_weight_take_row_slices():
    check_pass(
        "split_concat",
        """
        graph(%a: f32[2,1], %b: f32[2,2], %c: f32[2,3], %w: f32[6,4] param) {
          %cat0 = cat(%a, %b, %c) {dim=1} : f32[2,6]
          %matmul0 = matmul(%cat0, %w) : f32[2,4]
          return (%matmul0)
        }
        """,
        """
        graph(%a: f32[2,1], %b: f32[2,2], %c: f32[2,3], %w: f32[6,4] param) {
          %getitem0 = getitem(%w) {index=[0:1]} : f32[1,4]
          %matmul1 = matmul(%a, %getitem0) : f32[2,4]
          %getitem1 = getitem(%w) {index=[1:3]} : f32[2,4]
          %matmul2 = matmul(%b, %getitem1) : f32[2,4]
          %add0 = add(%matmul1, %matmul2) : f32[2,4]
          %getitem2 = getitem(%w) {index=[3:6]} : f32[3,4]
          %matmul3 = matmul(%c, %getitem2) : f32[2,4]
          %add1 = add(%add0, %matmul3) : f32[2,4]
          return (%add1)
        }
        """,
    )


def test_steps_sharing_a_weight_share_its_slices():
    check_pass(
        "split_concat",
        """
        graph(%x0: f32[1,3], %x1: f32[1,3], %h: f32[1,2], %w: f32[2,5] param) {
          %cat0 = cat(%x0, %h) {dim=1} : f32[1,5]
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[5,2]
          %matmul0 = matmul(%cat0, %transpose0) : f32[1,2]
          %tanh0 = tanh(%matmul0) : f32[1,2]
          %cat1 = cat(%x1, %tanh0) {dim=1} : f32[1,5]
          %matmul1 = matmul(%cat1, %transpose0) : f32[1,2]
          return (%matmul1)
        }
        """,
        """
        graph(%x0: f32[1,3], %x1: f32[1,3], %h: f32[1,2], %w: f32[2,5] param) {
          %getitem0 = getitem(%w) {index=[:, 0:3]} : f32[2,3]
          %transpose1 = transpose(%getitem0) {d0=0, d1=1} : f32[3,2]
          %matmul2 = matmul(%x0, %transpose1) : f32[1,2]
          %getitem1 = getitem(%w) {index=[:, 3:5]} : f32[2,2]
          %transpose2 = transpose(%getitem1) {d0=0, d1=1} : f32[2,2]
          %matmul3 = matmul(%h, %transpose2) : f32[1,2]
          %add0 = add(%matmul2, %matmul3) : f32[1,2]
          %tanh0 = tanh(%add0) : f32[1,2]
          %matmul4 = matmul(%x1, %transpose1) : f32[1,2]
          %matmul5 = matmul(%tanh0, %transpose2) : f32[1,2]
          %add1 = add(%matmul4, %matmul5) : f32[1,2]
          return (%add1)
        }
        """,
    )


def test_a_weight_used_both_transposed_and_not_gets_the_right_slices():
    result = check_values(
        "split_concat",
        """
        graph(%a: f32[1,2], %b: f32[1,2], %w: f32[4,4] param) {
          %cat0 = cat(%a, %b) {dim=1} : f32[1,4]
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[4,4]
          %matmul0 = matmul(%cat0, %transpose0) : f32[1,4]
          %cat1 = cat(%b, %a) {dim=1} : f32[1,4]
          %matmul1 = matmul(%cat1, %w) : f32[1,4]
          return (%matmul0, %matmul1)
        }
        """,
    )
    assert result.changed and "cat" not in result.graph.op_counts()


NEGATIVE = {
    "cat with a second user": (
        """
        graph(%x: f32[1,3], %h: f32[1,2], %w: f32[2,5] param) {
          %cat0 = cat(%x, %h) {dim=1} : f32[1,5]
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[5,2]
          %matmul0 = matmul(%cat0, %transpose0) : f32[1,2]
          %sum0 = sum(%cat0) {dim=None, keepdim=False} : f32[]
          return (%matmul0, %sum0)
        }
        """,
        "2 users",
    ),
    "cat on dim 0": (
        """
        graph(%x: f32[1,3], %h: f32[1,3], %w: f32[2,3] param) {
          %cat0 = cat(%x, %h) {dim=0} : f32[2,3]
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[3,2]
          %matmul0 = matmul(%cat0, %transpose0) : f32[2,2]
          return (%matmul0)
        }
        """,
        "dim is 0",
    ),
    "cat as the right operand": (
        """
        graph(%x: f32[1,3], %h: f32[1,2], %w: f32[5,1] param) {
          %cat0 = cat(%x, %h) {dim=1} : f32[1,5]
          %matmul0 = matmul(%w, %cat0) : f32[5,5]
          return (%matmul0)
        }
        """,
        "not the left operand of a matmul",
    ),
    "cat not feeding a matmul": (
        """
        graph(%x: f32[1,3], %h: f32[1,2]) {
          %cat0 = cat(%x, %h) {dim=1} : f32[1,5]
          %tanh0 = tanh(%cat0) : f32[1,5]
          return (%tanh0)
        }
        """,
        "(tanh)",
    ),
    "a 1-D right operand": (
        """
        graph(%x: f32[1,3], %h: f32[1,2], %v: f32[5] param) {
          %cat0 = cat(%x, %h) {dim=1} : f32[1,5]
          %matmul0 = matmul(%cat0, %v) : f32[1]
          return (%matmul0)
        }
        """,
        "not 2-D",
    ),
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_cats_outside_the_pattern_are_kept_and_say_why(case):
    text, reason = NEGATIVE[case]
    check_pass("split_concat", text)
    ((node, fired, why),) = remarks_of("split_concat", text)
    assert node == "%cat0" and not fired
    assert reason in why


def test_a_cat_that_is_also_returned_is_kept():
    check_pass(
        "split_concat",
        """
        graph(%x: f32[1,3], %h: f32[1,2], %w: f32[2,5] param) {
          %cat0 = cat(%x, %h) {dim=1} : f32[1,5]
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[5,2]
          %matmul0 = matmul(%cat0, %transpose0) : f32[1,2]
          return (%matmul0, %cat0)
        }
        """,
    )
