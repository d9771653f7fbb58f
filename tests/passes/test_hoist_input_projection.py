"""`hoist_input_projection`: the input products of a chain of cells become one product."""

from __future__ import annotations

import pytest

from .helpers import check_pass, remarks_of

CHAIN = """
graph(%xs: f32[3,2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
  %getitem0 = getitem(%xs) {index=[0]} : f32[2,3]
  %rnn_cell0 = rnn_cell(%getitem0, %h, %w_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
  %getitem1 = getitem(%xs) {index=[1]} : f32[2,3]
  %rnn_cell1 = rnn_cell(%getitem1, %rnn_cell0, %w_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
  %getitem2 = getitem(%xs) {index=[2]} : f32[2,3]
  %rnn_cell2 = rnn_cell(%getitem2, %rnn_cell1, %w_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
  return (%rnn_cell2)
}
"""  # noqa: E501


def test_a_chain_over_a_whole_sequence_projects_the_sequence_at_once():
    check_pass(
        "hoist_input_projection",
        CHAIN,
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %transpose0 = transpose(%w_ih) {d0=0, d1=1} : f32[3,4]
          %matmul0 = matmul(%xs, %transpose0) : f32[3,2,4]
          %add0 = add(%matmul0, %b) : f32[3,2,4]
          %getitem3 = getitem(%add0) {index=[0]} : f32[2,4]
          %rnn_step0 = rnn_step(%getitem3, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          %getitem4 = getitem(%add0) {index=[1]} : f32[2,4]
          %rnn_step1 = rnn_step(%getitem4, %rnn_step0, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          %getitem5 = getitem(%add0) {index=[2]} : f32[2,4]
          %rnn_step2 = rnn_step(%getitem5, %rnn_step1, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_step2)
        }
        """,  # noqa: E501
    )
    assert remarks_of("hoist_input_projection", CHAIN) == [("%rnn_cell0", True, "3 steps")]


def test_separate_step_inputs_are_stacked_and_used_states_stay_available():
    check_pass(
        "hoist_input_projection",
        """
        graph(%x0: f32[2,3], %x1: f32[2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %rnn_cell0 = rnn_cell(%x0, %h, %w_ih, %w_hh, %b) {nonlinearity='relu'} : f32[2,4]
          %rnn_cell1 = rnn_cell(%x1, %rnn_cell0, %w_ih, %w_hh, %b) {nonlinearity='relu'} : f32[2,4]
          %sum0 = sum(%rnn_cell0) {dim=None, keepdim=False} : f32[]
          return (%rnn_cell1, %sum0)
        }
        """,  # noqa: E501
        """
        graph(%x0: f32[2,3], %x1: f32[2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %stack0 = stack(%x0, %x1) {dim=0} : f32[2,2,3]
          %transpose0 = transpose(%w_ih) {d0=0, d1=1} : f32[3,4]
          %matmul0 = matmul(%stack0, %transpose0) : f32[2,2,4]
          %add0 = add(%matmul0, %b) : f32[2,2,4]
          %getitem0 = getitem(%add0) {index=[0]} : f32[2,4]
          %rnn_step0 = rnn_step(%getitem0, %h, %w_hh) {nonlinearity='relu'} : f32[2,4]
          %sum0 = sum(%rnn_step0) {dim=None, keepdim=False} : f32[]
          %getitem1 = getitem(%add0) {index=[1]} : f32[2,4]
          %rnn_step1 = rnn_step(%getitem1, %rnn_step0, %w_hh) {nonlinearity='relu'} : f32[2,4]
          return (%rnn_step1, %sum0)
        }
        """,  # noqa: E501
    )


NEGATIVE = {
    "a single cell": (
        """
        graph(%x: f32[2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %rnn_cell0 = rnn_cell(%x, %h, %w_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_cell0)
        }
        """,  # noqa: E501
        [("%rnn_cell0", False, "a single cell: no recurrence to hoist from")],
    ),
    "an input that depends on the recurrence": (
        """
        graph(%x0: f32[2,4], %h: f32[2,4], %w_ih: f32[4,4] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %rnn_cell0 = rnn_cell(%x0, %h, %w_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
          %tanh0 = tanh(%rnn_cell0) : f32[2,4]
          %rnn_cell1 = rnn_cell(%tanh0, %rnn_cell0, %w_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_cell1)
        }
        """,  # noqa: E501
        [("%rnn_cell0", False, "the input of step 1 depends on the recurrence")],
    ),
    "cells with different weights": (
        """
        graph(%x0: f32[2,3], %x1: f32[2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %v_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %rnn_cell0 = rnn_cell(%x0, %h, %w_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
          %rnn_cell1 = rnn_cell(%x1, %rnn_cell0, %v_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_cell1)
        }
        """,  # noqa: E501
        [
            ("%rnn_cell0", False, "a single cell: no recurrence to hoist from"),
            ("%rnn_cell1", False, "a single cell: no recurrence to hoist from"),
        ],
    ),
    "cells with different nonlinearities": (
        """
        graph(%x0: f32[2,3], %x1: f32[2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %rnn_cell0 = rnn_cell(%x0, %h, %w_ih, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
          %rnn_cell1 = rnn_cell(%x1, %rnn_cell0, %w_ih, %w_hh, %b) {nonlinearity='relu'} : f32[2,4]
          return (%rnn_cell1)
        }
        """,  # noqa: E501
        [
            ("%rnn_cell0", False, "a single cell: no recurrence to hoist from"),
            ("%rnn_cell1", False, "a single cell: no recurrence to hoist from"),
        ],
    ),
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_cells_that_cannot_be_hoisted_are_kept_and_say_why(case):
    text, remarks = NEGATIVE[case]
    check_pass("hoist_input_projection", text)
    assert remarks_of("hoist_input_projection", text) == remarks


LOOP = """
graph(%xs: f32[3,2,3], %h: f32[2,4], %w: f32[4,7] param, %b: f32[4] param) {
  %loop0 = loop(%xs, %h, %w, %b) : f32[3,2,4] graph(%x: f32[2,3], %h: f32[2,4], %w: f32[4,7], %b: f32[4]) {
    %getitem0 = getitem(%w) {index=[:, 0:3]} : f32[4,3]
    %getitem1 = getitem(%w) {index=[:, 3:7]} : f32[4,4]
    %rnn_cell0 = rnn_cell(%x, %h, %getitem0, %getitem1, %b) {nonlinearity='tanh'} : f32[2,4]
    return (%rnn_cell0)
  }
  return (%loop0)
}
"""  # noqa: E501


def test_a_loop_over_an_rnn_cell_projects_the_sequence_before_it():
    # What `roll` and `fuse_rnn_cell` make of the tutorial loop: the weights are computed in
    # the body from its invariants only, so they move out with the input projection.
    check_pass(
        "hoist_input_projection",
        LOOP,
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w: f32[4,7] param, %b: f32[4] param) {
          %getitem0 = getitem(%w) {index=[:, 0:3]} : f32[4,3]
          %getitem1 = getitem(%w) {index=[:, 3:7]} : f32[4,4]
          %transpose0 = transpose(%getitem0) {d0=0, d1=1} : f32[3,4]
          %matmul0 = matmul(%xs, %transpose0) : f32[3,2,4]
          %add0 = add(%matmul0, %b) : f32[3,2,4]
          %loop1 = loop(%add0, %h, %getitem1) : f32[3,2,4] graph(%x: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4]) {
            %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
            return (%rnn_step0)
          }
          return (%loop1)
        }
        """,  # noqa: E501
    )
    assert remarks_of("hoist_input_projection", LOOP) == [("%loop0", True, "")]


def test_a_loop_whose_cell_reads_more_than_the_step_input_is_kept():
    text = LOOP.replace(
        "%rnn_cell0 = rnn_cell(%x, %h,",
        "%neg0 = neg(%x) : f32[2,3]\n    %rnn_cell0 = rnn_cell(%neg0, %h,",
    )
    check_pass("hoist_input_projection", text)
    assert remarks_of("hoist_input_projection", text) == [
        ("%loop0", False, "the cell does not read the step's x and h")
    ]


def test_weights_taken_back_out_of_a_traced_transpose_are_the_weights_themselves():
    # nn.RNN traces `x @ W_ih.T`; `fuse_rnn_cell` takes W_ih back out of the body's W_ih.T, and
    # hoisting it must give the parameter, not transpose(transpose(W_ih)), in the dump.
    check_pass(
        "hoist_input_projection",
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %transpose0 = transpose(%w_ih) {d0=0, d1=1} : f32[3,4]
          %loop0 = loop(%xs, %h, %transpose0, %w_hh, %b) : f32[3,2,4] graph(%x: f32[2,3], %h: f32[2,4], %w_t: f32[3,4], %w_hh: f32[4,4], %b: f32[4]) {
            %transpose1 = transpose(%w_t) {d0=0, d1=1} : f32[4,3]
            %rnn_cell0 = rnn_cell(%x, %h, %transpose1, %w_hh, %b) {nonlinearity='tanh'} : f32[2,4]
            return (%rnn_cell0)
          }
          return (%loop0)
        }
        """,  # noqa: E501
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w_ih: f32[4,3] param, %w_hh: f32[4,4] param, %b: f32[4] param) {
          %transpose1 = transpose(%w_ih) {d0=0, d1=1} : f32[3,4]
          %matmul0 = matmul(%xs, %transpose1) : f32[3,2,4]
          %add0 = add(%matmul0, %b) : f32[3,2,4]
          %loop1 = loop(%add0, %h, %w_hh) : f32[3,2,4] graph(%x: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4]) {
            %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
            return (%rnn_step0)
          }
          return (%loop1)
        }
        """,  # noqa: E501
    )
