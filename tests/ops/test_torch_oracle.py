"""The op table's forward values and gradients compared with PyTorch on the same inputs."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import mytorch
from mytorch import Tensor

from .cases import TORCH_CASES, OpCase, distinct, normal

torch = pytest.importorskip("torch")


def _run_both(case: OpCase, dtype):
    """Run the case in mytorch and in torch on the same inputs; return outputs and leaves."""
    arrays = [np.array(a, dtype=dtype) for a in case.inputs]
    ours = [Tensor(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    return case.fn(mytorch, *ours), ours, case.fn(torch, *theirs), theirs


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_forward_and_gradients_match_torch_float64(case: OpCase):
    out, ours, expected, theirs = _run_both(case, np.float64)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)

    weights = np.random.default_rng(1).standard_normal(out.shape)
    (out * Tensor(weights)).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    for index, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        assert reference.grad is not None, f"torch gave no gradient for input {index}"
        np.testing.assert_allclose(
            mine.grad,
            reference.grad.numpy(),
            rtol=1e-9,
            atol=1e-12,
            err_msg=f"gradient of input {index}",
        )


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_forward_matches_torch_float32(case: OpCase):
    out, _, expected, _ = _run_both(case, np.float32)
    assert out.dtype == np.float32
    assert expected.dtype == torch.float32
    scale = max([1.0] + [float(np.max(np.abs(a), initial=0.0)) for a in case.inputs])
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=2e-5, atol=2e-6 * scale)


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_max_min_indices_match_torch(name, dim, keepdim):
    data = distinct(3, 4, 2)
    values, indices = getattr(Tensor(data), name)(dim, keepdim=keepdim)
    expected = getattr(torch.tensor(data), name)(dim, keepdim=keepdim)
    np.testing.assert_array_equal(values.data, expected.values.numpy())
    np.testing.assert_array_equal(indices.data, expected.indices.numpy())


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_argmax_matches_torch(dim):
    data = distinct(3, 4)
    ours = Tensor(data).argmax() if dim is None else Tensor(data).argmax(dim)
    theirs = torch.tensor(data).argmax() if dim is None else torch.tensor(data).argmax(dim)
    np.testing.assert_array_equal(np.asarray(ours.data), theirs.numpy())


@pytest.mark.parametrize(
    "op",
    [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne],
    ids=lambda f: f.__name__,
)
def test_comparisons_match_torch(op):
    a = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    b = np.array([1.0, 1.0, 0.0])
    ours = op(Tensor(a), Tensor(b))
    theirs = op(torch.tensor(a), torch.tensor(b))
    np.testing.assert_array_equal(ours.data, theirs.numpy())


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, a: a.size(),
        lambda m, a: a.size(1),
        lambda m, a: a.size(-1),
        lambda m, a: a.ndim,
        lambda m, a: tuple(a.shape),
        lambda m, a: a.sum().item(),
    ],
    ids=["size", "size-dim", "size-negative-dim", "ndim", "shape", "item"],
)
def test_properties_match_torch(fn):
    data = normal(2, 3, 4)
    ours = fn(mytorch, Tensor(data))
    theirs = fn(torch, torch.tensor(data))
    assert ours == pytest.approx(theirs)
    assert type(ours) is type(theirs) or isinstance(theirs, tuple)


def test_clamp_gradient_at_boundaries_outside_and_inside_matches_torch():
    data = np.array([-2.0, -0.3, 0.0, 0.4, 3.0])
    x = Tensor(data.copy())
    x.clamp(min=-1.0, max=1.0).sum().backward()
    reference = torch.tensor(data, requires_grad=True)
    reference.clamp(min=-1.0, max=1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, reference.grad.numpy())


def test_relu_gradient_matches_torch_away_from_zero():
    data = np.array([-2.0, -0.3, 0.4, 3.0])
    x = Tensor(data.copy())
    x.relu().sum().backward()
    reference = torch.tensor(data, requires_grad=True)
    reference.relu().sum().backward()
    np.testing.assert_array_equal(x.grad, reference.grad.numpy())
