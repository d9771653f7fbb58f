"""Training calls split over the batch on `set_num_threads` threads (data-parallel: each slice
its rows, partial sums over the batch added in slice order): the loss, log-probabilities and
every gradient against the same calls on one thread and eager mode; what stays unsplit."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn, optim, parallel
from mytorch.nn import functional as F
from tests.ir.programs import RNN

T, I, H, C = 4, 6, 5, 3
LETTERS = 9


@pytest.fixture(autouse=True)
def threads(monkeypatch):
    """Every graph big enough to split, always on the threads; the slices built (counted);
    one thread again after the test."""
    monkeypatch.setattr(parallel, "MIN_FLOPS", 0)
    monkeypatch.setattr(parallel, "ADAPT", False)
    built = []
    original = parallel.batch_slice

    def counted(graph, found, start, stop):
        built.append((graph.name, start, stop))
        return original(graph, found, start, stop)

    monkeypatch.setattr(parallel, "batch_slice", counted)
    yield built
    mytorch.set_num_threads(1)


def tutorial(batch):
    rnn = RNN(I, H, C)

    def loss(xs, labels):
        h = mytorch.zeros(batch, H)
        for t in range(xs.shape[0]):
            out, h = rnn(xs[t], h)
        log_probs = nn.LogSoftmax(dim=1)(out)
        return nn.NLLLoss()(log_probs, labels), log_probs

    return rnn, loss, (T, batch, I)


def names(batch):
    """The names example's loss: letter indices, one-hot inside (`one_hot_lookup` makes the
    input product a row lookup, the weight's gradient an `embedding_grad`)."""
    rnn = RNN(LETTERS, H, C)

    def loss(letters, labels):
        onehot = F.one_hot(letters, LETTERS).float()
        h = mytorch.zeros(batch, H)
        for t in range(letters.shape[0]):
            out, h = rnn(onehot[t], h)
        log_probs = nn.LogSoftmax(dim=1)(out)
        return nn.NLLLoss()(log_probs, labels), log_probs

    return rnn, loss, (T, batch)


def torch_rnn(batch):
    rnn, head = nn.RNN(I, H, num_layers=2), nn.Linear(H, C)
    model = nn.ModuleList([rnn, head])

    def loss(xs, labels):
        out, _ = rnn(xs)
        return nn.CrossEntropyLoss()(head(out[-1]), labels)

    return model, loss, (T, batch, I)


def mlp(batch):
    model = nn.Sequential(nn.Linear(I, 8), nn.Tanh(), nn.Linear(8, C))

    def loss(x, labels):
        return ((model(x) - labels.reshape(batch, 1)) ** 2).mean() * 0.5

    return model, loss, (batch, I)


MODELS = {"tutorial": tutorial, "names": names, "nn.RNN": torch_rnn, "mlp": mlp}


def inputs(shape, batch, seed=0, letters=False):
    rng = np.random.default_rng(seed)
    if letters:
        x = Tensor(rng.integers(0, LETTERS, shape), dtype=np.int64, trainable=False)
    else:
        x = Tensor(rng.standard_normal(shape).astype(np.float32), trainable=False)
    labels = rng.integers(0, C, batch)
    dtype = np.float32 if len(shape) == 2 else np.int64  # the MLP regresses on the label
    return x, Tensor(labels.astype(dtype), trainable=False)


def train(name, batch, n, compiled=True, steps=3, change=None):
    """Losses and parameters over `steps` SGD steps (each of two backward calls: gradients
    accumulate), and the first step's outputs and gradients."""
    mytorch.manual_seed(0)
    model, loss_fn, shape = MODELS[name](batch)
    fn = mytorch.compile(loss_fn, fullgraph=True) if compiled else loss_fn
    mytorch.set_num_threads(n)
    opt = optim.SGD(model.parameters(), lr=0.1)
    record = []
    for step in range(steps):
        if change and step == 1:
            for p in model.parameters():
                change(p)
        x, labels = inputs(shape, batch, seed=step, letters=name == "names")
        opt.zero_grad()
        for _ in range(2):
            result = fn(x, labels)
            loss = result[0] if isinstance(result, tuple) else result
            loss.backward()
        outs = [t.data.copy() for t in (result if isinstance(result, tuple) else (result,))]
        record.append((outs, [p.grad.copy() for p in model.parameters()]))
        opt.step()
    record.append(([], [p.data.copy() for p in model.parameters()]))
    return record, fn


def same(a, b, rtol=1e-4, atol=1e-5):
    for (outs_a, grads_a), (outs_b, grads_b) in zip(a, b, strict=True):
        for x, y in zip(outs_a + grads_a, outs_b + grads_b, strict=True):
            assert x.shape == y.shape and x.dtype == y.dtype
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def split_of(fn, n=2):
    return fn._last_training._splits.get(n)


def compiled_tutorial():
    """The tutorial loss on a batch of 8, compiled, its inputs, and 2 threads set."""
    mytorch.manual_seed(0)
    model, loss_fn, shape = tutorial(8)
    fn = mytorch.compile(loss_fn)
    x, labels = inputs(shape, 8)
    mytorch.set_num_threads(2)
    return model, loss_fn, fn, x, labels


def same_grads(model, run, rtol=1e-4, atol=1e-5):
    """The gradients in model's .grad equal those `run()` makes from zero."""
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    run()
    for g, p in zip(grads, model.parameters(), strict=True):
        np.testing.assert_allclose(g, p.grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch, n", [(8, 2), (7, 3)])
def test_split_training_matches_one_thread_and_eager(name, batch, n, threads):
    split, fn = train(name, batch, n)
    assert split_of(fn, n).rows == parallel.slice_rows(batch, n)
    same(split, train(name, batch, 1)[0])
    same(split, train(name, batch, 1, compiled=False)[0])


def test_slices_of_one_size_share_a_build(threads):
    _, fn = train("tutorial", 8, 2, steps=1)
    assert split_of(fn) is not None
    # one forward and one backward graph, each sliced (and built) once for both slices
    assert [(name.endswith("_backward"), a, b) for name, a, b in threads] == [
        (False, 0, 4),
        (True, 0, 4),
    ]


def test_the_names_models_lookup_gradient_is_a_partial_sum(monkeypatch, threads):
    found = {}
    original = parallel.batch_slice

    def kept(graph, axes, start, stop):
        found[graph.name.endswith("_backward")] = axes
        return original(graph, axes, start, stop)

    monkeypatch.setattr(parallel, "batch_slice", kept)
    _, fn = train("names", 8, 2, steps=1)
    assert split_of(fn) is not None
    (lookup_grad,) = [n for n in fn.backward_graph.nodes if n.op == "embedding_grad"]
    assert lookup_grad in found[True].partial
    assert "partial" in split_of(fn).grad_kinds


def test_a_partial_sum_into_a_nonlinearity_stays_unsplit(threads):
    mytorch.manual_seed(0)
    model = nn.Linear(I, C)
    fn = mytorch.compile(lambda x: ((model(x) ** 2).mean() + 1).log())
    mytorch.set_num_threads(2)
    x = inputs((8, I), 8)[0]
    fn(x).backward()
    assert split_of(fn) is None and not threads
    same_grads(model, lambda: ((model(x) ** 2).mean() + 1).log().backward(), 1e-5, 1e-6)


@pytest.mark.parametrize(
    "change",
    [lambda p: p.data.__imul__(0.5), lambda p: setattr(p, "data", p.data * -1.5)],
    ids=["in_place", "new_array"],
)
def test_parameters_stay_live_in_split_training(change, threads):
    split, fn = train("tutorial", 8, 2, change=change)
    assert split_of(fn) is not None
    same(split, train("tutorial", 8, 1, compiled=False, change=change)[0])


def test_switching_thread_counts_between_calls(threads):
    """A forward on threads, its backward after a switch to one thread: the slices' own."""
    model, loss_fn, fn, x, labels = compiled_tutorial()
    loss, _ = fn(x, labels)
    mytorch.set_num_threads(1)
    loss.backward()
    same_grads(model, lambda: fn(x, labels)[0].backward())  # the whole batch


def test_adaptive_calls_match(monkeypatch, threads):
    monkeypatch.setattr(parallel, "ADAPT", True)  # the threads, or the slices in turn
    split, fn = train("tutorial", 8, 2, steps=12)
    assert split_of(fn) is not None
    same(split, train("tutorial", 8, 1, steps=12)[0])


def test_one_thread_once_faster_runs_the_slices_in_turn(monkeypatch, threads):
    monkeypatch.setattr(parallel, "ADAPT", True)
    model, loss_fn, fn, x, labels = compiled_tutorial()
    fn(x, labels)[0].backward()
    training = fn._last_training
    choice = split_of(fn).choice
    choice.times, choice.threads = ([1.0] * choice.KEEP, [2.0] * choice.KEEP), False
    choice.countdown = choice.LONGEST
    model.zero_grad()
    fn(x, labels)[0].backward()
    assert training._whole is None  # one thread ran the slices: nothing more was built
    same_grads(model, lambda: loss_fn(x, labels)[0].backward())


def test_a_wrong_parameter_is_reported_as_on_one_thread(threads):
    model, loss_fn, fn, x, labels = compiled_tutorial()
    fn(x, labels)[0].backward()
    model.h2o.weight.data = np.zeros((C, H + 1), np.float32)
    with pytest.raises(ValueError, match=r"shape"):
        fn(x, labels)
