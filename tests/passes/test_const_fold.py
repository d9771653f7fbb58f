"""`const_fold`: pure ops on constants only, evaluated by the op's own reference implementation."""

from __future__ import annotations

from mytorch.ir import parse

from .helpers import apply_pass, check_pass, dedent


def test_a_chain_of_pure_ops_on_constants_folds_in_one_run():
    check_pass(
        "const_fold",
        """
        graph(%x: f32[2,3]) {
          %c0 = const() {fill=2.0} : f32[]
          %c1 = const() {value=[1.0, 2.0, 3.0]} : f32[3]
          %mul0 = mul(%c0, %c1) : f32[3]
          %add0 = add(%mul0, %c0) : f32[3]
          %reshape0 = reshape(%add0) {shape=(1, 3)} : f32[1,3]
          %add1 = add(%x, %reshape0) : f32[2,3]
          %cast0 = cast(%c1) {dtype='int64'} : i64[3]
          return (%add1, %cast0)
        }
        """,
        """
        graph(%x: f32[2,3]) {
          %c4 = const() {value=[[4.0, 6.0, 8.0]]} : f32[1,3]
          %add1 = add(%x, %c4) : f32[2,3]
          %c5 = const() {value=[1, 2, 3]} : i64[3]
          return (%add1, %c5)
        }
        """,
    )


def test_folding_a_scalar_keeps_its_shape():
    graph = parse(
        dedent(
            """
            graph(%x: f32[2]) {
              %c0 = const() {fill=2.0} : f32[]
              %neg0 = neg(%c0) : f32[]
              %stack0 = stack(%neg0, %neg0) {dim=0} : f32[2]
              %add0 = add(%x, %stack0) : f32[2]
              return (%add0, %neg0)
            }
            """
        )
    )
    result = apply_pass("const_fold", graph)  # verifies and checks the changed flag
    assert result.changed
    assert graph.op_counts() == {"const": 2, "add": 1}
    assert [o.type.shape for o in graph.outputs] == [(2,), ()]
    assert graph.outputs[1].is_const and graph.outputs[1].value.shape == ()


def test_parameters_are_never_folded():
    # Weights are read live at every call: mul(w, 2) must stay even though 2 is a constant.
    check_pass(
        "const_fold",
        """
        graph(%x: f32[2,3], %w: f32[3] param, %v: f32[3,3] param) {
          %c0 = const() {fill=2.0} : f32[]
          %c1 = const() {fill=0.5} : f32[3,3]
          %mul0 = mul(%w, %c0) : f32[3]
          %neg0 = neg(%w) : f32[3]
          %matmul0 = matmul(%c1, %v) : f32[3,3]
          %add0 = add(%x, %mul0) : f32[2,3]
          return (%add0, %neg0, %matmul0)
        }
        """,
    )


def test_graph_inputs_are_never_folded():
    check_pass(
        "const_fold",
        """
        graph(%x: f32[3]) {
          %c0 = const() {fill=1.0} : f32[3]
          %add0 = add(%x, %c0) : f32[3]
          return (%add0)
        }
        """,
    )


def test_random_ops_and_their_users_are_not_folded():
    check_pass(
        "const_fold",
        """
        graph(%x: f32[2,3]) {
          %randn0 = randn() {dtype='float32', shape=(2, 3)} : f32[2,3]
          %dropout_mask0 = dropout_mask() {dtype='float32', p=0.5, shape=(2, 3)} : f32[2,3]
          %rand0 = rand() {dtype='float32', shape=(3,)} : f32[3]
          %c0 = const() {fill=1.0} : f32[]
          %add0 = add(%randn0, %c0) : f32[2,3]
          %mul0 = mul(%add0, %dropout_mask0) : f32[2,3]
          %add1 = add(%mul0, %rand0) : f32[2,3]
          return (%add1)
        }
        """,
    )


def test_a_large_result_is_not_stored_as_a_constant():
    # broadcast_to of a scalar to 300x300 would store 90,000 floats: leave it to run time.
    check_pass(
        "const_fold",
        """
        graph(%x: f32[]) {
          %c0 = const() {fill=1.0} : f32[]
          %broadcast_to0 = broadcast_to(%c0) {shape=(300, 300)} : f32[300,300]
          %sum0 = sum(%broadcast_to0) {dim=None, keepdim=False} : f32[]
          %add0 = add(%x, %sum0) : f32[]
          return (%add0)
        }
        """,
    )
