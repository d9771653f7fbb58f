"""The call path from Python into compiled code.

A warm call of the last signature goes through the runner's native binder (see
mytorch/codegen/binder.py), which checks every array in native code; whatever it does not take
(other shapes, dtypes, layouts, trainable tensors, a busy runner) goes through the general path
and gives the same results, or the same clear errors. Never a crash, a stale value or a wrong
answer. Tests run with the binder and, where it matters, with the Python path only.
"""

from __future__ import annotations

import gc
import sys
import sysconfig
import threading

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.codegen import BACKENDS, binder
from mytorch.tensor import wrap, wrap_fields
from tests.odd_arrays import read_only, unaligned

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def data(*shape, seed: int = 0, dtype=F32) -> Tensor:
    rng = np.random.default_rng(seed)
    return Tensor(rng.standard_normal(shape).astype(dtype), trainable=False)


def eager(fn, *args):
    with mytorch.no_grad():
        return fn(*args)


class PathSpy:
    """Counts a compiled function's calls that took the general path (not the fast one)."""

    def __init__(self, compiled):
        self.general = 0
        real = compiled._call

        def counting(args, kwargs):
            self.general += 1
            return real(args, kwargs)

        compiled._call = counting


@pytest.fixture(params=["binder", "python-path"])
def path(request, monkeypatch):
    """Run the test with the binder, and with runners built without it."""
    if request.param == "python-path":
        monkeypatch.setattr(binder, "enabled", False)
    elif not binder.available():
        pytest.skip("the native binder is not available here")
    return request.param


@pytest.fixture
def linear():
    """A Linear layer, its compiled version and an input (3, 7) float32."""
    mytorch.manual_seed(0)
    layer = nn.Linear(7, 5)
    return layer, mytorch.compile(layer), data(3, 7, seed=1)


def test_the_binder_is_available_on_cpython_with_the_gil():
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        pytest.skip("the binder only runs on CPython with the GIL")
    if not binder.enabled:
        pytest.skip("switched off with MYTORCH_BINDER=0")
    binder._check_layouts()  # raises saying which layout differs
    assert binder.available()


# ---- which calls take the fast path ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["no_grad", "grad-on-frozen"])
def test_warm_calls_take_the_fast_path_and_give_fresh_untracked_outputs(linear, mode, assert_same):
    layer, compiled, x = linear
    if mode == "grad-on-frozen":
        for p in layer.parameters():
            p.requires_grad = False
    grad = mytorch.no_grad() if mode == "no_grad" else _nothing()
    with grad:
        compiled(x)  # builds
        spy = PathSpy(compiled)
        runner = compiled._last.runner
        before = runner.native_calls
        outs = [compiled(x) for _ in range(3)]
    if binder.available():
        assert spy.general == 0
    assert runner.native_calls == before + 3
    for out in outs:
        assert_same(out.data, eager(layer, x).data)
        assert type(out) is Tensor and not out.trainable and out._prev == ()
    assert not np.shares_memory(outs[0].data, outs[1].data)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_trainable_tensors_take_the_general_path_and_get_gradients(linear, assert_same):
    layer, compiled, x = linear
    spy = PathSpy(compiled)
    out = compiled(x)
    assert out.trainable
    out.sum().backward()
    grads = [p.grad.copy() for p in layer.parameters()]
    for p in layer.parameters():
        p.zero_grad()
    layer(x).sum().backward()
    for got, p in zip(grads, layer.parameters(), strict=True):
        assert_same(got, p.grad)
    # `.trainable` is read at every call: freezing takes the fast path (after one general call
    # that builds the plain forward: the calls so far needed the training build), unfreezing
    # leaves it.
    for p in layer.parameters():
        p.requires_grad = False
    assert not compiled(x).trainable
    calls = spy.general
    assert not compiled(x).trainable
    assert spy.general == calls + (0 if binder.available() else 1)
    layer.bias.requires_grad = True
    assert compiled(x).trainable
    x_trainable = Tensor(x.data.copy())
    layer.bias.requires_grad = False
    assert compiled(x_trainable).trainable  # a trainable argument needs the tape too


def test_train_and_eval_modes_are_told_apart(path):
    class Scale(nn.Module):
        def forward(self, x):
            return x * (2.0 if self.training else 3.0)

    module = Scale()
    compiled = mytorch.compile(module)
    x = data(4)
    with mytorch.no_grad():
        for training in (True, False, True, False):
            module.train(training)
            np.testing.assert_allclose(compiled(x).data, x.data * (2.0 if training else 3.0))


def test_alternating_signatures_and_grad_modes(path, assert_same):
    def fn(a, b):
        return (a * b).tanh()

    compiled = mytorch.compile(fn)
    inputs = [(data(3, 4, seed=k), data(3, 4, seed=k + 9)) for k in range(2)]
    inputs += [(data(2, 5, seed=3), data(2, 5, seed=4)), (data(4, seed=5), data(1, seed=6))]
    inputs += [(data(3, 4, seed=7, dtype=F64), data(3, 4, seed=8, dtype=F64))]
    for _ in range(2):
        for a, b in inputs:
            with mytorch.no_grad():
                assert_same(compiled(a, b).data, fn(a, b).data)
            out = compiled(a, b)
            assert not out.trainable
            assert_same(out.data, eager(fn, a, b).data)


# ---- guards: inputs ---------------------------------------------------------------------------


class TensorSubclass(Tensor):
    """Not exactly a Tensor: the fast path leaves it to the general path."""


ODD_INPUTS = {
    "transposed": lambda a: Tensor(np.asfortranarray(a), trainable=False),
    "strided": lambda a: Tensor(np.repeat(a, 2, axis=1)[:, ::2], trainable=False),
    "unaligned": lambda a: Tensor(unaligned(a), trainable=False),
    "read-only": lambda a: Tensor(read_only(a), trainable=False),
    "broadcast": lambda a: Tensor(np.broadcast_to(a[:1], a.shape), trainable=False),
    "subclass": lambda a: TensorSubclass(a, trainable=False),
    # An equal dtype that is not numpy's own float32 object: the binder compares identities.
    "dtype-with-metadata": lambda a: Tensor(
        a.astype(np.dtype(np.float32, metadata={"unit": "m"})), trainable=False
    ),
    "parameter": lambda a: nn.Parameter(a, requires_grad=False),
}


@pytest.mark.parametrize("kind", sorted(ODD_INPUTS))
def test_inputs_in_odd_layouts_and_types_give_correct_results(linear, kind, path, assert_same):
    layer, compiled, x = linear
    odd = ODD_INPUTS[kind](x.data)
    expected = eager(layer, Tensor(np.ascontiguousarray(odd.data), trainable=False)).data
    with mytorch.no_grad():
        compiled(x)
        assert_same(compiled(odd).data, expected)
        assert_same(compiled(x).data, eager(layer, x).data)  # and back to the common case


def test_other_shapes_and_dtypes_retrace(linear, path, assert_same):
    layer, compiled, x = linear
    other = data(5, 7, seed=2)
    with mytorch.no_grad():
        compiled(x)
        assert_same(compiled(other).data, eager(layer, other).data)
        assert len(compiled._cache) == 2
        with pytest.raises(ValueError):
            compiled(data(3, 8))  # the layer itself rejects it while tracing
        assert_same(compiled(x).data, eager(layer, x).data)


@pytest.mark.parametrize(
    "make",
    [lambda x: x.data, lambda x: x.data.tolist(), lambda x: None, lambda x: 3.0],
    ids=["ndarray", "list", "None", "float"],
)
def test_non_tensor_arguments_raise_type_error(linear, make, path):
    _, compiled, x = linear
    with mytorch.no_grad():
        compiled(x)
        with pytest.raises(TypeError):
            compiled(make(x))


def test_wrong_argument_counts_raise_type_error(linear, path):
    _, compiled, x = linear
    with mytorch.no_grad():
        compiled(x)
        with pytest.raises(TypeError):
            compiled()
        with pytest.raises(TypeError):
            compiled(x, x)


# ---- guards: live parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    "replacement, error",
    [
        (lambda d: np.zeros((5, 8), d.dtype), ValueError),
        (lambda d: np.zeros((7, 5), d.dtype), ValueError),
        (lambda d: d.astype(np.float64), TypeError),
        (lambda d: d.astype(np.int64), TypeError),
        (lambda d: d[None], ValueError),
        (lambda d: d.tolist(), TypeError),
        (lambda d: Tensor(d), TypeError),
    ],
    ids=["wider", "transposed-shape", "float64", "int64", "extra-dim", "list", "tensor"],
)
def test_a_parameter_rebound_to_another_shape_dtype_or_type_raises_clearly(
    linear, replacement, error, path, assert_same
):
    layer, compiled, x = linear
    with mytorch.no_grad():
        compiled(x)
        original = layer.weight.data
        layer.weight.data = replacement(original)
        with pytest.raises(error, match="weight"):
            compiled(x)
        layer.weight.data = original
        assert_same(compiled(x).data, eager(layer, x).data)


PARAMETER_CHANGES = {
    "in-place": lambda p: p.data.__imul__(2.0),
    "rebound": lambda p: setattr(p, "data", p.data * 3.0),
    "fortran": lambda p: setattr(p, "data", np.asfortranarray(p.data * 0.5)),
    "unaligned": lambda p: setattr(p, "data", unaligned(p.data + 1.0)),
    "read-only": lambda p: setattr(p, "data", read_only(p.data - 1.0)),
}


@pytest.mark.parametrize("change", sorted(PARAMETER_CHANGES))
def test_parameter_changes_are_seen_by_the_next_call(linear, change, path, assert_same):
    layer, compiled, x = linear
    with mytorch.no_grad():
        compiled(x)
        for p in layer.parameters():
            PARAMETER_CHANGES[change](p)
        assert_same(compiled(x).data, eager(layer, x).data)
        for p in layer.parameters():
            p.data = np.ascontiguousarray(p.data) * 2.0
        assert_same(compiled(x).data, eager(layer, x).data)


# ---- the runner's shared buffers --------------------------------------------------------------


def big_graph_fn(x, w):
    return (x @ w).tanh() @ w


def test_a_busy_runner_computes_with_private_buffers(assert_same):
    x, w = data(16, 64, seed=1), data(64, 64, seed=2)
    compiled = mytorch.compile(big_graph_fn)
    with mytorch.no_grad():
        compiled(x, w)
        runner = compiled._last.runner
        runner.state[binder.BUSY] = 1  # as if another thread were inside native code
        try:
            assert_same(compiled(x, w).data, eager(big_graph_fn, x, w).data)
            (out,) = runner([x.data, w.data])
            assert_same(out, eager(big_graph_fn, x, w).data)
            assert runner.state[binder.BUSY] == 1  # left as it was
        finally:
            runner.state[binder.BUSY] = 0
        assert_same(compiled(x, w).data, eager(big_graph_fn, x, w).data)


def test_threads_calling_one_compiled_function_get_their_own_answers(path, assert_same):
    compiled = mytorch.compile(big_graph_fn)
    w = data(64, 64, seed=0)
    w.data /= 8
    xs = [data(16, 64, seed=k) for k in range(4)]
    expected = [eager(big_graph_fn, x, w).data for x in xs]
    with mytorch.no_grad():
        compiled(xs[0], w)
    assert compiled._last.runner.release_gil
    errors = []

    def work(k):
        try:
            for _ in range(200):
                assert_same(compiled(xs[k], w).data, expected[k])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    # NOTE: no_grad is process-wide (not per thread), so it is entered once, around them all.
    with mytorch.no_grad():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


def test_the_runner_called_with_a_generator_or_a_tuple(assert_same):
    x, w = data(16, 64, seed=1), data(64, 64, seed=2)
    runner = BACKENDS["llvm"](mytorch.trace(big_graph_fn, x, w))
    expected = eager(big_graph_fn, x, w).data
    assert_same(runner((x.data, w.data))[0], expected)
    assert_same(runner(a for a in (x.data, w.data))[0], expected)


# ---- outputs: tensors with a lazily made .grad ---------------------------------------------------


def test_outputs_grad_reads_as_zeros_and_accumulates(linear):
    layer, compiled, x = linear
    with mytorch.no_grad():
        out = compiled(x)
    assert "grad" not in vars(out)  # not made yet
    grad = out.grad
    assert grad.shape == out.shape and grad.dtype == out.dtype and not grad.any()
    assert out.grad is grad  # made once
    out.grad += 1.0
    np.testing.assert_array_equal(out.grad, np.ones(out.shape, out.dtype))
    with mytorch.no_grad():
        fresh = compiled(x)
    assert repr(fresh) == repr(Tensor(fresh.data, trainable=False))
    fresh.backward(np.full(fresh.shape, 2.0, F32))
    np.testing.assert_array_equal(fresh.grad, np.full(fresh.shape, 2.0, F32))
    fresh.grad = None
    assert fresh.grad is None


def test_wrap_keeps_the_array_and_its_dtype():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = wrap(a, "compiled")
    assert t.data is a and t._op == "compiled" and not t.trainable and t._prev == ()
    assert t.grad.dtype == F64 and t.grad.shape == (2, 3)
    t.zero_grad()
    assert t.grad.shape == (2, 3)


def test_tensors_made_by_the_binder_are_the_ones_wrap_makes(linear, path):
    _, compiled, x = linear
    with mytorch.no_grad():
        compiled(x)
        out = compiled(x)
    same = wrap(out.data, "compiled")
    assert type(out) is Tensor
    assert list(vars(out)) == list(vars(same))
    for name, value in vars(same).items():
        assert getattr(out, name) is value or getattr(out, name) == value, name


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x * 2.0,
        lambda x: (x * 2.0, x + 1.0),
        lambda x: [x * 2.0, (x + 1.0, x.tanh())],
        lambda x: {"double": x * 2.0, "both": (x, x + 1.0)},
        lambda x: (x * 2.0, 3),
    ],
    ids=["tensor", "tuple", "nested-list", "dict", "with-a-python-value"],
)
def test_results_of_every_structure_through_the_fast_path(fn, path, assert_outputs_same):
    x = data(3, 4, seed=4)
    compiled = mytorch.compile(fn, fullgraph=True)
    with mytorch.no_grad():
        compiled(x)
        for _ in range(2):
            out = compiled(x)
            assert_outputs_same(_tensors_only(out), _tensors_only(fn(x)), what="outputs")
            assert type(out) is type(fn(x))


def _tensors_only(value):
    if isinstance(value, dict):
        return [_tensors_only(v) for v in value.values()]
    if isinstance(value, (tuple, list)):
        return [_tensors_only(v) for v in value if not isinstance(v, int)]
    return value


def test_many_calls_leave_reference_counts_as_they_were(linear):
    layer, compiled, x = linear
    odd = Tensor(np.asfortranarray(x.data), trainable=False)
    objects = [x.data, odd.data, layer.weight.data, layer.bias.data, np.dtype(np.float32)]

    def counts():
        gc.collect()
        return [sys.getrefcount(o) for o in objects]

    compiled(x)  # builds what gradients need
    with mytorch.no_grad():
        compiled(x), compiled(odd)
        before = counts()
        for _ in range(300):
            compiled(x)  # the fast path
            compiled(odd)  # rejected after reading `.data`: the general path
    for _ in range(100):
        compiled(x)  # rejected: trainable parameters
    assert counts() == before


class Slotted:
    """Takes `.data` but no other attribute: wrapping into it fails half way."""

    __slots__ = ("data",)


def test_a_failure_while_wrapping_raises_and_releases_everything():
    x, w = data(16, 64, seed=1), data(64, 64, seed=2)
    runner = BACKENDS["llvm"](mytorch.trace(big_graph_fn, x, w))
    bound = runner.fast_call(2, wrap=(Slotted, wrap_fields("compiled")))
    if bound is None:
        pytest.skip("the native binder is not available here")
    before = [sys.getrefcount(o) for o in (x.data, w.data)]
    for _ in range(3):
        with pytest.raises(AttributeError):
            bound(x.data, w.data)
    assert [sys.getrefcount(o) for o in (x.data, w.data)] == before
    assert runner.state[binder.BUSY] == 0
    (out,) = runner([x.data, w.data])  # the runner still works
    np.testing.assert_allclose(out, eager(big_graph_fn, x, w).data, rtol=1e-4, atol=1e-5)
