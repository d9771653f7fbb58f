"""`dce`: values no output depends on go; graph inputs and random ops always stay."""

from __future__ import annotations

from .helpers import check_pass


def test_dead_values_go_and_every_graph_input_stays():
    # %unused and %v have no live user, %neg0 reads %unused: the inputs stay, the op goes.
    check_pass(
        "dce",
        """
        graph(%x: f32[2,3], %unused: f32[4], %w: f32[3,3] param, %v: f32[5] param) {
          %tanh0 = tanh(%x) : f32[2,3]
          %exp0 = exp(%tanh0) : f32[2,3]
          %c0 = const() {fill=2.0} : f32[]
          %mul0 = mul(%exp0, %c0) : f32[2,3]
          %matmul0 = matmul(%x, %w) : f32[2,3]
          %neg0 = neg(%unused) : f32[4]
          %sigmoid0 = sigmoid(%tanh0) : f32[2,3]
          return (%sigmoid0)
        }
        """,
        """
        graph(%x: f32[2,3], %unused: f32[4], %w: f32[3,3] param, %v: f32[5] param) {
          %tanh0 = tanh(%x) : f32[2,3]
          %sigmoid0 = sigmoid(%tanh0) : f32[2,3]
          return (%sigmoid0)
        }
        """,
    )


def test_random_ops_survive_even_when_unused():
    # Drawing advances the generator, so an unused draw still changes later draws.
    check_pass(
        "dce",
        """
        graph(%x: f32[2,3]) {
          %randn0 = randn() {dtype='float32', shape=(2, 3)} : f32[2,3]
          %rand0 = rand() {dtype='float32', shape=(3,)} : f32[3]
          %dropout_mask0 = dropout_mask() {dtype='float32', p=0.5, shape=(2, 3)} : f32[2,3]
          %mul0 = mul(%x, %dropout_mask0) : f32[2,3]
          %add0 = add(%randn0, %x) : f32[2,3]
          %tanh0 = tanh(%x) : f32[2,3]
          return (%tanh0)
        }
        """,
        """
        graph(%x: f32[2,3]) {
          %randn0 = randn() {dtype='float32', shape=(2, 3)} : f32[2,3]
          %rand0 = rand() {dtype='float32', shape=(3,)} : f32[3]
          %dropout_mask0 = dropout_mask() {dtype='float32', p=0.5, shape=(2, 3)} : f32[2,3]
          %tanh0 = tanh(%x) : f32[2,3]
          return (%tanh0)
        }
        """,
    )


def test_a_graph_returning_an_input_keeps_only_the_inputs():
    check_pass(
        "dce",
        """
        graph(%x: f32[3], %w: f32[3] param) {
          %add0 = add(%x, %w) : f32[3]
          %tanh0 = tanh(%add0) : f32[3]
          return (%x)
        }
        """,
        """
        graph(%x: f32[3], %w: f32[3] param) {
          return (%x)
        }
        """,
    )


def test_a_graph_without_dead_code_is_unchanged():
    check_pass(
        "dce",
        """
        graph(%x: f32[2,3], %w: f32[3,3] param) {
          %matmul0 = matmul(%x, %w) : f32[2,3]
          %tanh0 = tanh(%matmul0) : f32[2,3]
          %sum0 = sum(%tanh0) {dim=None, keepdim=False} : f32[]
          return (%tanh0, %sum0)
        }
        """,
    )
