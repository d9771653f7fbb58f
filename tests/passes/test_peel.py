"""`peel`: a loop whose carry starts at zeros runs its first step outside the loop, and
`simplify` folds the zeros away; values and gradients unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor
from mytorch.passes import PIPELINES
from tests.ir.programs import TUTORIAL_SIZES, tutorial_rnn

from .helpers import check_pass, remarks_of

LOOP = """
graph(%xs: f32[T,2,4], %w: f32[4,4]) {
  %c0 = const() {fill=0.0} : f32[2,4]
  %loop0 = loop(%xs, %c0, %w) : f32[T,2,4] graph(%x: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4]) {
    %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
    return (%rnn_step0)
  }
  READS
}
"""


def loop_graph(steps: int, reads: str) -> str:
    return LOOP.replace("T,", f"{steps},").replace("  READS", reads.strip("\n"))


def test_the_first_step_from_zeros_is_peeled_and_its_product_folded():
    before = loop_graph(
        3,
        """
  %getitem0 = getitem(%loop0) {index=[2]} : f32[2,4]
  %getitem1 = getitem(%loop0) {index=[0]} : f32[2,4]
  return (%getitem0, %getitem1)
""",
    )
    # step 0 is tanh(xs[0]); the loop runs steps 1 and 2 from it; the reads follow the steps.
    check_pass(
        "peel",
        before,
        """
        graph(%xs: f32[3,2,4], %w: f32[4,4]) {
          %getitem2 = getitem(%xs) {index=[0:1]} : f32[1,2,4]
          %reshape0 = reshape(%getitem2) {shape=(2, 4)} : f32[2,4]
          %getitem3 = getitem(%xs) {index=[1:3]} : f32[2,2,4]
          %tanh0 = tanh(%reshape0) : f32[2,4]
          %loop1 = loop(%getitem3, %tanh0, %w) : f32[2,2,4] graph(%x: f32[2,4], %h: f32[2,4], %w_hh: f32[4,4]) {
            %rnn_step0 = rnn_step(%x, %h, %w_hh) {nonlinearity='tanh'} : f32[2,4]
            return (%rnn_step0)
          }
          %getitem4 = getitem(%loop1) {index=[1]} : f32[2,4]
          return (%getitem4, %tanh0)
        }
        """,  # noqa: E501
    )
    assert remarks_of("peel", before) == [("%loop0", True, "3 steps")]


def test_a_loop_of_one_step_becomes_that_step():
    check_pass(
        "peel",
        loop_graph(
            1,
            """
  %getitem0 = getitem(%loop0) {index=[-1]} : f32[2,4]
  return (%getitem0)
""",
        ),
        """
        graph(%xs: f32[1,2,4], %w: f32[4,4]) {
          %getitem1 = getitem(%xs) {index=[0:1]} : f32[1,2,4]
          %reshape0 = reshape(%getitem1) {shape=(2, 4)} : f32[2,4]
          %tanh0 = tanh(%reshape0) : f32[2,4]
          return (%tanh0)
        }
        """,
    )


@pytest.mark.parametrize(
    "graph, reason",
    [
        # the steps read together (a graph output): joining the peeled step to them copies
        (loop_graph(3, "  return (%loop0)"), "its steps are read together: joining them copies"),
        (
            loop_graph(
                3,
                """
  %getitem0 = getitem(%loop0) {index=[0:2]} : f32[2,2,4]
  return (%getitem0)
""",
            ),
            "its steps are read together: joining them copies",
        ),
        # no product reads the carry: nothing to save
        (
            """
graph(%xs: f32[3,2,4]) {
  %c0 = const() {fill=0.0} : f32[2,4]
  %loop0 = loop(%xs, %c0) : f32[3,2,4] graph(%x: f32[2,4], %h: f32[2,4]) {
    %add0 = add(%x, %h) : f32[2,4]
    return (%add0)
  }
  %getitem0 = getitem(%loop0) {index=[2]} : f32[2,4]
  return (%getitem0)
}
""",
            "no product reads the carry",
        ),
    ],
    ids=["output", "slice-across", "no-product"],
)
def test_loops_it_does_not_peel(graph, reason):
    check_pass("peel", graph)
    assert remarks_of("peel", graph) == [("%loop0", False, reason)]


def test_a_loop_from_a_state_that_is_not_zeros_is_not_a_candidate():
    graph = loop_graph(
        3, "  %getitem0 = getitem(%loop0) {index=[2]} : f32[2,4]\n  return (%getitem0)"
    )
    graph = graph.replace(
        "%w: f32[4,4]) {\n  %c0 = const() {fill=0.0} : f32[2,4]", "%w: f32[4,4], %c0: f32[2,4]) {"
    )
    check_pass("peel", graph)
    assert remarks_of("peel", graph) == []


def test_a_reverse_loop_peels_its_last_step_into_the_cat_that_copies_its_steps():
    # The backward's reverse loop (sequences=2) from a zero carry, its steps copied into a cat:
    # step 2 runs first, outside; the cat takes the loop's steps and it; the reshape reads them
    # there (one copy, as before).
    check_pass(
        "peel",
        """
        graph(%hs: f32[3,2,4], %gs: f32[3,2,4], %w: f32[4,4], %d0: f32[1,2,4]) {
          %c0 = const() {fill=0.0} : f32[2,4]
          %loop0 = loop(%hs, %gs, %c0, %w) {reverse=True, sequences=2} : f32[3,2,4] graph(%h: f32[2,4], %g: f32[2,4], %carry: f32[2,4], %w_hh: f32[4,4]) {
            %matmul0 = matmul(%carry, %w_hh) : f32[2,4]
            %add0 = add(%g, %matmul0) : f32[2,4]
            %mul0 = mul(%add0, %h) : f32[2,4]
            return (%mul0)
          }
          %cat0 = cat(%d0, %loop0) {dim=0} : f32[4,2,4]
          %reshape0 = reshape(%loop0) {shape=(6, 4)} : f32[6,4]
          return (%cat0, %reshape0)
        }
        """,  # noqa: E501
        """
        graph(%hs: f32[3,2,4], %gs: f32[3,2,4], %w: f32[4,4], %d0: f32[1,2,4]) {
          %getitem0 = getitem(%hs) {index=[2:3]} : f32[1,2,4]
          %reshape1 = reshape(%getitem0) {shape=(2, 4)} : f32[2,4]
          %getitem1 = getitem(%gs) {index=[2:3]} : f32[1,2,4]
          %reshape2 = reshape(%getitem1) {shape=(2, 4)} : f32[2,4]
          %mul0 = mul(%reshape2, %reshape1) : f32[2,4]
          %reshape3 = reshape(%mul0) {shape=(1, 2, 4)} : f32[1,2,4]
          %getitem2 = getitem(%hs) {index=[0:2]} : f32[2,2,4]
          %getitem3 = getitem(%gs) {index=[0:2]} : f32[2,2,4]
          %loop1 = loop(%getitem2, %getitem3, %mul0, %w) {reverse=True, sequences=2} : f32[2,2,4] graph(%h: f32[2,4], %g: f32[2,4], %carry: f32[2,4], %w_hh: f32[4,4]) {
            %matmul0 = matmul(%carry, %w_hh) : f32[2,4]
            %add0 = add(%g, %matmul0) : f32[2,4]
            %mul0 = mul(%add0, %h) : f32[2,4]
            return (%mul0)
          }
          %cat2 = cat(%d0, %loop1, %reshape3) {dim=0} : f32[4,2,4]
          %getitem4 = getitem(%cat2) {index=[1:4]} : f32[3,2,4]
          %reshape0 = reshape(%getitem4) {shape=(6, 4)} : f32[6,4]
          return (%cat2, %reshape0)
        }
        """,  # noqa: E501
    )


# ---- the whole pipeline: a classifier's loop from h = 0 (the names example's shape) --------


def classifier(rnn):
    """The RNN over the letters from h = 0; a loss on the last step's output."""

    def loss(xs):
        h = mytorch.zeros(xs.shape[1], rnn.hidden_size, dtype=np.float64)
        for t in range(xs.shape[0]):
            out, h = rnn(xs[t], h)
        return (out * out).mean()

    return loss


def float64_rnn():
    rnn = tutorial_rnn(3)
    for p in rnn.parameters():
        p.data = p.data.astype(np.float64)
    return rnn


def gradients(fn, xs, params):
    for p in params:
        p.grad = np.zeros_like(p.data)
    loss = fn(xs)
    loss.backward()
    return float(loss.item()), [np.array(p.grad, copy=True) for p in params]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_a_peeled_classifier_matches_eager_and_finite_differences(steps, backend):
    rnn = float64_rnn()
    params = list(rnn.parameters())
    rng = np.random.default_rng(steps)
    xs = Tensor(rng.standard_normal((steps, 3, TUTORIAL_SIZES[0])), dtype=np.float64)
    fn = classifier(rnn)
    compiled = mytorch.compile(fn, backend=backend, fullgraph=True)
    loss, got = gradients(compiled, xs, params)
    want_loss, want = gradients(fn, xs, params)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)
    # the forward starts with tanh(xs[0]), not a product by zeros
    forward = str(compiled.graph)
    assert "tanh(" in forward and "const() {fill=0.0}" not in forward
    if steps > 1:  # (one step is no loop: roll leaves it as it is)
        assert "loop(%" in forward and f"f64[{steps - 1},3,4] graph(" in forward
    eps = 1e-6
    for p, g in zip(params, got, strict=True):
        for idx in list(np.ndindex(p.data.shape))[:6]:
            saved = p.data[idx]
            p.data[idx] = saved + eps
            up = float(compiled(xs).item())
            p.data[idx] = saved - eps
            down = float(compiled(xs).item())
            p.data[idx] = saved
            assert g[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)
    assert "peel" in PIPELINES["default"]
