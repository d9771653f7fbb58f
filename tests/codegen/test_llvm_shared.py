"""Kernels shared across graphs (`llvm.GraphLowering._emit_kernel_function`): graphs that need the
same kernel call one compiled function, including the same loop or product at another sequence
length (`lowering.Scaled`). Every result is checked against the numpy interpreter, with
`CHECK_SHARED` on (conftest.py): a kernel found in the cache is emitted again and must be the
cached code, so a key that missed something that changes the code fails here instead of running
the wrong kernel.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, optim
from mytorch.codegen import llvm
from mytorch.nn import functional as F
from mytorch.tensor import apply
from tests.ir.programs import RNN

F32 = np.float32


@pytest.fixture
def compiles(monkeypatch):
    """The new kernels made (and compiled) while the test runs (their IR)."""
    made = []
    new_kernel = llvm._new_kernel

    def recording(text, *rest):
        made.append(text)
        return new_kernel(text, *rest)

    monkeypatch.setattr(llvm, "_new_kernel", recording)
    return made


def sequence_loss(rnn: RNN, batch: int):
    """The names example's shape of program: the cell over every step, a loss on the last."""

    def loss(xs, labels):
        h = mytorch.zeros(batch, rnn.hidden_size)
        for t in range(xs.shape[0]):
            out, h = rnn(xs[t], h)
        logp = out.log_softmax(1)
        return -(logp * labels).sum(1).mean()

    return loss


def run_both(rnn, loss, steps, batch, seed):
    """The loss and every parameter's gradient, compiled (llvm) and interpreted (numpy)."""
    rng = np.random.default_rng(seed)
    xs = Tensor(rng.standard_normal((steps, batch, rnn.input_size)).astype(F32), trainable=False)
    labels = np.eye(rnn.output_size, dtype=F32)[rng.integers(0, rnn.output_size, batch)]
    labels = Tensor(labels, trainable=False)
    opt = optim.SGD(rnn.parameters(), lr=0.1)
    results = []
    for run in loss:
        opt.zero_grad()
        value = run(xs, labels)
        value.backward()
        results.append([value.data.copy()] + [p.grad.copy() for p in rnn.parameters()])
    return results


@pytest.mark.parametrize("batch", [64, 16, 3])
def test_every_sequence_length_shares_the_loop_and_product_kernels(batch, compiles, assert_same):
    mytorch.manual_seed(0)
    rnn = RNN(5, 24, 3)
    fn = sequence_loss(rnn, batch)
    native = mytorch.compile(fn, backend="llvm")
    interpreted = mytorch.compile(fn, backend="numpy")
    new = []
    for steps in (7, 3, 9, 1, 12, 7, 5):
        before = len(compiles)
        got, want = run_both(rnn, (native, interpreted), steps, batch, seed=steps)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, what=f"T={steps} output {k}")
        new.append((steps, len(compiles) - before))
    if batch == 64:  # a batch that is a whole chunk of k steps: nothing new after the first
        assert new[0][1] and new[2][1] == new[4][1] == 0, new


def test_every_sequence_length_shares_the_one_hot_lookup_kernels(compiles, assert_same):
    # The names example's input: letter indices, one-hot inside, a row lookup after the passes.
    mytorch.manual_seed(0)
    rnn, batch = RNN(11, 24, 3), 64

    def loss(letters, labels):
        return sequence_loss(rnn, batch)(F.one_hot(letters, 11).float(), labels)

    native = mytorch.compile(loss, backend="llvm")
    interpreted = mytorch.compile(loss, backend="numpy")
    new = []
    for steps in (7, 3, 9, 1, 12):
        rng = np.random.default_rng(steps)
        letters = Tensor(rng.integers(0, 11, (steps, batch)), dtype=np.int64, trainable=False)
        labels = Tensor(np.eye(3, dtype=F32)[rng.integers(0, 3, batch)], trainable=False)
        before = len(compiles)
        results = []
        for fn in (native, interpreted):
            rnn.zero_grad()
            value = fn(letters, labels)
            value.backward()
            results.append([value.data.copy()] + [p.grad.copy() for p in rnn.parameters()])
        for k, (g, w) in enumerate(zip(*results, strict=True)):
            assert_same(g, w, what=f"T={steps} output {k}")
        new.append((steps, len(compiles) - before))
    assert "embedding" in native.graph.op_counts()
    assert new[0][1] and new[2][1] == new[4][1] == 0, new


def test_two_graphs_needing_one_kernel_call_the_same_code(assert_same):
    def f(a, b):
        return (a * b + a).tanh()

    def g(a, b):
        t = (a * b + a).tanh()
        return t, t * 2.0

    x, y = (Tensor(np.random.default_rng(k).standard_normal((8, 40)).astype(F32)) for k in (1, 2))
    with mytorch.no_grad():
        cf, cg = mytorch.compile(f), mytorch.compile(g)
        assert_same(cf(x, y).data, f(x, y).data)
        for got, want in zip(cg(x, y), g(x, y), strict=True):
            assert_same(got.data, want.data)
    kernels_f = set(cf._last.runner.native.keep)
    kernels_g = set(cg._last.runner.native.keep)
    assert kernels_f & kernels_g, "the fused chain's kernel is shared"


@pytest.mark.parametrize(
    "make",
    [
        lambda: (lambda a, b: a @ b, [(4, 5), (5, 6)], [(4, 6), (6, 6)]),  # depth
        lambda: (lambda a, b: a @ b, [(4, 5), (5, 6)], [(5, 5), (5, 6)]),  # rows
        lambda: (lambda a, b: a @ b.T, [(4, 5), (6, 5)], [(4, 5), (7, 5)]),  # W.T columns
        lambda: (lambda a, b: (a * b).sum(0), [(3, 4), (3, 4)], [(3, 4), (1, 4)]),  # broadcast
        lambda: (lambda a, b: a.sum(0) + b.sum(1), [(4, 4), (4, 4)], [(4, 4), (4, 4)]),  # dims
        lambda: (lambda a, b: a.clamp(min=0.5) + b, [(3, 4), (3, 4)], [(3, 4), (3, 4)]),
        lambda: (lambda a, b: a.clamp(min=-0.5) + b, [(3, 4), (3, 4)], [(3, 4), (3, 4)]),
    ],
)
def test_kernels_differing_in_shape_layout_or_params_are_never_shared(make, assert_same):
    fn, first, second = make()
    rng = np.random.default_rng(3)
    with mytorch.no_grad():
        compiled = mytorch.compile(fn)
        for shapes in (first, second, first):
            args = [Tensor(rng.standard_normal(s).astype(F32)) for s in shapes]
            assert_same(compiled(*args).data, fn(*args).data, what=str(shapes))


def test_float64_and_float32_kernels_are_different_kernels(assert_same):
    def fn(a):
        return a.exp() * 3.0

    compiled = mytorch.compile(fn)
    with mytorch.no_grad():
        for dtype in (np.float32, np.float64, np.float32):
            x = Tensor(np.linspace(-2, 2, 24, dtype=dtype).reshape(4, 6))
            out = compiled(x)
            assert out.dtype == dtype
            assert_same(out.data, fn(x).data, rtol=1e-6, what=str(dtype))


def test_shared_kernels_live_as_long_as_a_graph_that_calls_them():
    def fn(a):
        return (a * 7.0 - 1.0).sigmoid() * 5.0  # a chain no other test uses

    x = Tensor(np.ones((3, 11), F32))
    with mytorch.no_grad():
        first = mytorch.compile(fn)
        want = first(x).data.copy()
        second = mytorch.compile(fn)
        second(x)
        kernels = set(first._last.runner.native.keep)
        assert kernels == set(second._last.runner.native.keep)
        del first
        gc.collect()
        np.testing.assert_array_equal(second(x).data, want)  # still there for `second`
        alive = set(llvm._SHARED.values())
        assert kernels <= alive
        del second, kernels, alive
        gc.collect()
    assert not any("sigmoid" in str(k) for k in llvm._SHARED)  # freed with the last user


def test_an_index_error_from_a_shared_kernel_names_its_op_in_every_graph():
    def one_hot(i):
        return apply("one_hot", i, num_classes=4, dtype="float32") * 2.0

    def one_hot_plus(i):
        return apply("one_hot", i, num_classes=4, dtype="float32") * 2.0 + 1.0

    bad = Tensor(np.array([0, 9, 1]), dtype=np.int64, trainable=False)
    for fn in (one_hot, one_hot_plus):
        with pytest.raises(IndexError, match="one_hot"):
            mytorch.compile(fn)(bad)


@pytest.mark.parametrize("index", [2, -1, slice(1, 3), (slice(None), 0), (None, 1)])
def test_the_gradient_of_basic_indexing_is_a_copy_into_zeros(index, assert_same):
    def fn(x):
        return (x[index] * 3.0).sum()

    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 5)).astype(F32))
    grads = []
    for backend in ("llvm", "numpy"):
        x.zero_grad()
        mytorch.compile(fn, backend=backend)(x).backward()
        grads.append(x.grad.copy())
    assert_same(*grads, what=str(index))
