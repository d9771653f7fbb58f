"""`mytorch.set_num_threads`: compiled forward calls split over their batch on threads, against
the same calls on one thread and the numpy interpreter; what does not split; live parameters."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn, parallel, pytree
from mytorch.ir.interpreter import run
from mytorch.ops.registry import TensorType
from tests.ir.test_batch_axis import data, tutorial_seq

T, I, H = 5, 6, 4
MIN_FLOPS = parallel.MIN_FLOPS


@pytest.fixture(autouse=True)
def threads(monkeypatch):
    """Every graph big enough to split; one thread again after the test."""
    monkeypatch.setattr(parallel, "MIN_FLOPS", 0)
    monkeypatch.setattr(parallel, "ADAPT", False)  # always the threads
    monkeypatch.setattr(parallel, "SPLIT_FROM_CALL", 1)  # from the first call
    slices = []
    original = parallel.BatchSplit._run

    def counted(self, rows, *rest):
        slices.append((rows.start, rows.stop))
        return original(self, rows, *rest)

    monkeypatch.setattr(parallel.BatchSplit, "_run", counted)
    yield slices
    mytorch.set_num_threads(1)


def calls(compiled, x, n: int, repeat: int = 3):
    """The results of `repeat` no-grad calls on `n` threads, as lists of arrays."""
    mytorch.set_num_threads(n)
    out = []
    with mytorch.no_grad():
        for _ in range(repeat):
            out.append([t.data for t in pytree.flatten(compiled(x))[0]])
    return out


def interpreted(compiled, x) -> list[np.ndarray]:
    entry = compiled._last
    return run(compiled.graph, [x.data] + [p.data for p in entry.trace.params])


def same(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


MODELS = {
    "tutorial": lambda b: (tutorial_seq(b), data(T, b, I)),
    "lstm": lambda b: (nn.LSTM(I, H), data(T, b, I)),
    "gru": lambda b: (nn.GRU(I, H), data(T, b, I)),
    "rnn_batch_first": lambda b: (nn.RNN(I, H, num_layers=2, batch_first=True), data(b, T, I)),
    "mlp": lambda b: (nn.Sequential(nn.Linear(I, 8), nn.Tanh(), nn.Linear(8, 3)), data(b, I)),
}


@pytest.mark.parametrize(
    "name, batch",
    [(name, 8) for name in sorted(MODELS)] + [("tutorial", 33), ("rnn_batch_first", 33)],
)
def test_split_calls_match_one_thread_and_the_interpreter(name, batch, threads):
    mytorch.manual_seed(0)
    model, x = MODELS[name](batch)
    compiled = mytorch.compile(model)
    one = calls(compiled, x, 1)
    assert not threads
    two = calls(compiled, x, 2)
    assert sorted(set(threads)) == [(0, batch // 2), (batch // 2, batch)] or sorted(
        set(threads)
    ) == [(0, (batch + 1) // 2), ((batch + 1) // 2, batch)]
    for result in two:
        same(result, one[0])
    same(two[-1], interpreted(compiled, x))


def test_three_threads_on_an_odd_batch(threads):
    model, x = MODELS["lstm"](7)
    compiled = mytorch.compile(model)
    one = calls(compiled, x, 1)
    three = calls(compiled, x, 3)
    assert sorted(set(threads)) == [(0, 2), (2, 5), (5, 7)]
    same(three[-1], one[0])


def test_more_threads_than_rows(threads):
    model, x = MODELS["mlp"](2)
    compiled = mytorch.compile(model)
    same(calls(compiled, x, 4)[-1], calls(compiled, x, 1)[0])
    assert sorted(set(threads)) == [(0, 1), (1, 2)]


def test_a_mean_over_the_batch_sums_the_slices_shares(threads):
    mytorch.manual_seed(0)
    model = nn.Linear(I, 3)
    compiled = mytorch.compile(lambda x: ((model(x) ** 2).mean(), model(x).sum(0)))
    x = data(9, I)
    same(calls(compiled, x, 2)[-1], calls(compiled, x, 1)[0])
    assert sorted(set(threads)) == [(0, 4), (4, 9)]
    same(calls(compiled, x, 2)[-1], interpreted(compiled, x))


@pytest.mark.parametrize(
    "fn",
    [lambda y: (y**2).mean().exp(), lambda y: y - y.mean(0), lambda y: y.max(0)[0] * 2],
    ids=["nonlinear", "back_into_rows", "max"],
)
def test_a_graph_mixing_its_rows_runs_on_one_thread(fn, threads):
    mytorch.manual_seed(0)
    model = nn.Linear(I, 3)
    compiled = mytorch.compile(lambda x: fn(model(x)))
    x = data(9, I)
    same(calls(compiled, x, 2)[-1], calls(compiled, x, 1)[0])
    assert not threads


def test_small_graphs_keep_the_native_call(monkeypatch, threads):
    monkeypatch.setattr(parallel, "MIN_FLOPS", MIN_FLOPS)
    model, x = MODELS["tutorial"](2)
    compiled = mytorch.compile(model)
    calls(compiled, x, 2)
    assert type(compiled._fast.bound).__name__ == "builtin_function_or_method"
    assert not threads


def test_parameters_stay_live_in_every_slice(threads):
    mytorch.manual_seed(0)
    model, x = MODELS["gru"](10)
    compiled = mytorch.compile(model)
    calls(compiled, x, 2)
    for change in (
        lambda p: p.data.__imul__(2),  # in place
        lambda p: setattr(p, "data", p.data * -0.5),  # a new array
    ):
        for p in model.parameters():
            change(p)
        two = calls(compiled, x, 2, repeat=1)[0]
        same(two, calls(compiled, x, 1, repeat=1)[0])
        same(two, interpreted(compiled, x))
        with mytorch.no_grad():
            eager = model(x)
        same(two, [t.data for t in pytree.flatten(eager)[0]])
    assert threads


def test_wrong_inputs_are_reported_as_on_one_thread(threads):
    model, x = MODELS["mlp"](8)
    compiled = mytorch.compile(model)
    calls(compiled, x, 2)
    with mytorch.no_grad(), pytest.raises(ValueError, match="shape"):
        compiled(Tensor(np.zeros((8, I + 1), np.float32)))
    # a float64 input: another signature, compiled and split on its own
    x64 = Tensor(x.data.astype(np.float64))
    same(calls(compiled, x64, 2)[-1], calls(compiled, x64, 1)[0])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_set_num_threads_takes_a_positive_int(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        mytorch.set_num_threads(bad)
    assert mytorch.get_num_threads() == 1


def test_get_num_threads():
    assert mytorch.get_num_threads() == 1
    mytorch.set_num_threads(2)
    assert mytorch.get_num_threads() == 2


def test_the_choice_follows_the_faster_way():
    choice = parallel._Choice()
    ways = []
    for _ in range(200):
        threads = choice.pick()
        ways.append(threads)
        choice.record(threads, 1.0 if threads else 2.0)
    assert ways[:10].count(False) == 5  # each way tried, in turn
    assert ways[-100:].count(False) <= 3  # the other way, tried rarely
    for _ in range(100):  # the threads get slow (a busy machine)
        threads = choice.pick()
        ways.append(threads)
        choice.record(threads, 3.0 if threads else 2.0)
    assert ways[-50:].count(True) <= 2


def test_the_choice_holds_against_a_close_call():
    choice = parallel._Choice()
    ways = []
    for k in range(200):  # one thread 5% faster, within the noise of a busy machine
        threads = choice.pick()
        ways.append(threads)
        choice.record(threads, (1.0 if threads else 0.95) * (1 + 0.02 * (k % 3)))
    assert ways[10:].count(False) <= 10  # tried now and then, never taken


def test_combine_joins_rows_and_sums_partials():
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    types = [TensorType((4, 3), np.dtype(np.float64)), TensorType((2, 3), np.dtype(np.float64))]
    rows, total = parallel.combine([[a, a], [b, b]], [0, "partial"], types)
    np.testing.assert_array_equal(rows, np.concatenate([a, b]))
    np.testing.assert_array_equal(total, a + b)
    assert total is not a and np.array_equal(a, np.arange(6.0).reshape(2, 3))
    first = a.copy()  # owned: nothing else holds the slices' arrays, the sum goes into slice 0's
    (total,) = parallel.combine([[first], [b]], ["partial"], types[1:], owned=True)
    assert total is first
    np.testing.assert_array_equal(total, a + b)


def test_adaptive_calls_match(monkeypatch, threads):
    monkeypatch.setattr(parallel, "ADAPT", True)
    model, x = MODELS["gru"](6)
    compiled = mytorch.compile(model)
    one = calls(compiled, x, 1)
    for result in calls(compiled, x, 2, repeat=20):
        same(result, one[0])
    assert threads


def test_a_graph_called_once_or_twice_builds_no_slices(monkeypatch, threads):
    monkeypatch.setattr(parallel, "SPLIT_FROM_CALL", 3)
    mytorch.manual_seed(0)
    model = nn.Linear(I, 3)
    compiled = mytorch.compile(model)
    x = data(8, I)
    one = calls(compiled, x, 1, repeat=1)[0]
    built = []
    real = parallel.build_slices
    monkeypatch.setattr(parallel, "build_slices", lambda *a: built.append(a) or real(*a))
    for result in calls(compiled, x, 2, repeat=2):
        same(result, one)
    assert not built and not threads  # the whole graph, on the calling thread
    calls(compiled, x, 2, repeat=1)
    assert built  # the third call on two threads builds the slices
