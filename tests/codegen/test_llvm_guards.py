"""Guards around native code: wrong inputs raise clear Python exceptions before any native call,
odd-but-valid arrays (non-contiguous, unaligned, read-only, broadcast) give correct results, and
out-of-range indices come back as IndexError through the native status word, never a crash.

Runs under faulthandler (see conftest.py): a segfault would still print a traceback.
"""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.codegen import BACKENDS
from mytorch.tensor import apply
from tests.odd_arrays import read_only, unaligned

F32 = np.dtype(np.float32)


def affine(x, w):
    return (x @ w).tanh() + 1.0


def arrays(seed: int = 0, x_shape=(3, 7), w_shape=(7, 5)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(F32) for s in (x_shape, w_shape)]


def tensors(*arrays_):
    return [Tensor(a, trainable=False) for a in arrays_]


@pytest.fixture(scope="module", params=["binder", "python-path"])
def affine_runners(request):
    """(llvm runner, numpy runner) for `affine` on x (3, 7) and w (7, 5), float32; the llvm
    runner calls through the native binder, or only through its Python path."""
    graph = mytorch.trace(affine, *tensors(*arrays()))
    runner = BACKENDS["llvm"](graph)
    if request.param == "python-path":
        runner._call = None
    return runner, BACKENDS["numpy"](graph)


class NativeSpy:
    """Counts the runner's calls into native code (through the binder or the Python path)."""

    def __init__(self, runner):
        self.runner = runner
        self.before = runner.native_calls

    @property
    def calls(self) -> int:
        return self.runner.native_calls - self.before


@pytest.fixture
def spied(affine_runners):
    runner = affine_runners[0]
    return runner, NativeSpy(runner)


# ---- the runner, called directly -------------------------------------------------------------


def test_runner_matches_the_interpreter(affine_runners, assert_same):
    native, reference = affine_runners
    xs = arrays(seed=3)
    (out,) = native(xs)
    (expected,) = reference(xs)
    assert_same(out, expected)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_wrong_argument_count_raises_type_error(spied, count):
    runner, spy = spied
    x, w = arrays()
    with pytest.raises(TypeError, match=r"expected 2 arrays, got " + str(count)):
        runner([x, w, w][:count])
    assert spy.calls == 0


@pytest.mark.parametrize(
    "bad",
    [np.float64, np.int64, np.float16, np.dtype(">f4")],
    ids=["f64", "i64", "f16", "big-endian"],
)
def test_wrong_dtype_raises_type_error_naming_the_argument(spied, bad):
    runner, spy = spied
    x, w = arrays()
    with pytest.raises(TypeError, match=r"'x'.*float32"):
        runner([x.astype(bad), w])
    assert spy.calls == 0


@pytest.mark.parametrize("shape", [(3, 8), (7, 3), (3, 7, 1), (21,), (), (0, 7)])
def test_wrong_shape_raises_value_error_naming_the_shapes(spied, shape):
    runner, spy = spied
    x, w = arrays()
    bad = np.zeros(shape, F32)
    with pytest.raises(ValueError, match=r"'w'.*\(7, 5\)"):
        runner([x, bad])
    assert spy.calls == 0


class ArraySubclass(np.ndarray):
    """An ndarray subclass: it could override anything, so only exact ndarrays are accepted."""


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a.tolist(),
        lambda a: tuple(a.tolist()),
        lambda a: Tensor(a),
        lambda a: np.float32(1.0),
        lambda a: None,
        lambda a: a.view(ArraySubclass),
        lambda a: np.ma.masked_array(a),
        lambda a: memoryview(a),
    ],
    ids=["list", "tuple", "Tensor", "numpy-scalar", "None", "subclass", "masked", "memoryview"],
)
def test_a_non_ndarray_raises_type_error(spied, make):
    runner, spy = spied
    x, w = arrays()
    with pytest.raises(TypeError, match="'x'"):
        runner([make(x), w])
    assert spy.calls == 0


ODD_LAYOUTS = {
    "transposed": lambda a: np.ascontiguousarray(a.T).T,
    "fortran": np.asfortranarray,
    "strided-slice": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "negative-strides": lambda a: a[::-1, ::-1].copy()[::-1, ::-1],
    "unaligned": unaligned,
    "read-only": read_only,
}


@pytest.mark.parametrize("layout", sorted(ODD_LAYOUTS))
def test_valid_arrays_in_odd_layouts_give_correct_results(affine_runners, layout, assert_same):
    native, reference = affine_runners
    x, w = arrays(seed=5)
    odd_x, odd_w = ODD_LAYOUTS[layout](x), ODD_LAYOUTS[layout](w)
    np.testing.assert_array_equal(odd_x, x)
    (out,) = native([odd_x, odd_w])
    (expected,) = reference([x, w])
    assert_same(out, expected)


def test_a_broadcast_zero_stride_input_is_accepted(affine_runners, assert_same):
    native, reference = affine_runners
    x, w = arrays(seed=6)
    row = np.broadcast_to(x[:1], x.shape)  # strides (0, 4), read-only
    (out,) = native([row, w])
    (expected,) = reference([np.ascontiguousarray(row), w])
    assert_same(out, expected)


def test_native_code_does_not_write_inputs_and_outputs_are_fresh(affine_runners):
    native, _ = affine_runners
    x, w = arrays(seed=7)
    x_before, w_before = x.copy(), w.copy()
    (first,) = native([x, w])
    kept = first.copy()
    (second,) = native([x * 2, w])
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)
    assert first is not second and not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)  # the second call did not overwrite the first


# ---- out-of-range indices: the native status word ------------------------------------------


def lookup(weight, indices):
    return apply("embedding", weight, indices) * 2.0


@pytest.mark.parametrize("bad_index", [7, -1, 2**40, -(2**62)])
def test_out_of_range_embedding_index_raises_index_error(bad_index, assert_same):
    weight = Tensor(np.arange(21, dtype=F32).reshape(7, 3), trainable=False)
    good = Tensor(np.array([0, 6, 3]), dtype=np.int64, trainable=False)
    bad = Tensor(np.array([0, bad_index, 3]), dtype=np.int64, trainable=False)
    compiled = mytorch.compile(lookup, backend="llvm", fullgraph=True)
    assert_same(compiled(weight, good).data, lookup(weight, good).data)
    with pytest.raises(IndexError, match="embedding"):
        compiled(weight, bad)
    with pytest.raises(IndexError):
        lookup(weight, bad)  # eager agrees that it is an error
    # The status word is reset: the next good call works.
    assert_same(compiled(weight, good).data, lookup(weight, good).data)


def test_out_of_range_one_hot_and_embedding_grad_indices_raise_index_error():
    bad = Tensor(np.array([[0, 4]]), dtype=np.int64, trainable=False)
    one_hot = mytorch.compile(
        lambda i: apply("one_hot", i, num_classes=4, dtype="float32"), fullgraph=True
    )
    with pytest.raises(IndexError, match="one_hot"):
        one_hot(bad)
    grad = Tensor(np.ones((1, 2, 3), F32), trainable=False)
    scatter = mytorch.compile(lambda g, i: apply("embedding_grad", g, i, num=4), fullgraph=True)
    with pytest.raises(IndexError, match="embedding_grad"):
        scatter(grad, bad)


def test_index_error_through_the_runner_directly_after_native_code_ran():
    weight = Tensor(np.ones((7, 3), F32), trainable=False)
    indices = Tensor(np.array([1, 2]), dtype=np.int64, trainable=False)
    runner = BACKENDS["llvm"](mytorch.trace(lookup, weight, indices))
    spy = NativeSpy(runner)
    with pytest.raises(IndexError):
        runner([weight.data, np.array([1, 99])])
    assert spy.calls == 1  # detected by native code, reported in Python
    (out,) = runner([weight.data, np.array([1, 2])])
    np.testing.assert_array_equal(out, np.full((2, 3), 2.0, F32))


# ---- through mytorch.compile ------------------------------------------------------------------


def test_compiled_wrong_argument_count_raises_type_error():
    compiled = mytorch.compile(affine, backend="llvm")
    x, w = tensors(*arrays())
    compiled(x, w)
    with pytest.raises(TypeError):
        compiled(x)
    with pytest.raises(TypeError):
        compiled(x, w, w)


@pytest.mark.parametrize(
    "make",
    [lambda a: a, lambda a: [a], lambda a: {"x": a}, lambda a: "x"],
    ids=["ndarray", "list-of-ndarray", "dict-of-ndarray", "string"],
)
def test_compiled_non_tensor_argument_raises_type_error(make):
    compiled = mytorch.compile(affine, backend="llvm")
    x, w = arrays()
    compiled(*tensors(x, w))
    with pytest.raises(TypeError):
        compiled(make(x), Tensor(w, trainable=False))


@pytest.fixture
def linear_and_compiled():
    mytorch.manual_seed(0)
    layer = nn.Linear(7, 5)
    compiled = mytorch.compile(layer, backend="llvm")
    x = Tensor(np.random.default_rng(1).standard_normal((3, 7)).astype(F32), trainable=False)
    compiled(x)
    return layer, compiled, x


@pytest.mark.parametrize(
    "replacement, error",
    [
        (lambda d: np.zeros((5, 8), d.dtype), ValueError),
        (lambda d: np.zeros((7, 5), d.dtype), ValueError),
        (lambda d: d.astype(np.float64), TypeError),
        (lambda d: d.astype(np.int64), TypeError),
        (lambda d: d[None], ValueError),
    ],
    ids=["wider", "transposed-shape", "float64", "int64", "extra-dim"],
)
def test_a_parameter_replaced_by_another_shape_or_dtype_raises_clearly(
    linear_and_compiled, replacement, error, assert_same
):
    layer, compiled, x = linear_and_compiled
    original = layer.weight.data
    layer.weight.data = replacement(original)
    with pytest.raises(error, match="weight"):
        compiled(x)
    layer.weight.data = original  # putting it back works again
    with mytorch.no_grad():
        expected = layer(x)
    assert_same(compiled(x).data, expected.data)


def test_a_parameter_replaced_by_a_non_array_raises_type_error(linear_and_compiled):
    layer, compiled, x = linear_and_compiled
    layer.bias.data = layer.bias.data.tolist()
    with pytest.raises(TypeError, match="bias"):
        compiled(x)


def test_non_contiguous_parameters_and_inputs_are_accepted(linear_and_compiled, assert_same):
    layer, compiled, x = linear_and_compiled
    layer.weight.data = layer.weight.data.T.copy().T
    assert not layer.weight.data.flags.c_contiguous
    layer.bias.data = np.repeat(layer.bias.data, 3)[::3]
    x_t = Tensor(np.zeros((7, 3), F32), trainable=False)
    x_t.data = x.data.T.copy().T  # (3, 7), Fortran order
    assert not x_t.data.flags.c_contiguous
    with mytorch.no_grad():
        expected = layer(x)
    assert_same(compiled(x_t).data, expected.data)
    assert_same(compiled(x).data, expected.data)


# ---- unusual but valid signatures -----------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x,
        lambda x: (x, x),
        lambda x: (x.T, x.T),
        lambda x: (x * 2.0, x * 2.0),
        lambda x: (x[1:], x.tanh(), x),
        lambda x: x.reshape(-1)[2:5],
        lambda x: mytorch.tensor([1.0, 2.0]) + x.sum(),
    ],
    ids=["identity", "input-twice", "view-twice", "same-node-twice", "mixed", "view-of-view",
         "const-input"],
)
def test_outputs_that_are_inputs_views_or_repeated(fn, assert_outputs_same):
    x = Tensor(np.random.default_rng(2).standard_normal((3, 4)).astype(F32), trainable=False)
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
    out = compiled(x)
    assert_outputs_same(out, fn(x), what="outputs")
    flat = out if isinstance(out, tuple) else (out,)
    assert all(not np.shares_memory(o.data, x.data) for o in flat), "an output aliases the input"


def test_zero_dim_and_size_one_inputs(assert_same):
    def fn(s, v):
        return (s * v).sum() + s

    s = Tensor(np.array(1.5, F32), trainable=False)
    v = Tensor(np.ones((1, 1), F32), trainable=False)
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
    assert_same(compiled(s, v).data, fn(s, v).data)
