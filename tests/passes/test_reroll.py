"""`reroll`: T chained `rnn_step`s over P[0..T-1] become one `loop` node with a one-step body."""

from __future__ import annotations

import pytest

from .helpers import check_pass, remarks_of

CHAIN = """
graph(%p: f32[3,2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
  %getitem0 = getitem(%p) {index=[0]} : f32[2,4]
  %rnn_step0 = rnn_step(%getitem0, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
  %getitem1 = getitem(%p) {index=[1]} : f32[2,4]
  %rnn_step1 = rnn_step(%getitem1, %rnn_step0, %w_hh) {nonlinearity='tanh'} : f32[2,4]
  %getitem2 = getitem(%p) {index=[2]} : f32[2,4]
  %rnn_step2 = rnn_step(%getitem2, %rnn_step1, %w_hh) {nonlinearity='tanh'} : f32[2,4]
  %sum0 = sum(%rnn_step1) {dim=None, keepdim=False} : f32[]
  return (%rnn_step2, %sum0)
}
"""


def test_a_chain_becomes_a_loop_and_used_states_are_read_from_it():
    check_pass(
        "reroll",
        CHAIN,
        """
        graph(%p: f32[3,2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
          %loop0 = loop(%p, %h, %w_hh) : f32[3,2,4] graph(%x: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4]) {
            %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
            return (%rnn_step0)
          }
          %getitem3 = getitem(%loop0) {index=[1]} : f32[2,4]
          %sum0 = sum(%getitem3) {dim=None, keepdim=False} : f32[]
          %getitem4 = getitem(%loop0) {index=[2]} : f32[2,4]
          return (%getitem4, %sum0)
        }
        """,  # noqa: E501
    )
    assert remarks_of("reroll", CHAIN) == [("%rnn_step0", True, "3 steps")]


def test_a_stack_of_every_state_is_the_loop_itself():
    check_pass(
        "reroll",
        """
        graph(%p: f32[2,2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
          %getitem0 = getitem(%p) {index=[0]} : f32[2,4]
          %rnn_step0 = rnn_step(%getitem0, %h, %w_hh) {nonlinearity='relu'} : f32[2,4]
          %getitem1 = getitem(%p) {index=[1]} : f32[2,4]
          %rnn_step1 = rnn_step(%getitem1, %rnn_step0, %w_hh) {nonlinearity='relu'} : f32[2,4]
          %stack0 = stack(%rnn_step0, %rnn_step1) {dim=0} : f32[2,2,4]
          return (%stack0, %rnn_step1)
        }
        """,
        """
        graph(%p: f32[2,2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
          %loop0 = loop(%p, %h, %w_hh) : f32[2,2,4] graph(%x: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4]) {
            %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='relu'} : f32[2,4]
            return (%rnn_step0)
          }
          %getitem3 = getitem(%loop0) {index=[1]} : f32[2,4]
          return (%loop0, %getitem3)
        }
        """,  # noqa: E501
    )


NEGATIVE = {
    "a single step": (
        """
        graph(%p: f32[1,2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
          %getitem0 = getitem(%p) {index=[0]} : f32[2,4]
          %rnn_step0 = rnn_step(%getitem0, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_step0)
        }
        """,
        "a single step: nothing to re-roll",
    ),
    "steps out of order": (
        """
        graph(%p: f32[2,2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
          %getitem0 = getitem(%p) {index=[1]} : f32[2,4]
          %rnn_step0 = rnn_step(%getitem0, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          %getitem1 = getitem(%p) {index=[0]} : f32[2,4]
          %rnn_step1 = rnn_step(%getitem1, %rnn_step0, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_step1)
        }
        """,
        "do not read %p[0..1] in order",
    ),
    "a chain over part of the sequence": (
        """
        graph(%p: f32[3,2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
          %getitem0 = getitem(%p) {index=[0]} : f32[2,4]
          %rnn_step0 = rnn_step(%getitem0, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          %getitem1 = getitem(%p) {index=[1]} : f32[2,4]
          %rnn_step1 = rnn_step(%getitem1, %rnn_step0, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_step1)
        }
        """,
        "do not read %p[0..1] in order, all of it",
    ),
    "step inputs that are not slices": (
        """
        graph(%x0: f32[2,4], %x1: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
          %rnn_step0 = rnn_step(%x0, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          %rnn_step1 = rnn_step(%x1, %rnn_step0, %w_hh) {nonlinearity='tanh'} : f32[2,4]
          return (%rnn_step1)
        }
        """,
        "not a slice of one tensor",
    ),
}


@pytest.mark.parametrize("case", NEGATIVE)
def test_chains_that_cannot_be_rerolled_are_kept_and_say_why(case):
    text, reason = NEGATIVE[case]
    check_pass("reroll", text)
    ((node, fired, why),) = remarks_of("reroll", text)
    assert node == "%rnn_step0" and not fired
    assert reason in why
