"""In-place parameter initialisers drawing from mytorch's RNG (seeded by `manual_seed`)."""

from __future__ import annotations

import math

import numpy as np

from mytorch.functions import rand, randn
from mytorch.tensor import Tensor, get_default_dtype


def empty(*shape: int) -> np.ndarray:
    """An uninitialised array of the default dtype, for a Parameter an initialiser then fills."""
    return np.empty(shape, dtype=np.dtype(get_default_dtype()))


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill `tensor.data` in place with U(a, b); returns the tensor."""
    u = rand(*tensor.shape).data
    tensor.data[...] = a + (b - a) * u
    return tensor


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill `tensor.data` in place with N(mean, std^2); returns the tensor."""
    z = randn(*tensor.shape).data
    tensor.data[...] = mean + std * z
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    """Fill `tensor.data` with zeros in place; returns the tensor."""
    tensor.data[...] = 0
    return tensor


def ones_(tensor: Tensor) -> Tensor:
    """Fill `tensor.data` with ones in place; returns the tensor."""
    tensor.data[...] = 1
    return tensor


def fan_in_bound(fan_in: int) -> float:
    """1/sqrt(fan_in): PyTorch's default bound for Linear (kaiming_uniform, a=sqrt(5)) and RNNs."""
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
