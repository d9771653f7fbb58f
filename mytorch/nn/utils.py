"""Training utilities (`nn.utils`): gradient clipping."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from mytorch.tensor import Tensor, wrap

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0
) -> Tensor:
    """Scale all gradients in place so their joint norm is at most `max_norm`; returns that norm.

    As in PyTorch, the norm is taken over all gradients together (as if concatenated into one
    vector), and gradients are multiplied by max_norm / (norm + 1e-6) only when that is below 1.
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return wrap(np.asarray(0.0, dtype=np.float32))
    norm_type = float(norm_type)
    dtype = grads[0].dtype
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    elif norm_type == 2.0:  # the common case: one pass of multiply-adds per gradient
        # In the gradients' dtype, as PyTorch does: einsum's SIMD loop keeps many partial sums
        # (relative error ~1e-7 on float32), where a float64 copy first cost 4x the time.
        # einsum, not BLAS's dot: no threads woken for a short reduction.
        flat = (g.ravel() for g in grads)  # (a copy only for a non-contiguous gradient)
        total = math.sqrt(sum(float(np.einsum("i,i->", v, v)) for v in flat))
    else:
        total = sum(float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in grads)
        total = total ** (1.0 / norm_type)
    clip_coef = float(max_norm) / (total + 1e-6)
    if clip_coef < 1.0:
        for g in grads:
            g *= clip_coef  # in place: the optimizer reads p.grad afterwards
    # wrap: a constant tensor as Tensor(..., trainable=False) makes it, without its ~6 us of
    # dtype checks and eager zeros for `.grad`
    return wrap(np.asarray(total, dtype=dtype))
