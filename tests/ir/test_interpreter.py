"""Differential tests: the numpy reference interpreter and `mytorch.compile(backend="numpy")`
compute what eager mode computes, for every registry op and for whole recurrent models."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.codegen import BACKENDS
from mytorch.ir import verify
from mytorch.ir.interpreter import run
from mytorch.ir.trace import trace_call
from mytorch.ops import OPS

from .op_cases import CASES, IRCase
from .programs import mlp, sequence_inputs, tutorial_rnn, unrolled

RTOL, ATOL = 1e-5, 1e-6
SEED = 1234


def assert_same(actual, expected, what: str) -> None:
    """Same shape, dtype and values (float32: rtol 1e-5)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


def trace_with_params(fn, *args):
    """The traced graph and the tensors behind its `param` inputs, in graph-input order."""
    result = trace_call(fn, args, {}, name="program", param_names={})
    verify(result.graph)
    public = mytorch.trace(fn, *args)  # the same ops, though a Module's params get its names
    assert [n.op for n in public.nodes] == [n.op for n in result.graph.nodes]
    return result.graph, result.params


def leaves(out) -> list[Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def seeded(fn, *args):
    mytorch.manual_seed(SEED)
    return fn(*args)


# ---- every op ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_interpreter_matches_eager_for_every_op(case: IRCase):
    args = case.tensors()
    expected = seeded(case.fn, *args)
    graph = mytorch.trace(case.fn, *args)
    assert case.op in graph.op_counts(), f"{case.op} was not recorded:\n{graph}"
    assert [i.op for i in graph.inputs] == ["input"] * len(args)
    (actual,) = seeded(run, graph, [a.data for a in args])
    assert_same(actual, expected.data, f"interpreter, {case.id}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_compiled_numpy_matches_eager_for_every_op(case: IRCase):
    args = case.tensors()
    expected = seeded(case.fn, *args)
    compiled = mytorch.compile(case.fn, backend="numpy", passes=[])
    actual = seeded(compiled, *args)
    assert isinstance(actual, Tensor)
    assert_same(actual.data, expected.data, f"compiled, {case.id}")
    if OPS[case.op].pure:
        assert_same(compiled(*args).data, expected.data, f"second call, {case.id}")


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if OPS[c.op].differentiable and any(a.dtype.kind == "f" for a in c.inputs)],
    ids=str,
)
def test_compiled_gradients_match_eager_for_every_op(case: IRCase):
    eager_args, compiled_args = case.tensors(), case.tensors()
    eager_out = case.fn(*eager_args)
    if eager_out.dtype.kind != "f":
        pytest.skip("integer output: no gradient")
    weights = np.random.default_rng(0).standard_normal(eager_out.shape).astype(eager_out.dtype)
    (eager_out * Tensor(weights, trainable=False)).sum().backward()
    compiled_out = mytorch.compile(case.fn, backend="numpy", passes=[])(*compiled_args)
    (compiled_out * Tensor(weights, trainable=False)).sum().backward()
    for k, (e, c) in enumerate(zip(eager_args, compiled_args, strict=True)):
        assert_same(c.grad, e.grad, f"gradient of input {k}, {case.id}")


def test_the_numpy_backend_returns_fresh_arrays():
    # As native code does: a caller may add into an output (a gradient becomes `.grad`).
    graph = mytorch.trace(lambda x: (x, x.T, x.T), Tensor(np.ones((2, 3), np.float32)))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    same, view, view_again = BACKENDS["numpy"](graph)([x])
    assert same is not x and not np.shares_memory(view, x)
    assert not np.shares_memory(view, view_again)
    np.testing.assert_array_equal(view, x.T)


def test_random_ops_follow_the_seed_not_the_graph():
    # Impure ops draw at run time: two runs under different seeds differ, under one seed agree.
    def noisy(x):
        return x + mytorch.randn(3, 4)

    x = mytorch.zeros(3, 4)
    graph = mytorch.trace(noisy, x)
    (first,) = seeded(run, graph, [x.data])
    (again,) = seeded(run, graph, [x.data])
    mytorch.manual_seed(SEED + 1)
    (other,) = run(graph, [x.data])
    assert_same(first, again, "same seed")
    assert not np.allclose(first, other), "a different seed gave the same random values"


# ---- whole programs --------------------------------------------------------------------------


def check_program(fn, *args, params=()):
    """Eager vs interpreter vs compiled numpy, values then gradients of params and inputs."""
    expected = leaves(fn(*args))
    graph, traced_params = trace_with_params(fn, *args)
    params = list(params)
    assert {id(p) for p in traced_params} == {id(p) for p in params}, "wrong param inputs"
    assert [i.op for i in graph.inputs] == ["input"] * len(args) + ["param"] * len(params)
    actual = run(graph, [a.data for a in args] + [p.data for p in traced_params])
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_same(a, e.data, f"interpreter output {k}")
    compiled = mytorch.compile(fn, backend="numpy", passes=[])
    outs = leaves(compiled(*args))
    for k, (a, e) in enumerate(zip(outs, expected, strict=True)):
        assert_same(a.data, e.data, f"compiled output {k}")
    check_gradients(fn, compiled, args, params)
    return graph


def check_gradients(fn, compiled, args, params):
    """The same loss through eager and compiled code gives the same gradients."""
    trainable = [t for t in list(args) + list(params) if t.trainable]

    def loss_of(outs):
        return sum((o * o).sum() for o in leaves(outs) if o.dtype.kind == "f")

    for t in trainable:
        t.zero_grad()
    loss_of(fn(*args)).backward()
    eager = [t.grad.copy() for t in trainable]
    for t in trainable:
        t.zero_grad()
    loss_of(compiled(*args)).backward()
    for k, (t, e) in enumerate(zip(trainable, eager, strict=True)):
        assert np.any(e != 0), f"gradient {k} is zero in eager mode: a useless check"
        assert_same(t.grad, e, f"gradient of trainable tensor {k} {t.shape}")


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_tutorial_rnn_over_time_steps(steps):
    rnn = tutorial_rnn()
    xs, hidden = sequence_inputs(steps)
    graph = check_program(unrolled(rnn, steps), xs, hidden, params=rnn.parameters())
    counts = graph.op_counts()
    assert counts["cat"] == steps and counts["tanh"] == steps, counts


def test_tutorial_rnn_with_trainable_inputs():
    rnn = tutorial_rnn()
    xs, hidden = sequence_inputs(4)
    xs.trainable = hidden.trainable = True
    check_program(unrolled(rnn, 4), xs, hidden, params=rnn.parameters())


def test_mlp():
    model = mlp()
    x = Tensor(np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32))
    check_program(model, x, params=model.parameters())


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_nn_rnn(num_layers, nonlinearity):
    mytorch.manual_seed(3)
    model = nn.RNN(3, 4, num_layers=num_layers, nonlinearity=nonlinearity)
    x = Tensor(np.random.default_rng(4).standard_normal((5, 2, 3)).astype(np.float32))
    h0 = Tensor(np.random.default_rng(5).standard_normal((num_layers, 2, 4)).astype(np.float32))
    check_program(model, x, h0, params=model.parameters())


def test_nn_rnn_batch_first_without_initial_state():
    mytorch.manual_seed(3)
    model = nn.RNN(3, 4, num_layers=2, batch_first=True)
    x = Tensor(np.random.default_rng(4).standard_normal((2, 5, 3)).astype(np.float32))
    check_program(model, x, params=model.parameters())


@pytest.mark.parametrize("num_layers", [1, 2])
def test_nn_lstm(num_layers):
    mytorch.manual_seed(6)
    model = nn.LSTM(3, 4, num_layers=num_layers)
    x = Tensor(np.random.default_rng(7).standard_normal((5, 2, 3)).astype(np.float32))

    def run_lstm(x):
        output, (h_n, c_n) = model(x)
        return output, h_n, c_n

    check_program(run_lstm, x, params=model.parameters())


def test_nn_gru():
    mytorch.manual_seed(8)
    model = nn.GRU(3, 4)
    x = Tensor(np.random.default_rng(9).standard_normal((5, 2, 3)).astype(np.float32))
    check_program(model, x, params=model.parameters())


def test_rnn_cells_step_by_step():
    mytorch.manual_seed(10)
    rnn_cell, lstm_cell, gru_cell = nn.RNNCell(3, 4), nn.LSTMCell(3, 4), nn.GRUCell(3, 4)
    params = [*rnn_cell.parameters(), *lstm_cell.parameters(), *gru_cell.parameters()]
    xs = Tensor(np.random.default_rng(11).standard_normal((3, 2, 3)).astype(np.float32))

    def cells(xs):
        h = hc = g = None
        for t in range(xs.shape[0]):
            h = rnn_cell(xs[t], h)
            hc = lstm_cell(xs[t], hc)
            g = gru_cell(xs[t], g)
        return h, hc[0], hc[1], g

    check_program(cells, xs, params=params)


def test_interpreter_checks_the_input_count():
    graph = mytorch.trace(lambda x, y: x + y, mytorch.ones(2), mytorch.ones(2))
    with pytest.raises(ValueError, match="takes 2 inputs, got 1"):
        run(graph, [np.ones(2, np.float32)])
