"""Gradients of every differentiable op against central finite differences, and autograd rules."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import mytorch
from mytorch import Tensor

from .cases import CASES, OpCase, normal, positive


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gradient_matches_finite_differences(case: OpCase, gradcheck):
    gradcheck(lambda *ts: case.fn(mytorch, *ts), *case.inputs)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("array+tensor", lambda a: np.array([1.0, -2.0, 0.5]) + a),
        ("array-tensor", lambda a: np.array([1.0, -2.0, 0.5]) - a),
        ("array*tensor", lambda a: np.array([1.0, -2.0, 0.5]) * a),
        ("array/tensor", lambda a: np.array([1.0, -2.0, 0.5]) / a),
        ("array**tensor", lambda a: np.array([1.5, 2.0, 0.5]) ** a),
        ("array@tensor", lambda a: np.arange(6.0).reshape(2, 3) @ a.T),
        ("tensor-array", lambda a: a - np.array([1.0, -2.0, 0.5])),
    ],
)
def test_gradient_with_numpy_array_operand(name, fn, gradcheck):
    gradcheck(fn, positive(2, 3))


def test_gradient_of_0d_tensor_times_tensor(gradcheck):
    gradcheck(lambda s, a: s * a + s, normal(), normal(3, 4))


# --- autograd rules ------------------------------------------------------------------------------
def test_seed_gradient_of_scalar_is_one():
    x = Tensor(np.array([1.0, 2.0, 3.0]))
    loss = (x * 2.0).sum()
    loss.backward()
    np.testing.assert_array_equal(loss.grad, 1.0)
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_gradients_accumulate_until_zero_grad():
    data = normal(2, 3)
    x = Tensor(data.copy())
    single = 2 * data  # d/dx sum(x**2)
    (x**2).sum().backward()
    np.testing.assert_allclose(x.grad, single, rtol=1e-6)
    (x**2).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * single, rtol=1e-6)
    x.zero_grad()
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))
    assert x.grad.shape == (2, 3)
    (x**2).sum().backward()
    np.testing.assert_allclose(x.grad, single, rtol=1e-6)


def test_backward_of_non_scalar_without_grad_raises():
    x = Tensor(normal(2, 3))
    with pytest.raises((ValueError, TypeError)):
        (x * 2).backward()


def test_backward_with_explicit_grad_for_non_scalar():
    data = normal(2, 3)
    seed = normal(2, 3)
    x = Tensor(data.copy())
    y = x * x
    y.backward(grad=seed)
    np.testing.assert_allclose(x.grad, 2 * data * seed, rtol=1e-6)


def test_backward_with_explicit_grad_as_positional_argument():
    x = Tensor(np.array([1.0, 2.0]))
    (x * 3).backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [3.0, 30.0])


def test_tensor_used_twice_gets_both_contributions():
    x = Tensor(np.array([1.5, -2.0]))
    a = x * 3
    b = x * x
    (a + b).sum().backward()
    np.testing.assert_allclose(x.grad, 3 + 2 * x.data)


def test_shared_intermediate_is_backpropagated_once_with_full_gradient():
    # A non-leaf used twice: its gradient must be complete before it flows further down.
    x = Tensor(np.array([0.5, -1.0]))
    h = x.tanh()
    loss = (h * h + h).sum()
    loss.backward()
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, (2 * t + 1) * (1 - t * t), rtol=1e-6)


def test_diamond_graph_gradient():
    x = Tensor(np.array(2.0))
    a = x * 3.0
    b = a.exp()
    c = a * 2.0
    (b + c).backward()
    np.testing.assert_allclose(x.grad, 3 * np.exp(6.0) + 6.0, rtol=1e-6)


def test_long_chain_backward_does_not_hit_recursion_limit():
    steps = 10_000
    assert sys.getrecursionlimit() < steps  # a recursive topological sort would overflow
    x = Tensor(np.array(1.0))
    y = x
    for _ in range(steps):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad, 1.0001**steps, rtol=1e-9)


def test_long_chain_of_tensor_tensor_ops():
    x = Tensor(np.array([0.1, 0.2]))
    y = x
    for _ in range(5_000):
        y = y + x * 0.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.5, 1.5], rtol=1e-9)


def test_no_grad_blocks_gradient_flow():
    x = Tensor(np.array([1.0, 2.0]))
    with mytorch.no_grad():
        frozen = x * 5
    loss = (frozen * x).sum()
    loss.backward()
    # Only the recorded factor contributes: d/dx (c * x) with c = 5 * x treated as a constant.
    np.testing.assert_allclose(x.grad, frozen.data)


def test_detach_blocks_gradient_flow():
    x = Tensor(np.array([1.0, 2.0]))
    loss = (x.detach() * x).sum()
    loss.backward()
    np.testing.assert_allclose(x.grad, x.data)


def test_comparison_results_do_not_break_backward():
    x = Tensor(np.array([-1.0, 2.0, 3.0]))
    mask = x > 0
    (x * mask).sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, 1.0, 1.0])


def test_gradient_shape_and_dtype_follow_data():
    for dtype in (np.float32, np.float64):
        x = Tensor(np.ones((2, 3), dtype=dtype))
        y = Tensor(np.ones((3,), dtype=dtype))
        (x * y).sum().backward()
        assert x.grad.shape == (2, 3) and y.grad.shape == (3,)
        assert x.grad.dtype == dtype and y.grad.dtype == dtype
        np.testing.assert_array_equal(y.grad, [2.0, 2.0, 2.0])


def test_integer_index_gradient_accumulates_repeats():
    x = Tensor(np.array([1.0, 2.0, 3.0]))
    x[np.array([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0])
