"""Shared test setup: the repo root on sys.path, and a finite-difference gradient checker."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

# NOTE: the package is not necessarily pip-installed; make `import mytorch` find this checkout.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def numeric_gradcheck(
    fn: Callable,
    *arrays,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    seed: int = 0,
) -> None:
    """Compare every input's autograd .grad with central differences, in float64.

    `fn` takes one float64 Tensor per array and returns a Tensor. Its output is reduced with a
    fixed random weighting, `(out * w).sum()`, so every output element's gradient matters and
    no two elements can cancel by symmetry.
    """
    import mytorch
    from mytorch import Tensor

    base = [np.array(a, dtype=np.float64) for a in arrays]
    inputs = [Tensor(a.copy()) for a in base]
    out = fn(*inputs)
    assert isinstance(out, Tensor), f"gradcheck: fn must return a Tensor, got {type(out)}"
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    loss = (out * Tensor(weights)).sum()
    loss.backward()

    def weighted_output(values: list[np.ndarray]) -> float:
        with mytorch.no_grad():
            result = fn(*[Tensor(v) for v in values])
        return float(np.sum(np.asarray(result.data, dtype=np.float64) * weights))

    for index, (array, tensor) in enumerate(zip(base, inputs, strict=True)):
        numeric = np.zeros_like(array)
        for position in np.ndindex(array.shape):
            shifted = [a.copy() for a in base]
            shifted[index][position] = array[position] + eps
            upper = weighted_output(shifted)
            shifted[index][position] = array[position] - eps
            lower = weighted_output(shifted)
            numeric[position] = (upper - lower) / (2 * eps)
        assert tensor.grad.shape == array.shape, (
            f"input {index}: grad shape {tensor.grad.shape} != data shape {array.shape}"
        )
        np.testing.assert_allclose(
            tensor.grad, numeric, rtol=rtol, atol=atol, err_msg=f"gradient of input {index}"
        )


@pytest.fixture
def gradcheck() -> Callable:
    """The finite-difference gradient checker, `gradcheck(fn, *arrays)`."""
    return numeric_gradcheck
