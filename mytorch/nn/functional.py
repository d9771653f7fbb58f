"""Stateless versions of the layers and losses (`mytorch.nn.functional`, PyTorch's `F`)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mytorch.tensor import Tensor, apply, is_concrete

from .module import shape_str

__all__ = [
    "cross_entropy",
    "dropout",
    "embedding",
    "linear",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "one_hot",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]

_REDUCTIONS = ("mean", "sum", "none")


# ---- helpers -------------------------------------------------------------------------------


def _dtype_name(t: Tensor) -> str:
    return np.dtype(t.dtype).name


def _check_tensor(value: Any, what: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{what} must be a mytorch Tensor, got {type(value).__name__}")


def as_index_tensor(value: Any, what: str = "indices") -> Tensor:
    """Integer data (numpy int array, list of ints, Tensor of whole numbers) as an int64 Tensor."""
    if isinstance(value, Tensor):
        kind = np.dtype(value.dtype).kind
        if kind in "iu":
            if np.dtype(value.dtype) == np.int64:
                return value
            return apply("cast", value, dtype="int64")
        if kind != "f":
            raise TypeError(f"{what} must hold integers, got a Tensor of dtype {value.dtype}")
        # Values can only be checked on concrete tensors; a traced tensor is cast as it is.
        if is_concrete(value):
            _check_whole(value.data, what)
        return apply("cast", value, dtype="int64")
    array = np.asarray(value)
    if array.dtype.kind == "f":
        _check_whole(array, what)
    elif array.dtype.kind not in "iu":
        raise TypeError(
            f"{what} must be integers (a numpy int array, a list of ints or a Tensor), "
            f"got {type(value).__name__} of dtype {array.dtype}"
        )
    return Tensor(array.astype(np.int64), dtype=np.int64, trainable=False)


def _check_whole(array: np.ndarray, what: str) -> None:
    whole = np.isfinite(array) & (array == np.round(array))
    if not np.all(whole):
        bad = array[~whole].ravel()[0]
        raise ValueError(f"{what} must hold whole numbers, got {bad}")


def check_index_range(indices: Tensor, size: int, message: str) -> None:
    """IndexError `message.format(index=...)` if a concrete index is outside [0, size)."""
    if not is_concrete(indices):
        return
    data = indices.data
    bad = (data < 0) | (data >= size)
    if np.any(bad):
        raise IndexError(message.format(index=int(data[bad].ravel()[0])))


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _implicit_softmax_dim(name: str, ndim: int) -> int:
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. "
        "Change the call to include dim=X as an argument.",
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


# ---- activations ---------------------------------------------------------------------------


def relu(input: Tensor) -> Tensor:
    """max(x, 0) elementwise."""
    return input.relu()


def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent elementwise."""
    return input.tanh()


def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)) elementwise."""
    return input.sigmoid()


def softmax(input: Tensor, dim: int | None = None) -> Tensor:
    """exp(x) normalised to sum to 1 along `dim`."""
    if dim is None:
        dim = _implicit_softmax_dim("softmax", input.ndim)
    return input.softmax(dim)


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:
    """log(softmax(x, dim)), computed stably."""
    if dim is None:
        dim = _implicit_softmax_dim("log_softmax", input.ndim)
    return input.log_softmax(dim)


# ---- layers --------------------------------------------------------------------------------


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, with weight of shape (out_features, in_features)."""
    _check_tensor(input, "linear input")
    if input.ndim == 0 or input.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"linear: input of shape {shape_str(input.shape)} does not match weight of shape "
            f"{shape_str(weight.shape)} (the input's last dim must be {weight.shape[-1]})"
        )
    out = input @ weight.T
    if bias is not None:
        out = out + bias
    return out


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero elements with probability p and scale the rest by 1/(1-p); identity unless training."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    mask = apply("dropout_mask", shape=tuple(input.shape), p=float(p), dtype=_dtype_name(input))
    return input * mask


def embedding(input: Any, weight: Tensor) -> Tensor:
    """Rows of `weight` picked by integer indices of any shape: shape input.shape + (dim,)."""
    indices = as_index_tensor(input, "embedding indices")
    num = weight.shape[0]
    check_index_range(
        indices,
        num,
        f"embedding index {{index}} is out of range for {num} embeddings "
        f"(valid indices are 0..{num - 1})",
    )
    return apply("embedding", weight, indices)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot vectors of integer class values: shape tensor.shape + (num_classes,).
    num_classes=-1 takes the largest value + 1 (the values must then be concrete, not traced).
    `.float()` makes them float32 (a product with them is a row lookup: see the `one_hot_lookup`
    pass)."""
    _check_tensor(tensor, "one_hot input")
    if np.dtype(tensor.dtype).kind not in "iu":
        raise TypeError(f"one_hot needs a tensor of integers, got dtype {_dtype_name(tensor)}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < -1:
        raise ValueError(f"one_hot: num_classes must be -1 or a count >= 0, got {num_classes!r}")
    indices = as_index_tensor(tensor, "one_hot input")
    if is_concrete(indices) and indices.data.size and indices.data.min() < 0:
        raise IndexError(
            f"one_hot: class value {int(indices.data.min())} is negative "
            f"(num_classes={num_classes}; class values are 0..num_classes-1)"
        )
    if num_classes == -1:
        if not is_concrete(indices):
            raise ValueError(
                "one_hot: num_classes=-1 infers the count from the values, which are not known "
                "while tracing: pass num_classes"
            )
        if indices.data.size == 0:
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor: pass it")
        num_classes = int(indices.data.max()) + 1
    check_index_range(
        indices,
        num_classes,
        f"one_hot: class value {{index}} is out of range for num_classes={num_classes} "
        f"(valid values are 0..{num_classes - 1})",
    )
    return apply("one_hot", indices, num_classes=int(num_classes), dtype="int64")


# ---- losses --------------------------------------------------------------------------------


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean (or sum) of squared differences between input and target."""
    _check_reduction(reduction)
    _check_tensor(input, "mse_loss input")
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target, dtype=input.dtype), trainable=False)
    if tuple(target.shape) != tuple(input.shape):
        try:
            np.broadcast_shapes(tuple(input.shape), tuple(target.shape))
        except ValueError:
            raise ValueError(
                f"mse_loss: input of shape {shape_str(input.shape)} and target of shape "
                f"{shape_str(target.shape)} cannot be broadcast together"
            ) from None
        warnings.warn(
            f"mse_loss: target shape {shape_str(target.shape)} differs from input shape "
            f"{shape_str(input.shape)}; they will be broadcast, which is often a mistake",
            stacklevel=2,
        )
    diff = input - target
    return _reduce(diff * diff, reduction)


def _class_dim(input: Tensor, name: str) -> int:
    if input.ndim == 0:
        raise ValueError(f"{name}: input must have a class dimension, got a 0-d tensor")
    return 0 if input.ndim == 1 else 1


def nll_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class-index targets given log-probabilities (N, C) or (C,)."""
    _check_reduction(reduction)
    _check_tensor(input, "nll_loss input")
    class_dim = _class_dim(input, "nll_loss")
    num_classes = input.shape[class_dim]
    target = as_index_tensor(target, "nll_loss target")
    expected = tuple(input.shape[:class_dim]) + tuple(input.shape[class_dim + 1 :])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"nll_loss: input of shape {shape_str(input.shape)} needs a target of shape "
            f"{shape_str(expected)}, got {shape_str(target.shape)}"
        )
    check_index_range(
        target,
        num_classes,
        f"nll_loss: target class {{index}} is out of range for "
        f"{num_classes} classes (valid classes are 0..{num_classes - 1})",
    )
    # One-hot times log-probs picks each target's entry with ordinary ops, so this also traces.
    one_hot = apply("one_hot", target, num_classes=num_classes, dtype=_dtype_name(input))
    if input.ndim > 2:  # (N, C, d1, ...): move the class dim last, next to the one-hot's.
        input = input.permute(0, *range(2, input.ndim), 1)
    picked = -(input * one_hot).sum(dim=-1)
    return _reduce(picked, reduction)


def cross_entropy(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of scores (N, C) or (C,) against class indices or probabilities."""
    _check_reduction(reduction)
    _check_tensor(input, "cross_entropy input")
    class_dim = _class_dim(input, "cross_entropy")
    log_probs = input.log_softmax(class_dim)
    soft = isinstance(target, (Tensor, np.ndarray)) and np.dtype(target.dtype).kind == "f"
    if soft and tuple(target.shape) == tuple(input.shape):
        # Class probabilities, as PyTorch accepts when the target has the input's shape.
        if not isinstance(target, Tensor):
            target = Tensor(np.asarray(target, dtype=input.dtype), trainable=False)
        return _reduce(-(log_probs * target).sum(dim=class_dim), reduction)
    return nll_loss(log_probs, target, reduction)
