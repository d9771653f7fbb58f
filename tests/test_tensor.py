"""The Tensor object itself: construction, attributes, repr, conversions and the autograd tape."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor


# --- construction --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, shape",
    [
        (3.5, ()),
        (7, ()),
        ([1.0, 2.0], (2,)),
        ([[1, 2, 3], [4, 5, 6]], (2, 3)),
        (np.zeros((2, 1, 3)), (2, 1, 3)),
        (np.array(4.0), ()),
    ],
    ids=["float", "int", "list", "nested-list", "array", "0d-array"],
)
def test_constructor_accepts_scalars_lists_and_arrays(data, shape):
    t = Tensor(data)
    assert t.shape == shape
    assert isinstance(t.data, np.ndarray)
    np.testing.assert_array_equal(t.data, np.asarray(data))


def test_constructor_accepts_a_tensor():
    source = Tensor(np.arange(6.0).reshape(2, 3))
    copy = Tensor(source)
    assert isinstance(copy.data, np.ndarray)
    assert copy.dtype == source.dtype
    np.testing.assert_array_equal(copy.data, source.data)


def test_constructor_positional_order_of_the_tutorial():
    a, b = Tensor([1.0]), Tensor([2.0])
    t = Tensor([3.0], (a, b), False, "custom", "my-label")
    assert t._prev == (a, b) or tuple(t._prev) == (a, b)
    assert t.trainable is False
    assert t._op == "custom"
    assert t.label == "my-label"


def test_defaults():
    t = Tensor([1.0, 2.0])
    assert t.trainable is True
    assert len(t._prev) == 0
    assert t._op == ""
    assert t.label == ""
    assert callable(t._backward)


@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (2, 1, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_is_zeros_of_the_same_shape_at_construction(shape, dtype):
    t = Tensor(np.ones(shape, dtype=dtype))
    assert isinstance(t.grad, np.ndarray)
    assert t.grad.shape == shape
    assert t.grad.dtype == dtype
    assert not t.grad.any()


def test_op_results_have_a_zero_grad_too():
    out = Tensor(np.ones((2, 3))) * 2
    assert out.grad.shape == (2, 3)
    assert not out.grad.any()


# --- requires_grad alias -------------------------------------------------------------------------
@pytest.mark.parametrize("flag", [True, False])
def test_requires_grad_keyword_is_an_alias_of_trainable(flag):
    t = Tensor([1.0], requires_grad=flag)
    assert t.trainable is flag
    assert t.requires_grad is flag


def test_requires_grad_attribute_follows_trainable():
    t = Tensor([1.0], trainable=False)
    assert t.requires_grad is False
    t.requires_grad = True
    assert t.trainable is True
    t.trainable = False
    assert t.requires_grad is False


def test_non_trainable_leaf_gets_no_gradient():
    frozen = Tensor(np.array([1.0, 2.0]), trainable=False)
    x = Tensor(np.array([3.0, 4.0]))
    (frozen * x).sum().backward()
    np.testing.assert_array_equal(frozen.grad, [0.0, 0.0])
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])


# --- repr ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: Tensor([[1, 2, 3]]),
        lambda: Tensor(2.5),
        lambda: Tensor(np.arange(6.0).reshape(2, 3), trainable=False),
        lambda: Tensor([1.0, 2.0]) * 3,
    ],
    ids=["row", "scalar", "float64-untrainable", "op-result"],
)
def test_repr_is_exactly_the_tutorial_format(make):
    t = make()
    assert repr(t) == f"Tensor(data={t.data}, grad={t.grad}, trainable={t.trainable})"


def test_repr_shows_the_gradient_after_backward():
    t = Tensor([1.0, 2.0])
    (t * 3).sum().backward()
    assert repr(t) == "Tensor(data=[1. 2.], grad=[3. 3.], trainable=True)"


# --- conversions and properties ------------------------------------------------------------------
def test_item_returns_a_python_number():
    for t in (Tensor(2.5), Tensor([[4.0]]), Tensor([1.0, 5.0]).sum()):
        value = t.item()
        assert isinstance(value, float)
        assert value == float(t.data.reshape(()))


def test_numpy_returns_the_data():
    data = np.arange(6.0).reshape(2, 3)
    out = Tensor(data).numpy()
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("shape", [(), (4,), (2, 3), (2, 3, 4)])
def test_shape_ndim_size(shape):
    t = Tensor(np.zeros(shape))
    assert t.shape == shape
    assert isinstance(t.shape, tuple)
    assert t.ndim == len(shape)
    assert tuple(t.size()) == shape
    for dim, n in enumerate(shape):
        assert t.size(dim) == n
        assert t.size(dim - len(shape)) == n


def test_detach_has_the_same_data_and_no_graph():
    x = Tensor(np.array([1.0, 2.0]))
    y = x * 2
    d = y.detach()
    np.testing.assert_array_equal(d.data, y.data)
    assert len(d._prev) == 0
    assert d is not y


def test_zero_grad_resets_to_zeros_of_the_same_shape():
    x = Tensor(np.ones((2, 3)))
    (x * x).sum().backward()
    assert x.grad.any()
    x.zero_grad()
    assert x.grad.shape == (2, 3)
    assert not x.grad.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_and_double(dtype):
    t = Tensor(np.array([1.25, -3.5], dtype=dtype))
    assert t.float().dtype == np.float32
    assert t.double().dtype == np.float64
    np.testing.assert_array_equal(t.float().data, [1.25, -3.5])
    np.testing.assert_array_equal(t.double().data, [1.25, -3.5])


def test_float_conversion_passes_gradients():
    x = Tensor(np.array([1.0, 2.0]))  # float64
    (x.float() * 3).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])
    assert x.grad.dtype == np.float64


# --- the autograd tape --------------------------------------------------------------------------
def test_op_results_record_their_inputs():
    a, b = Tensor([1.0]), Tensor([2.0])
    out = a * b
    assert set(map(id, out._prev)) == {id(a), id(b)}
    assert isinstance(out._op, str) and out._op


def test_user_defined_op_with_prev_and_backward_takes_part_in_backward():
    """The tutorial builds ops by hand: a Tensor with `_prev` and a `_backward` closure."""
    a = Tensor(np.array([[1.0, 2.0, 3.0]]))
    b = Tensor(np.array([[4.0, 5.0, 6.0]]))
    out = Tensor(np.concatenate([a.data, b.data]), _prev=(a, b), _op="cat")

    def _backward():
        a.grad += out.grad[:1]
        b.grad += out.grad[1:]

    out._backward = _backward
    weights = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (out * Tensor(weights)).sum().backward()
    np.testing.assert_array_equal(a.grad, weights[:1])
    np.testing.assert_array_equal(b.grad, weights[1:])


def test_user_defined_op_feeds_builtin_ops_downstream_and_upstream():
    x = Tensor(np.array([1.0, -2.0]))
    doubled = x * 2
    custom = Tensor(doubled.data**2, _prev=(doubled,), _op="square")

    def _backward():
        doubled.grad += 2 * doubled.data * custom.grad

    custom._backward = _backward
    custom.sum().backward()
    np.testing.assert_allclose(x.grad, 8 * x.data)


def test_backward_reaches_every_leaf_once_in_a_wide_graph():
    leaves = [Tensor(np.array(float(i))) for i in range(50)]
    total = leaves[0]
    for leaf in leaves[1:]:
        total = total + leaf * leaf
    total.backward()
    assert leaves[0].grad == 1.0
    for i, leaf in enumerate(leaves[1:], start=1):
        assert leaf.grad == 2.0 * i


def test_mytorch_tensor_function():
    t = mytorch.tensor([1.0, 2.0], requires_grad=False)
    assert isinstance(t, Tensor)
    assert t.trainable is False
    np.testing.assert_array_equal(t.data, [1.0, 2.0])


def test_backward_seed_is_copied_not_aliased():
    x = Tensor(np.ones((2, 2), np.float32))
    seed = np.full((2, 2), 3.0, np.float32)
    x.zero_grad()
    x.backward(seed)
    x.backward(seed)  # accumulates into x.grad, which must not be `seed` itself
    np.testing.assert_array_equal(seed, np.full((2, 2), 3.0, np.float32))
    np.testing.assert_array_equal(x.grad, np.full((2, 2), 6.0, np.float32))


def test_topological_order_puts_inputs_before_users_once():
    from mytorch.tensor import _topological_order

    x = Tensor(np.ones(3, np.float32))
    a = x * 2
    b = a + x
    c = b * a
    order = _topological_order(c)
    assert len(order) == len({id(t) for t in order})  # each once
    assert {id(t) for t in (x, a, b, c)} <= {id(t) for t in order}
    position = {id(t): k for k, t in enumerate(order)}
    for t in order:
        assert all(position[id(p)] < position[id(t)] for p in t._prev)
    assert order[-1] is c
