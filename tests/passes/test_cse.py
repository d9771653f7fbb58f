"""`cse`: equal pure computations and equal constants merge; random ops never do."""

from __future__ import annotations

from .helpers import check_pass


def test_equal_pure_nodes_and_constants_merge_transitively():
    # tanh1 merges into tanh0, which makes exp1 equal to exp0, and mul1 (commutative, with an
    # equal constant) equal to mul0: one run merges the whole chain.
    check_pass(
        "cse",
        """
        graph(%x: f32[2,3], %y: f32[2,3]) {
          %tanh0 = tanh(%x) : f32[2,3]
          %tanh1 = tanh(%x) : f32[2,3]
          %exp0 = exp(%tanh0) : f32[2,3]
          %exp1 = exp(%tanh1) : f32[2,3]
          %c0 = const() {fill=2.0} : f32[]
          %c1 = const() {fill=2.0} : f32[]
          %mul0 = mul(%exp0, %c0) : f32[2,3]
          %mul1 = mul(%c1, %exp1) : f32[2,3]
          %add0 = add(%mul0, %mul1) : f32[2,3]
          return (%add0)
        }
        """,
        """
        graph(%x: f32[2,3], %y: f32[2,3]) {
          %tanh0 = tanh(%x) : f32[2,3]
          %exp0 = exp(%tanh0) : f32[2,3]
          %c0 = const() {fill=2.0} : f32[]
          %mul0 = mul(%exp0, %c0) : f32[2,3]
          %add0 = add(%mul0, %mul0) : f32[2,3]
          return (%add0)
        }
        """,
    )


def test_commutative_ops_merge_in_either_order_others_do_not():
    check_pass(
        "cse",
        """
        graph(%x: f32[2,3], %y: f32[2,3]) {
          %add0 = add(%x, %y) : f32[2,3]
          %add1 = add(%y, %x) : f32[2,3]
          %sub0 = sub(%x, %y) : f32[2,3]
          %sub1 = sub(%y, %x) : f32[2,3]
          return (%add0, %add1, %sub0, %sub1)
        }
        """,
        """
        graph(%x: f32[2,3], %y: f32[2,3]) {
          %add0 = add(%x, %y) : f32[2,3]
          %sub0 = sub(%x, %y) : f32[2,3]
          %sub1 = sub(%y, %x) : f32[2,3]
          return (%add0, %add0, %sub0, %sub1)
        }
        """,
    )


def test_different_params_dtypes_or_values_do_not_merge():
    check_pass(
        "cse",
        """
        graph(%x: f32[2,3]) {
          %sum0 = sum(%x) {dim=(0,), keepdim=False} : f32[3]
          %sum1 = sum(%x) {dim=(1,), keepdim=False} : f32[2]
          %sum2 = sum(%x) {dim=(0,), keepdim=True} : f32[1,3]
          %c0 = const() {fill=2.0} : f32[]
          %c1 = const() {fill=2.0} : f64[]
          %c2 = const() {fill=3.0} : f32[]
          %c3 = const() {fill=2.0} : f32[1]
          %mul0 = mul(%x, %c0) : f32[2,3]
          %mul1 = mul(%x, %c1) : f64[2,3]
          %mul2 = mul(%x, %c2) : f32[2,3]
          %mul3 = mul(%x, %c3) : f32[2,3]
          return (%sum0, %sum1, %sum2, %mul0, %mul1, %mul2, %mul3)
        }
        """,
    )


def test_graph_inputs_and_parameters_of_the_same_type_do_not_merge():
    check_pass(
        "cse",
        """
        graph(%x: f32[3], %y: f32[3], %w: f32[3] param, %v: f32[3] param) {
          %tanh0 = tanh(%x) : f32[3]
          %tanh1 = tanh(%y) : f32[3]
          %tanh2 = tanh(%w) : f32[3]
          %tanh3 = tanh(%v) : f32[3]
          return (%tanh0, %tanh1, %tanh2, %tanh3)
        }
        """,
    )


def test_random_ops_are_never_merged():
    check_pass(
        "cse",
        """
        graph(%x: f32[2,3]) {
          %randn0 = randn() {dtype='float32', shape=(2, 3)} : f32[2,3]
          %randn1 = randn() {dtype='float32', shape=(2, 3)} : f32[2,3]
          %rand0 = rand() {dtype='float32', shape=(2, 3)} : f32[2,3]
          %rand1 = rand() {dtype='float32', shape=(2, 3)} : f32[2,3]
          %dropout_mask0 = dropout_mask() {dtype='float32', p=0.5, shape=(2, 3)} : f32[2,3]
          %dropout_mask1 = dropout_mask() {dtype='float32', p=0.5, shape=(2, 3)} : f32[2,3]
          %add0 = add(%randn0, %randn1) : f32[2,3]
          %add1 = add(%rand0, %rand1) : f32[2,3]
          %mul0 = mul(%x, %dropout_mask0) : f32[2,3]
          %mul1 = mul(%x, %dropout_mask1) : f32[2,3]
          return (%add0, %add1, %mul0, %mul1)
        }
        """,
    )
