"""The `mytorch.*` functions: tensor factories and functional forms of the Tensor methods."""

from __future__ import annotations

import numpy as np

from .ops.random import manual_seed  # noqa: F401  (re-exported)
from .ops.registry import as_dtype
from .tensor import Tensor, apply, get_default_dtype


def _dtype(dtype) -> np.dtype:
    return get_default_dtype() if dtype is None else as_dtype(dtype)


def _shape(shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for d in shape:
        if not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(f"invalid shape {tuple(shape)}: sizes must be non-negative ints")
    return tuple(int(d) for d in shape)


def tensor(data, *, dtype=None, trainable=False, requires_grad=None) -> Tensor:
    """A new tensor holding a copy of `data` (PyTorch's `torch.tensor`)."""
    data = data.data if isinstance(data, Tensor) else data
    if isinstance(data, np.ndarray):
        data = data.copy()
    return Tensor(data, trainable=trainable, dtype=dtype, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with a numpy array (its dtype kept)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy array, got {type(array).__name__}")
    return Tensor(array, trainable=False, dtype=array.dtype)


def zeros(*shape, dtype=None, trainable=False, requires_grad=None) -> Tensor:
    """A tensor of zeros; the shape as varargs or one tuple."""
    dtype = _dtype(dtype)
    data = np.zeros(_shape(shape), dtype)
    return Tensor(data, trainable=trainable, requires_grad=requires_grad, dtype=dtype)


def ones(*shape, dtype=None, trainable=False, requires_grad=None) -> Tensor:
    """A tensor of ones; the shape as varargs or one tuple."""
    dtype = _dtype(dtype)
    data = np.ones(_shape(shape), dtype)
    return Tensor(data, trainable=trainable, requires_grad=requires_grad, dtype=dtype)


def zeros_like(t: Tensor, *, dtype=None, trainable=False) -> Tensor:
    return zeros(t.shape, dtype=t.dtype if dtype is None else dtype, trainable=trainable)


def ones_like(t: Tensor, *, dtype=None, trainable=False) -> Tensor:
    return ones(t.shape, dtype=t.dtype if dtype is None else dtype, trainable=trainable)


def _random(op_name, shape, dtype, trainable, requires_grad) -> Tensor:
    out = apply(op_name, shape=_shape(shape), dtype=_dtype(dtype).name)
    out.trainable = bool(trainable if requires_grad is None else requires_grad)
    return out


def randn(*shape, dtype=None, trainable=False, requires_grad=None) -> Tensor:
    """Standard normal samples from mytorch's generator (see `manual_seed`)."""
    return _random("randn", shape, dtype, trainable, requires_grad)


def rand(*shape, dtype=None, trainable=False, requires_grad=None) -> Tensor:
    """Uniform [0, 1) samples from mytorch's generator (see `manual_seed`)."""
    return _random("rand", shape, dtype, trainable, requires_grad)


def arange(start, end=None, step=1, *, dtype=None, trainable=False) -> Tensor:
    """Evenly spaced values in [start, end), as PyTorch (integers give int64)."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    values = np.arange(start, end, step)
    if dtype is None:
        dtype = np.int64 if values.dtype.kind in "iu" else get_default_dtype()
    return Tensor(values, trainable=trainable, dtype=dtype)


def cat(tensors, dim=0) -> Tensor:
    """Concatenate tensors along an existing dim."""
    return Tensor.cat(tensors, dim)


def stack(tensors, dim=0) -> Tensor:
    """Stack same-shaped tensors along a new dim."""
    return Tensor.stack(tensors, dim)


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy's `matmul` semantics."""
    return Tensor.__matmul__(a if isinstance(a, Tensor) else tensor(a), b)


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def relu(x: Tensor) -> Tensor:
    return x.relu()


def exp(x: Tensor) -> Tensor:
    return x.exp()


def log(x: Tensor) -> Tensor:
    return x.log()


def softmax(x: Tensor, dim: int) -> Tensor:
    return x.softmax(dim)


def log_softmax(x: Tensor, dim: int) -> Tensor:
    return x.log_softmax(dim)
