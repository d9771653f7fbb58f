"""Forward values of every Tensor op, method and mytorch function, against NumPy."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import mytorch
from mytorch import Tensor

from .cases import CASES, OpCase, distinct, normal, positive


def _float32(arrays) -> list[Tensor]:
    return [Tensor(np.asarray(a, dtype=np.float32)) for a in arrays]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_op_matches_numpy_float32(case: OpCase):
    inputs = _float32(case.inputs)
    out = case.fn(mytorch, *inputs)
    # The reference sees exactly the float32 values the Tensor holds, computed in float64.
    expected = np.asarray(case.ref(*[t.data.astype(np.float64) for t in inputs]))
    assert isinstance(out, Tensor)
    assert out.shape == expected.shape
    assert out.dtype == np.float32, f"{case.id}: float32 inputs gave {out.dtype}"
    # float32 rounding of the inputs themselves scales with their magnitude.
    scale = max([1.0] + [float(np.max(np.abs(a), initial=0.0)) for a in case.inputs])
    np.testing.assert_allclose(out.data, expected, rtol=2e-5, atol=2e-6 * scale)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_op_keeps_float64(case: OpCase):
    inputs = [Tensor(np.asarray(a, dtype=np.float64)) for a in case.inputs]
    out = case.fn(mytorch, *inputs)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, case.ref(*case.inputs), rtol=1e-10, atol=1e-12)


def test_op_does_not_modify_inputs():
    for case in CASES:
        inputs = _float32(case.inputs)
        before = [t.data.copy() for t in inputs]
        case.fn(mytorch, *inputs)
        for t, data in zip(inputs, before, strict=True):
            np.testing.assert_array_equal(t.data, data, err_msg=case.id)


# --- operators with numpy arrays and Python numbers -----------------------------------------------
ARITHMETIC = [operator.add, operator.sub, operator.mul, operator.truediv, operator.pow]


@pytest.mark.parametrize("op", ARITHMETIC, ids=lambda f: f.__name__)
@pytest.mark.parametrize("array_on_left", [True, False], ids=["array-op-tensor", "tensor-op-array"])
def test_operator_with_numpy_array(op, array_on_left):
    t_data = positive(3, 4).astype(np.float32)
    array = positive(4).astype(np.float32)
    t = Tensor(t_data)
    out = op(array, t) if array_on_left else op(t, array)
    expected = op(array, t_data) if array_on_left else op(t_data, array)
    assert isinstance(out, Tensor), f"{op.__name__} with a numpy array gave {type(out)}"
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out.data, expected, rtol=1e-6)


@pytest.mark.parametrize("array_on_left", [True, False])
def test_matmul_with_numpy_array(array_on_left):
    t_data = normal(3, 3).astype(np.float32)
    array = normal(3, 3).astype(np.float32)
    out = array @ Tensor(t_data) if array_on_left else Tensor(t_data) @ array
    expected = array @ t_data if array_on_left else t_data @ array
    assert isinstance(out, Tensor)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ARITHMETIC, ids=lambda f: f.__name__)
@pytest.mark.parametrize("number", [2, 0.5, -1.5])
def test_operator_with_python_number_keeps_float32(op, number):
    if op is operator.pow:
        number = abs(number)  # a negative base with a fractional exponent is nan
    t_data = positive(2, 3).astype(np.float32)
    t = Tensor(t_data)
    for out, expected in [(op(t, number), op(t_data, number)), (op(number, t), op(number, t_data))]:
        assert isinstance(out, Tensor)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out.data, expected, rtol=1e-6)


def test_operator_with_tensor_of_other_shape_broadcasts_both_ways():
    a, b = normal(3, 1), normal(1, 4)
    out = Tensor(a) * Tensor(b) + Tensor(b)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out.data, (a * b + b).astype(np.float32), rtol=1e-6)


# --- comparisons ---------------------------------------------------------------------------------
COMPARISONS = [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]


@pytest.mark.parametrize("op", COMPARISONS, ids=lambda f: f.__name__)
def test_comparison_between_tensors_broadcasts(op):
    a = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], dtype=np.float32)
    b = np.array([1.0, 1.0, 0.0], dtype=np.float32)
    out = op(Tensor(a), Tensor(b))
    assert isinstance(out, Tensor)
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(out.data, op(a, b))


@pytest.mark.parametrize("op", COMPARISONS, ids=lambda f: f.__name__)
def test_comparison_with_python_number_both_sides(op):
    a = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(op(Tensor(a), 1.0).data, op(a, 1.0))
    np.testing.assert_array_equal(op(1.0, Tensor(a)).data, op(1.0, a))


# --- reductions with indices ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("keepdim", [False, True])
def test_max_min_with_dim_return_values_and_indices(name, dim, keepdim):
    data = distinct(2, 3, 4).astype(np.float32)
    result = getattr(Tensor(data), name)(dim, keepdim=keepdim)
    assert isinstance(result, tuple) and len(result) == 2
    values, indices = result
    reduce = np.max if name == "max" else np.min
    arg = np.argmax if name == "max" else np.argmin
    np.testing.assert_array_equal(values.data, reduce(data, axis=dim, keepdims=keepdim))
    expected_indices = arg(data, axis=dim)
    if keepdim:
        expected_indices = np.expand_dims(expected_indices, dim)
    assert np.issubdtype(indices.dtype, np.integer), f"indices dtype {indices.dtype}"
    np.testing.assert_array_equal(indices.data, expected_indices)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_without_dim_is_a_scalar(name):
    data = distinct(3, 4).astype(np.float32)
    out = getattr(Tensor(data), name)()
    assert isinstance(out, Tensor)
    assert out.shape == ()
    assert out.item() == getattr(np, name)(data)


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_argmax(dim):
    data = distinct(3, 4).astype(np.float32)
    out = Tensor(data).argmax() if dim is None else Tensor(data).argmax(dim)
    np.testing.assert_array_equal(np.asarray(out.data), np.argmax(data, axis=dim))
    assert np.issubdtype(np.asarray(out.data).dtype, np.integer)


def test_argmax_keyword_dim():
    data = distinct(3, 4).astype(np.float32)
    np.testing.assert_array_equal(Tensor(data).argmax(dim=1).data, np.argmax(data, axis=1))


# --- shape properties of shape ops ---------------------------------------------------------------
def test_T_of_1d_is_unchanged():
    data = normal(4).astype(np.float32)
    np.testing.assert_array_equal(Tensor(data).T.data, data)


def test_view_and_reshape_agree():
    t = Tensor(normal(2, 6))
    np.testing.assert_array_equal(t.view(3, 4).data, t.reshape(3, 4).data)
    np.testing.assert_array_equal(t.view((4, 3)).data, t.reshape((4, 3)).data)


@pytest.mark.parametrize(
    "index",
    [0, -2, slice(-3, None), (slice(None), [0, 2]), (Ellipsis, None), (None, None, 1)],
    ids=repr,
)
def test_getitem_more_forms(index):
    data = normal(3, 4).astype(np.float32)
    np.testing.assert_array_equal(Tensor(data)[index].data, data[index])


def test_getitem_with_integer_tensor():
    data = normal(4, 3).astype(np.float32)
    indices = Tensor(np.array([3, 0, 3]), dtype=np.int64, trainable=False)
    np.testing.assert_array_equal(Tensor(data)[indices].data, data[[3, 0, 3]])


# --- dtype rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [1, 2.5, [1, 2, 3], [[1.0, 2.0]], np.array([1, 2]), np.array([True, False])],
    ids=["int", "float", "int-list", "float-list", "int-array", "bool-array"],
)
def test_non_float_array_data_becomes_float32(data):
    for t in (Tensor(data), mytorch.tensor(data)):
        assert t.dtype == np.float32
        np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_keep_their_dtype(dtype):
    data = np.arange(6, dtype=dtype).reshape(2, 3)
    assert Tensor(data).dtype == dtype
    assert mytorch.tensor(data).dtype == dtype
    assert mytorch.from_numpy(data).dtype == dtype


def test_dtype_is_a_numpy_dtype():
    t = Tensor([1.0])
    assert isinstance(t.dtype, np.dtype)
    assert t.dtype == np.dtype("float32")


def test_float_and_double_convert():
    t = Tensor([1.5, -2.0])
    assert t.double().dtype == np.float64
    assert t.double().float().dtype == np.float32
    np.testing.assert_array_equal(t.double().data, np.array([1.5, -2.0]))


def test_set_default_dtype_changes_new_tensors_and_factories():
    assert mytorch.get_default_dtype() == np.float32
    mytorch.set_default_dtype(np.float64)
    try:
        assert mytorch.get_default_dtype() == np.float64
        assert Tensor([1, 2]).dtype == np.float64
        assert mytorch.tensor(3.0).dtype == np.float64
        assert mytorch.zeros(2).dtype == np.float64
        assert mytorch.ones(2, 3).dtype == np.float64
        assert mytorch.randn(2).dtype == np.float64
        assert mytorch.rand(2).dtype == np.float64
        # An explicit float32 array still keeps its dtype.
        assert Tensor(np.zeros(2, dtype=np.float32)).dtype == np.float32
    finally:
        mytorch.set_default_dtype(np.float32)
    assert mytorch.get_default_dtype() == np.float32
    assert Tensor([1, 2]).dtype == np.float32


def test_explicit_dtype_keyword():
    assert Tensor([1, 2], dtype=np.float64).dtype == np.float64
    t = Tensor(np.array([1, 2]), dtype=np.int64, trainable=False)
    assert t.dtype == np.int64
    np.testing.assert_array_equal(t.data, [1, 2])


@pytest.mark.parametrize(
    "method",
    ["exp", "tanh", "sigmoid", "relu", "abs", "sum", "mean", "T"],
)
def test_unary_ops_keep_float32(method):
    t = Tensor(positive(2, 3).astype(np.float32))
    out = getattr(t, method)
    out = out if isinstance(out, Tensor) else out()
    assert out.dtype == np.float32


# --- factory functions ---------------------------------------------------------------------------
@pytest.mark.parametrize("factory, fill", [(mytorch.zeros, 0.0), (mytorch.ones, 1.0)])
@pytest.mark.parametrize("args", [(2, 3), ((2, 3),), (4,), ((4,),), ((),)], ids=repr)
def test_zeros_ones_shapes(factory, fill, args):
    t = factory(*args)
    shape = args[0] if isinstance(args[0], tuple) else args
    assert isinstance(t, Tensor)
    assert t.shape == shape
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.full(shape, fill))


@pytest.mark.parametrize("factory", [mytorch.zeros, mytorch.ones])
def test_zeros_ones_trainable_flag(factory):
    assert factory(2, trainable=False).trainable is False
    assert factory((2, 2), trainable=True).trainable is True


@pytest.mark.parametrize("factory, fill", [(mytorch.zeros_like, 0.0), (mytorch.ones_like, 1.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zeros_like_ones_like(factory, fill, dtype):
    source = Tensor(normal(2, 5).astype(dtype))
    t = factory(source)
    assert t.shape == (2, 5)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.data, np.full((2, 5), fill))
    assert t is not source


@pytest.mark.parametrize("factory", [mytorch.randn, mytorch.rand])
@pytest.mark.parametrize("args", [(2, 3), ((2, 3),), (5,)], ids=repr)
def test_random_factory_shapes(factory, args):
    t = factory(*args)
    shape = args[0] if isinstance(args[0], tuple) else args
    assert isinstance(t, Tensor)
    assert t.shape == shape
    assert t.dtype == np.float32


@pytest.mark.parametrize("factory", [mytorch.randn, mytorch.rand])
def test_manual_seed_reproduces_random_tensors(factory):
    mytorch.manual_seed(123)
    first = factory(3, 4).data.copy()
    second = factory(3, 4).data.copy()
    mytorch.manual_seed(123)
    again = factory(3, 4).data
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second), "consecutive draws must differ"
    mytorch.manual_seed(124)
    assert not np.array_equal(factory(3, 4).data, first), "another seed must give other values"


def test_rand_is_uniform_in_unit_interval_and_randn_is_standard_normal():
    mytorch.manual_seed(0)
    uniform = mytorch.rand(20000).data
    assert uniform.min() >= 0.0 and uniform.max() < 1.0
    assert abs(uniform.mean() - 0.5) < 0.02
    gaussian = mytorch.randn(20000).data
    assert abs(gaussian.mean()) < 0.05
    assert abs(gaussian.std() - 1.0) < 0.05


@pytest.mark.parametrize(
    "args, expected",
    [
        ((5,), np.arange(5)),
        ((2, 7), np.arange(2, 7)),
        ((0, 1, 0.25), np.arange(0, 1, 0.25)),
        ((5, 0, -2), np.arange(5, 0, -2)),
    ],
    ids=repr,
)
def test_arange(args, expected):
    t = mytorch.arange(*args)
    assert isinstance(t, Tensor)
    assert t.shape == expected.shape
    np.testing.assert_allclose(t.data, expected)


def test_from_numpy_and_tensor():
    array = normal(2, 3)
    t = mytorch.from_numpy(array)
    assert isinstance(t, Tensor)
    np.testing.assert_array_equal(t.data, array)
    u = mytorch.tensor([[1, 2], [3, 4]])
    assert isinstance(u, Tensor)
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u.data, [[1, 2], [3, 4]])
    assert mytorch.tensor(2.5).shape == ()


def test_from_numpy_shares_memory_and_tensor_copies():
    # PyTorch's rule: from_numpy is a view of the array, tensor() takes a copy.
    array = np.zeros(3)
    shared = mytorch.from_numpy(array)
    copied = mytorch.tensor(array)
    array[0] = 5.0
    assert shared.data[0] == 5.0
    assert copied.data[0] == 0.0


# --- module-level functions and static methods -----------------------------------------------
def test_cat_and_stack_accept_lists_tuples_and_static_form():
    a, b = normal(2, 3), normal(2, 3)
    ta, tb = Tensor(a), Tensor(b)
    for out in [mytorch.cat([ta, tb], 0), mytorch.cat((ta, tb)), Tensor.cat([ta, tb], dim=0)]:
        np.testing.assert_allclose(out.data, np.concatenate([a, b]).astype(np.float32))
    for out in [mytorch.stack([ta, tb], 1), Tensor.stack((ta, tb), dim=1)]:
        np.testing.assert_allclose(out.data, np.stack([a, b], 1).astype(np.float32))


def test_cat_of_a_single_tensor_is_a_copy_of_it():
    a = normal(2, 3)
    np.testing.assert_allclose(mytorch.cat([Tensor(a)], 1).data, a.astype(np.float32))


# --- no_grad ------------------------------------------------------------------------------------
def test_no_grad_results_carry_no_graph():
    x = Tensor(normal(2, 3))
    with mytorch.no_grad():
        y = (x * 2 + 1).tanh().sum()
        z = mytorch.cat([x, x], 0)
    for out in (y, z):
        assert len(out._prev) == 0
        assert not out.trainable
    np.testing.assert_allclose(y.data, np.tanh(x.data * 2 + 1).sum(), rtol=1e-5)
    # Recording resumes after the block.
    w = x * 2
    assert len(w._prev) > 0


def test_no_grad_restores_recording_after_an_exception():
    x = Tensor([1.0, 2.0])
    with pytest.raises(RuntimeError), mytorch.no_grad():
        raise RuntimeError("boom")
    assert len((x * 3)._prev) > 0


def test_no_grad_nests():
    x = Tensor([1.0, 2.0])
    with mytorch.no_grad():
        with mytorch.no_grad():
            pass
        assert len((x * 3)._prev) == 0
    assert len((x * 3)._prev) > 0
