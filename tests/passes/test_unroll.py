"""`unroll`: a loop whose body the loop's gradient rule cannot take goes back to its steps."""

from __future__ import annotations

from .helpers import check_pass, remarks_of

GENERAL_BODY = """
graph(%xs: f32[3,2,3], %h: f32[2,4], %w: f32[4,7] param) {
  %loop0 = loop(%xs, %h, %w) : f32[3,2,4] graph(%x: f32[2,3], %h: f32[2,4], %w: f32[4,7]) {
    %cat0 = cat(%x, %h) {dim=1} : f32[2,7]
    %transpose0 = transpose(%w) {d0=0, d1=1} : f32[7,4]
    %matmul0 = matmul(%cat0, %transpose0) : f32[2,4]
    %tanh0 = tanh(%matmul0) : f32[2,4]
    return (%tanh0)
  }
  %getitem0 = getitem(%loop0) {index=[2]} : f32[2,4]
  return (%loop0, %getitem0)
}
"""  # noqa: E501


def test_a_loop_over_a_general_body_goes_back_to_its_steps():
    check_pass(
        "unroll",
        GENERAL_BODY,
        """
        graph(%xs: f32[3,2,3], %h: f32[2,4], %w: f32[4,7] param) {
          %getitem1 = getitem(%xs) {index=[0]} : f32[2,3]
          %cat0 = cat(%getitem1, %h) {dim=1} : f32[2,7]
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[7,4]
          %matmul0 = matmul(%cat0, %transpose0) : f32[2,4]
          %tanh0 = tanh(%matmul0) : f32[2,4]
          %getitem2 = getitem(%xs) {index=[1]} : f32[2,3]
          %cat1 = cat(%getitem2, %tanh0) {dim=1} : f32[2,7]
          %transpose1 = transpose(%w) {d0=0, d1=1} : f32[7,4]
          %matmul1 = matmul(%cat1, %transpose1) : f32[2,4]
          %tanh1 = tanh(%matmul1) : f32[2,4]
          %getitem3 = getitem(%xs) {index=[2]} : f32[2,3]
          %cat2 = cat(%getitem3, %tanh1) {dim=1} : f32[2,7]
          %transpose2 = transpose(%w) {d0=0, d1=1} : f32[7,4]
          %matmul2 = matmul(%cat2, %transpose2) : f32[2,4]
          %tanh2 = tanh(%matmul2) : f32[2,4]
          %stack0 = stack(%tanh0, %tanh1, %tanh2) {dim=0} : f32[3,2,4]
          return (%stack0, %tanh2)
        }
        """,
    )
    ((node, fired, reason),) = remarks_of("unroll", GENERAL_BODY)
    assert node == "%loop0" and fired and "no gradient rule for a body with 'cat'" in reason


def test_a_loop_over_an_rnn_step_stays():
    text = """
    graph(%p: f32[3,2,4], %h: f32[2,4], %w_hh: f32[4,4] param) {
      %loop0 = loop(%p, %h, %w_hh) : f32[3,2,4] graph(%x: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4]) {
        %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
        return (%rnn_step0)
      }
      return (%loop0)
    }
    """  # noqa: E501
    check_pass("unroll", text)
    assert remarks_of("unroll", text) == []
