"""The default pipeline on RNN programs: the tutorial step fuses into one `rnn_cell`, and
sequence loops re-roll, so the optimized graph does not grow with the number of steps."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import nn
from mytorch.passes import PassManager, resolve_pipeline

from .helpers import RNN, cell_loop, tutorial_loop

RTOL, ATOL = 1e-5, 1e-6
SHORT, LONG = 12, 1000
BATCH = 2


def assert_same(got, want) -> None:
    got, want = (
        (got,) if not isinstance(got, tuple) else got,
        (want,) if not isinstance(want, tuple) else want,
    )
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=RTOL, atol=ATOL)


def test_the_tutorial_step_becomes_one_rnn_cell_and_no_cat():
    mytorch.manual_seed(0)
    rnn = RNN(12, 4, 3)
    x, h = mytorch.randn(1, 12), mytorch.randn(1, 4)
    traced = mytorch.trace(rnn, x, h)
    assert traced.op_counts()["cat"] == 1
    optimized = PassManager(resolve_pipeline("default")).run(traced)
    counts = optimized.op_counts()
    assert counts.get("rnn_cell") == 1 and "cat" not in counts and "tanh" not in counts

    fn = mytorch.compile(rnn, backend="numpy")
    assert_same(fn(x, h), rnn(x, h))
    assert str(fn.graph) == str(optimized)


def tutorial_case():
    rnn = RNN(12, 4, 3)
    return tutorial_loop(rnn), lambda T: (mytorch.randn(T, 1, 12), mytorch.zeros(1, 4))


def rnncell_case():
    cell = nn.RNNCell(3, 5)
    return cell_loop(cell), lambda T: (mytorch.randn(T, BATCH, 3), mytorch.randn(BATCH, 5))


def two_layer_case():
    rnn = nn.RNN(3, 5, num_layers=2)
    return rnn, lambda T: (mytorch.randn(T, BATCH, 3), mytorch.randn(2, BATCH, 5))


def relu_case():
    rnn = nn.RNN(3, 5, nonlinearity="relu")
    return rnn, lambda T: (mytorch.randn(T, BATCH, 3),)


CASES = {
    "tutorial loop": tutorial_case,
    "nn.RNNCell loop": rnncell_case,
    "nn.RNN 2 layers": two_layer_case,
    "nn.RNN relu": relu_case,
}


@pytest.mark.parametrize("case", CASES)
def test_the_optimized_sequence_graph_does_not_grow_with_the_steps(case):
    mytorch.manual_seed(0)
    program, make_inputs = CASES[case]()
    fn = mytorch.compile(program, backend="numpy")
    sizes = {}
    for T in (SHORT, LONG):
        inputs = make_inputs(T)
        got = fn(*inputs)
        with mytorch.no_grad():
            want = program(*inputs)
        assert_same(got, want)
        graph = fn.graph
        assert graph.inputs[0].shape[0] == T  # this signature's graph
        counts = graph.op_counts()
        assert counts.get("loop", 0) >= 1, str(graph)
        assert "cat" not in counts and "rnn_cell" not in counts and "rnn_step" not in counts
        sizes[T] = len(str(graph).splitlines())
    assert sizes[SHORT] == sizes[LONG]


def test_a_loop_with_the_recurrent_product_first_is_rerolled_too():
    mytorch.manual_seed(0)
    w_ih, w_hh, b = mytorch.randn(4, 4), mytorch.randn(4, 4), mytorch.randn(4)

    def recurrent_first(xs, h):
        for t in range(xs.shape[0]):
            h = mytorch.tanh(h @ w_hh.T + xs[t] @ w_ih.T + b)
        return h

    fn = mytorch.compile(recurrent_first, backend="numpy")
    sizes = []
    for steps in (3, SHORT):
        xs, h = mytorch.randn(steps, BATCH, 4), mytorch.randn(BATCH, 4)
        assert_same(fn(xs, h), recurrent_first(xs, h))
        sizes.append(len(str(fn.graph).splitlines()))
    assert sizes[0] == sizes[1]
