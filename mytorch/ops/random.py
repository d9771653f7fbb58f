"""Random ops and mytorch's random number generator (seeded by `manual_seed`).

Random ops are impure: the compiler never folds, merges or removes them.
"""

from __future__ import annotations

import numpy as np

from .registry import TensorType, as_dtype, def_op, fmt, no_grad_vjp

_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator behind every random op."""
    global _rng
    _rng = np.random.default_rng(seed)


def _random_type(shape, dtype, **params) -> TensorType:
    shape = tuple(shape)
    if any(not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        raise ValueError(f"invalid shape {fmt(shape)}: sizes must be non-negative ints")
    return TensorType(shape, as_dtype(dtype))


def _dropout_mask(shape, p, dtype):
    keep = _rng.random(shape) >= p
    return (keep / (1.0 - p)).astype(as_dtype(dtype))


def _dropout_type(shape, p, dtype) -> TensorType:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability has to be in [0, 1), got {p}")
    return _random_type(shape, dtype)


def_op(
    "randn",
    impl=lambda shape, dtype: _rng.standard_normal(shape).astype(as_dtype(dtype)),
    shape=_random_type,
    vjp=no_grad_vjp,
    pure=False,
    differentiable=False,
)
def_op(
    "rand",
    impl=lambda shape, dtype: _rng.random(shape).astype(as_dtype(dtype)),
    shape=_random_type,
    vjp=no_grad_vjp,
    pure=False,
    differentiable=False,
)
def_op(
    "dropout_mask",
    impl=_dropout_mask,
    shape=_dropout_type,
    vjp=no_grad_vjp,
    pure=False,
    differentiable=False,
)
