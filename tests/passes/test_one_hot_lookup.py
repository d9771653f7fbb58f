"""`one_hot_lookup`: a product with one-hot rows becomes a row lookup (`embedding`), in the
names example's hoisted input projection too; compiled results and gradients against eager mode,
the interpreter and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.nn import functional as F
from tests.codegen.test_llvm_training import assert_matches_finite_differences
from tests.ir.programs import RNN

from .helpers import check_pass, remarks_of

PATTERN = "one_hot_lookup: matmul(one_hot(i), W) -> embedding(W, i)"

CAST = """
graph(%i: i64[2,3], %w: f32[4,5] param) {
  %one_hot0 = one_hot(%i) {dtype='int64', num_classes=4} : i64[2,3,4]
  %cast0 = cast(%one_hot0) {dtype='float32'} : f32[2,3,4]
  %matmul0 = matmul(%cast0, %w) : f32[2,3,5]
  return (%matmul0)
}
"""


def test_a_product_with_cast_one_hot_rows_becomes_a_row_lookup():
    check_pass(
        "one_hot_lookup",
        CAST,
        """
        graph(%i: i64[2,3], %w: f32[4,5] param) {
          %embedding0 = embedding(%w, %i) : f32[2,3,5]
          return (%embedding0)
        }
        """,
    )
    assert remarks_of("one_hot_lookup", CAST) == [("%matmul0", True, "4 classes")]


def test_a_float_one_hot_and_a_transposed_weight_slice():
    check_pass(
        "one_hot_lookup",
        """
        graph(%i: i64[3], %w: f32[5,6] param) {
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[6,5]
          %getitem0 = getitem(%transpose0) {index=[0:4]} : f32[4,5]
          %one_hot0 = one_hot(%i) {dtype='float32', num_classes=4} : f32[3,4]
          %matmul0 = matmul(%one_hot0, %getitem0) : f32[3,5]
          %sum0 = sum(%one_hot0) {dim=None, keepdim=False} : f32[]
          return (%matmul0, %sum0)
        }
        """,
        """
        graph(%i: i64[3], %w: f32[5,6] param) {
          %transpose0 = transpose(%w) {d0=0, d1=1} : f32[6,5]
          %getitem0 = getitem(%transpose0) {index=[0:4]} : f32[4,5]
          %one_hot0 = one_hot(%i) {dtype='float32', num_classes=4} : f32[3,4]
          %embedding0 = embedding(%getitem0, %i) : f32[3,5]
          %sum0 = sum(%one_hot0) {dim=None, keepdim=False} : f32[]
          return (%embedding0, %sum0)
        }
        """,
    )


def test_it_fires_in_a_loop_body():
    check_pass(
        "one_hot_lookup",
        """
        graph(%xs: i64[3,2], %h0: f32[2,4], %w: f32[5,4] param) {
          %loop0 = loop(%xs, %h0, %w) : f32[3,2,4] graph(%x: i64[2], %h: f32[2,4], %w_x: f32[5,4]) {
            %one_hot0 = one_hot(%x) {dtype='int64', num_classes=5} : i64[2,5]
            %cast0 = cast(%one_hot0) {dtype='float32'} : f32[2,5]
            %matmul0 = matmul(%cast0, %w_x) : f32[2,4]
            %add0 = add(%matmul0, %h) : f32[2,4]
            %tanh0 = tanh(%add0) : f32[2,4]
            return (%tanh0)
          }
          return (%loop0)
        }
        """,  # noqa: E501
        """
        graph(%xs: i64[3,2], %h0: f32[2,4], %w: f32[5,4] param) {
          %loop0 = loop(%xs, %h0, %w) : f32[3,2,4] graph(%x: i64[2], %h: f32[2,4], %w_x: f32[5,4]) {
            %embedding0 = embedding(%w_x, %x) : f32[2,4]
            %add0 = add(%embedding0, %h) : f32[2,4]
            %tanh0 = tanh(%add0) : f32[2,4]
            return (%tanh0)
          }
          return (%loop0)
        }
        """,  # noqa: E501
    )


BIASED = """
graph(%i: i64[2,3], %w: f32[4,5] param, %b: f32[5] param) {
  %one_hot0 = one_hot(%i) {dtype='float32', num_classes=4} : f32[2,3,4]
  %matmul0 = matmul(%one_hot0, %w) : f32[2,3,5]
  %add0 = add(%b, %matmul0) : f32[2,3,5]
  return (%add0)
}
"""


def test_a_bias_added_to_every_row_is_added_to_the_table():
    check_pass(
        "one_hot_lookup",
        BIASED,
        """
        graph(%i: i64[2,3], %w: f32[4,5] param, %b: f32[5] param) {
          %add1 = add(%w, %b) : f32[4,5]
          %embedding0 = embedding(%add1, %i) : f32[2,3,5]
          return (%embedding0)
        }
        """,
    )
    assert remarks_of("one_hot_lookup", BIASED) == [
        ("%matmul0", True, "4 classes, the bias added to the table")
    ]


def test_a_product_that_is_an_output_too_is_looked_up_once_without_the_bias():
    graph = BIASED.replace("return (%add0)", "return (%add0, %matmul0)")
    check_pass(
        "one_hot_lookup",
        graph,
        """
        graph(%i: i64[2,3], %w: f32[4,5] param, %b: f32[5] param) {
          %embedding0 = embedding(%w, %i) : f32[2,3,5]
          %add0 = add(%b, %embedding0) : f32[2,3,5]
          return (%add0, %embedding0)
        }
        """,
    )


@pytest.mark.parametrize(
    "other", ["f32[3,5]", "f32[2,1,5]", "f32[2,3,5]"], ids=["per-row", "per-step", "whole"]
)
def test_a_term_not_the_same_for_every_row_stays_after_the_lookup(other):
    graph = BIASED.replace("%b: f32[5]", f"%b: {other}")
    check_pass(
        "one_hot_lookup",
        graph,
        graph.replace(
            """  %one_hot0 = one_hot(%i) {dtype='float32', num_classes=4} : f32[2,3,4]
  %matmul0 = matmul(%one_hot0, %w) : f32[2,3,5]
  %add0 = add(%b, %matmul0)""",
            """  %embedding0 = embedding(%w, %i) : f32[2,3,5]
  %add0 = add(%b, %embedding0)""",
        ),
    )


NOT_FIRED = {
    "W not 2-D": (
        """
        graph(%i: i64[2], %w: f32[3,4,5] param) {
          %one_hot0 = one_hot(%i) {dtype='float32', num_classes=4} : f32[2,4]
          %matmul0 = matmul(%one_hot0, %w) : f32[3,2,5]
          return (%matmul0)
        }
        """,
        [("%matmul0", False, "W has shape [3, 4, 5], not 2-D")],
    ),
    "a float64 one-hot times float32 W": (
        """
        graph(%i: i64[2], %w: f32[4,5] param) {
          %one_hot0 = one_hot(%i) {dtype='float64', num_classes=4} : f64[2,4]
          %matmul0 = matmul(%one_hot0, %w) : f64[2,5]
          return (%matmul0)
        }
        """,
        [("%matmul0", False, "the lookup is f32[2,5], the product f64[2,5]")],
    ),
    "a cast to float64 times float32 W": (
        """
        graph(%i: i64[2], %w: f32[4,5] param) {
          %one_hot0 = one_hot(%i) {dtype='int64', num_classes=4} : i64[2,4]
          %cast0 = cast(%one_hot0) {dtype='float64'} : f64[2,4]
          %matmul0 = matmul(%cast0, %w) : f64[2,5]
          return (%matmul0)
        }
        """,
        [("%matmul0", False, "the lookup is f32[2,5], the product f64[2,5]")],
    ),
    # A one-hot of 6 classes cut to 4 is no one-hot: a value past the cut is a zero row of the
    # product, where a lookup would raise.
    "a one-hot cut to fewer classes": (
        """
        graph(%i: i64[2], %w: f32[4,5] param) {
          %one_hot0 = one_hot(%i) {dtype='float32', num_classes=6} : f32[2,6]
          %getitem0 = getitem(%one_hot0) {index=[:, 0:4]} : f32[2,4]
          %matmul0 = matmul(%getitem0, %w) : f32[2,5]
          return (%matmul0)
        }
        """,
        [],
    ),
}


@pytest.mark.parametrize("name", sorted(NOT_FIRED))
def test_it_does_not_fire(name):
    graph, remarks = NOT_FIRED[name]
    check_pass("one_hot_lookup", graph)
    assert remarks_of("one_hot_lookup", graph) == remarks


# ---- the names example's model: letter indices, one-hot inside -------------------------------

LETTERS, HIDDEN, CLASSES, T, B = 11, 6, 4, 5, 3


def names_loss(rnn: RNN, dtype=np.float32):
    """The names example's loss: the tutorial RNN over one-hot letters made from indices."""

    def loss(letters, labels):
        onehot = F.one_hot(letters, LETTERS).to(dtype)
        hidden = mytorch.zeros(letters.shape[1], HIDDEN, dtype=dtype)
        for t in range(letters.shape[0]):
            output, hidden = rnn(onehot[t], hidden)
        log_probs = nn.LogSoftmax(dim=1)(output)
        return nn.NLLLoss()(log_probs, labels), log_probs

    return loss


def names_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    letters = Tensor(rng.integers(0, LETTERS, (T, B)), dtype=np.int64, trainable=False)
    return letters, Tensor(rng.integers(0, CLASSES, B), dtype=np.int64, trainable=False)


def names_model(dtype=np.float32):
    mytorch.manual_seed(0)
    rnn = RNN(LETTERS, HIDDEN, CLASSES)
    for p in rnn.parameters():
        p.data = p.data.astype(dtype)
    return rnn


def test_the_hoisted_input_projection_becomes_a_lookup_and_explain_says_so():
    rnn = names_model()
    fn = mytorch.compile(names_loss(rnn))
    loss, _ = fn(*names_inputs())
    loss.backward()
    ops = fn.graph.op_counts()
    # (the other one_hot is NLLLoss's, of the labels, multiplied elementwise)
    assert ops["embedding"] == 1 and ops["one_hot"] == 1 and "cast" not in ops, str(fn.graph)
    (lookup,) = [n for n in fn.graph.nodes if n.op == "embedding"]
    assert lookup.inputs[0].op == "add" and lookup.inputs[0].shape == (LETTERS, HIDDEN)  # + bias
    assert [n.inputs[0].op for n in fn.graph.nodes if n.op == "matmul"] == ["getitem"]  # h2o
    assert fn.backward_graph.op_counts()["embedding_grad"] == 1, str(fn.backward_graph)
    report = str(mytorch.explain(names_loss(rnn), *names_inputs()))
    assert f"{PATTERN}: fired 1 of 1 candidates" in report
    assert "embedding x1" in report and "embedding_grad x1" in report


def test_compiled_results_and_gradients_match_eager_and_the_interpreter():
    rnn = names_model()
    inputs = names_inputs()
    results = {}
    for name, fn in (
        ("eager", names_loss(rnn)),
        ("llvm", mytorch.compile(names_loss(rnn), fullgraph=True)),
        ("numpy", mytorch.compile(names_loss(rnn), fullgraph=True, backend="numpy")),
    ):
        rnn.zero_grad()
        loss, log_probs = fn(*inputs)
        loss.backward()
        results[name] = [loss.data, log_probs.data] + [p.grad.copy() for p in rnn.parameters()]
        if name != "eager":
            assert "embedding" in fn.graph.op_counts(), str(fn.graph)
    for name in ("llvm", "numpy"):
        for k, (got, want) in enumerate(zip(results[name], results["eager"], strict=True)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name} {k}")


def test_compiled_gradients_match_finite_differences():
    rnn = names_model(np.float64)
    fn = names_loss(rnn, np.float64)
    compiled = mytorch.compile(fn, fullgraph=True)
    params = list(rnn.parameters())
    assert_matches_finite_differences(fn, compiled, names_inputs(), params, what="names")
    assert "embedding" in compiled.graph.op_counts(), str(compiled.graph)
