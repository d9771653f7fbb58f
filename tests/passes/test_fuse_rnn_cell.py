"""`fuse_rnn_cell`: `act(x @ Wx.T + h @ Wh.T + biases)` becomes one `rnn_cell` node."""

from __future__ import annotations

import pytest

from .helpers import check_pass, check_values, remarks_of

HEADER = (
    "graph(%x: f32[2,3], %h: f32[2,4], %wx: f32[4,3] param, %wh: f32[4,4] param, "
    "%b: f32[4] param) {"
)
PRODUCTS = """
  %transpose0 = transpose(%wx) {d0=0, d1=1} : f32[3,4]
  %matmul0 = matmul(%x, %transpose0) : f32[2,4]
  %transpose1 = transpose(%wh) {d0=0, d1=1} : f32[4,4]
  %matmul1 = matmul(%h, %transpose1) : f32[2,4]
  %add0 = add(%matmul0, %matmul1) : f32[2,4]
"""


def cell(tail: str, header: str = HEADER) -> str:
    """The split form of a cell (two products and their sum) followed by `tail`."""
    return header + PRODUCTS.rstrip("\n") + tail + "\n}"


SPLIT_CELL = cell(
    """
  %add1 = add(%add0, %b) : f32[2,4]
  %tanh0 = tanh(%add1) : f32[2,4]
  return (%tanh0)"""
)


def test_the_split_cell_fuses_into_one_rnn_cell():
    check_pass(
        "fuse_rnn_cell",
        SPLIT_CELL,
        HEADER
        + """
  %rnn_cell0 = rnn_cell(%x, %h, %wx, %wh, %b) {nonlinearity='tanh'} : f32[2,4]
  return (%rnn_cell0)
}""",
    )
    assert remarks_of("fuse_rnn_cell", SPLIT_CELL) == [("%tanh0", True, "")]


def test_rnncell_steps_with_two_biases_and_relu_fuse_and_share_the_bias_sum():
    # nn.RNNCell's shape: ((x @ W_ih.T + b_ih) + h @ W_hh.T) + b_hh, two steps.
    check_pass(
        "fuse_rnn_cell",
        """
        graph(%x0: f32[2,3], %x1: f32[2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %b_ih: f32[4] param, %w_hh: f32[4,4] param, %b_hh: f32[4] param) {
          %transpose0 = transpose(%w_ih) {d0=0, d1=1} : f32[3,4]
          %matmul0 = matmul(%x0, %transpose0) : f32[2,4]
          %add0 = add(%matmul0, %b_ih) : f32[2,4]
          %transpose1 = transpose(%w_hh) {d0=0, d1=1} : f32[4,4]
          %matmul1 = matmul(%h, %transpose1) : f32[2,4]
          %add1 = add(%add0, %matmul1) : f32[2,4]
          %add2 = add(%add1, %b_hh) : f32[2,4]
          %relu0 = relu(%add2) : f32[2,4]
          %matmul2 = matmul(%x1, %transpose0) : f32[2,4]
          %add3 = add(%matmul2, %b_ih) : f32[2,4]
          %matmul3 = matmul(%relu0, %transpose1) : f32[2,4]
          %add4 = add(%add3, %matmul3) : f32[2,4]
          %add5 = add(%add4, %b_hh) : f32[2,4]
          %relu1 = relu(%add5) : f32[2,4]
          return (%relu1)
        }
        """,  # noqa: E501
        """
        graph(%x0: f32[2,3], %x1: f32[2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %b_ih: f32[4] param, %w_hh: f32[4,4] param, %b_hh: f32[4] param) {
          %add6 = add(%b_ih, %b_hh) : f32[4]
          %rnn_cell0 = rnn_cell(%x0, %h, %w_ih, %w_hh, %add6) {nonlinearity='relu'} : f32[2,4]
          %rnn_cell1 = rnn_cell(%x1, %rnn_cell0, %w_ih, %w_hh, %add6) {nonlinearity='relu'} : f32[2,4]
          return (%rnn_cell1)
        }
        """,  # noqa: E501
    )


def test_no_bias_and_untransposed_weights_get_a_zero_bias_and_transposes():
    check_pass(
        "fuse_rnn_cell",
        """
        graph(%x: f32[2,3], %h: f32[2,4], %u: f32[3,4] param, %v: f32[4,4] param) {
          %matmul0 = matmul(%x, %u) : f32[2,4]
          %matmul1 = matmul(%h, %v) : f32[2,4]
          %add0 = add(%matmul0, %matmul1) : f32[2,4]
          %tanh0 = tanh(%add0) : f32[2,4]
          return (%tanh0)
        }
        """,
        """
        graph(%x: f32[2,3], %h: f32[2,4], %u: f32[3,4] param, %v: f32[4,4] param) {
          %transpose0 = transpose(%u) {d0=0, d1=1} : f32[4,3]
          %transpose1 = transpose(%v) {d0=0, d1=1} : f32[4,4]
          %c0 = const() {fill=0.0} : f32[4]
          %rnn_cell0 = rnn_cell(%x, %h, %transpose0, %transpose1, %c0) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_cell0)
        }
        """,  # noqa: E501
    )


NEGATIVE = {
    "the pre-activation sum escapes": (
        cell(
            """
  %add1 = add(%add0, %b) : f32[2,4]
  %tanh0 = tanh(%add1) : f32[2,4]
  %neg0 = neg(%add1) : f32[2,4]
  return (%tanh0, %neg0)"""
        ),
        "another user",
    ),
    "an inner sum escapes": (
        cell(
            """
  %add1 = add(%add0, %b) : f32[2,4]
  %tanh0 = tanh(%add1) : f32[2,4]
  %neg0 = neg(%add0) : f32[2,4]
  return (%tanh0, %neg0)"""
        ),
        "single-use products, not 2",
    ),
    "a product escapes": (
        cell(
            """
  %add1 = add(%add0, %b) : f32[2,4]
  %tanh0 = tanh(%add1) : f32[2,4]
  %neg0 = neg(%matmul1) : f32[2,4]
  return (%tanh0, %neg0)"""
        ),
        "single-use products, not 2",
    ),
    "a bias of the wrong shape": (
        cell(
            """
  %add1 = add(%add0, %b) : f32[2,4]
  %tanh0 = tanh(%add1) : f32[2,4]
  return (%tanh0)""",
            header=HEADER.replace("%b: f32[4]", "%b: f32[1,4]"),
        ),
        "term %b of shape (1, 4) is not a (4,) bias",
    ),
    "a bias of another dtype": (
        cell(
            """
  %add1 = add(%add0, %b) : f64[2,4]
  %tanh0 = tanh(%add1) : f64[2,4]
  return (%tanh0)""",
            header=HEADER.replace("%b: f32[4]", "%b: f64[4]"),
        ),
        "different dtypes",
    ),
    "one product only": (
        """
        graph(%x: f32[2,3], %wx: f32[4,3] param, %b: f32[4] param) {
          %transpose0 = transpose(%wx) {d0=0, d1=1} : f32[3,4]
          %matmul0 = matmul(%x, %transpose0) : f32[2,4]
          %add0 = add(%matmul0, %b) : f32[2,4]
          %tanh0 = tanh(%add0) : f32[2,4]
          return (%tanh0)
        }
        """,
        "1 single-use products, not 2",
    ),
    "no sum under the activation": (
        cell(
            """
  %tanh0 = tanh(%matmul0) : f32[2,4]
  return (%tanh0, %add0)"""
        ),
        "the tanh input is matmul, not add",
    ),
    "a 3-D product": (
        """
        graph(%x: f32[5,2,3], %h: f32[2,4], %wx: f32[4,3] param, %wh: f32[4,4] param) {
          %transpose0 = transpose(%wx) {d0=0, d1=1} : f32[3,4]
          %matmul0 = matmul(%x, %transpose0) : f32[5,2,4]
          %transpose1 = transpose(%wh) {d0=0, d1=1} : f32[4,4]
          %matmul1 = matmul(%h, %transpose1) : f32[2,4]
          %add0 = add(%matmul0, %matmul1) : f32[5,2,4]
          %tanh0 = tanh(%add0) : f32[5,2,4]
          return (%tanh0)
        }
        """,
        "not 2-D",
    ),
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_cells_outside_the_pattern_are_kept_and_say_why(case):
    text, reason = NEGATIVE[case]
    check_pass("fuse_rnn_cell", text)
    ((node, fired, why),) = remarks_of("fuse_rnn_cell", text)
    assert node == "%tanh0" and not fired
    assert reason in why


def test_other_activations_are_not_candidates():
    text = cell(
        """
  %sigmoid0 = sigmoid(%add0) : f32[2,4]
  return (%sigmoid0)"""
    )
    check_pass("fuse_rnn_cell", text)
    assert remarks_of("fuse_rnn_cell", text) == []


def test_a_cell_whose_intermediate_is_returned_is_kept():
    check_pass(
        "fuse_rnn_cell",
        cell(
            """
  %add1 = add(%add0, %b) : f32[2,4]
  %tanh0 = tanh(%add1) : f32[2,4]
  return (%tanh0, %add1)"""
        ),
    )


def test_products_that_only_broadcast_together_are_kept():
    check_pass(
        "fuse_rnn_cell",
        """
        graph(%x: f32[1,3], %h: f32[2,4], %wx: f32[4,3] param, %wh: f32[4,4] param, %b: f32[4] param) {
          %transpose0 = transpose(%wx) {d0=0, d1=1} : f32[3,4]
          %matmul0 = matmul(%x, %transpose0) : f32[1,4]
          %transpose1 = transpose(%wh) {d0=0, d1=1} : f32[4,4]
          %matmul1 = matmul(%h, %transpose1) : f32[2,4]
          %add0 = add(%matmul0, %matmul1) : f32[2,4]
          %add1 = add(%add0, %b) : f32[2,4]
          %tanh0 = tanh(%add1) : f32[2,4]
          return (%tanh0)
        }
        """,  # noqa: E501
    )


def test_the_recurrent_product_may_come_first():
    result = check_values(
        "fuse_rnn_cell",
        HEADER
        + """
  %transpose0 = transpose(%wh) {d0=0, d1=1} : f32[4,4]
  %matmul0 = matmul(%h, %transpose0) : f32[2,4]
  %transpose1 = transpose(%wx) {d0=0, d1=1} : f32[3,4]
  %matmul1 = matmul(%x, %transpose1) : f32[2,4]
  %add0 = add(%matmul0, %matmul1) : f32[2,4]
  %add1 = add(%add0, %b) : f32[2,4]
  %tanh0 = tanh(%add1) : f32[2,4]
  return (%tanh0)
}""",
    )
    (fused,) = result.graph.nodes
    assert fused.op == "rnn_cell"
    assert [i.name for i in fused.inputs] == ["x", "h", "wx", "wh", "b"]


def test_in_a_loop_body_the_product_of_the_state_is_the_recurrent_one():
    # Both weights are square, so only the loop tells which operand is the state: its input h.
    result = check_values(
        "fuse_rnn_cell",
        """
        graph(%xs: f32[3,2,4], %h0: f32[2,4], %wx: f32[4,4] param, %wh: f32[4,4] param) {
          %loop0 = loop(%xs, %h0, %wx, %wh) : f32[3,2,4] graph(%x: f32[2,4], %h: f32[2,4], %wx: f32[4,4], %wh: f32[4,4]) {
            %transpose0 = transpose(%wh) {d0=0, d1=1} : f32[4,4]
            %matmul0 = matmul(%h, %transpose0) : f32[2,4]
            %transpose1 = transpose(%wx) {d0=0, d1=1} : f32[4,4]
            %matmul1 = matmul(%x, %transpose1) : f32[2,4]
            %add0 = add(%matmul0, %matmul1) : f32[2,4]
            %tanh0 = tanh(%add0) : f32[2,4]
            return (%tanh0)
          }
          return (%loop0)
        }
        """,  # noqa: E501
    )
    (loop,) = result.graph.nodes
    (cell,) = [n for n in loop.params["body"].nodes if n.op == "rnn_cell"]
    assert [i.name for i in cell.inputs[:2]] == ["x", "h"]
