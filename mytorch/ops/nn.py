"""Neural-network ops: softmax, log_softmax, embedding lookup, one-hot."""

from __future__ import annotations

import numpy as np

from .registry import TensorType, as_dtype, bind, def_op, fmt, is_float, normalize_dim, same_type


def _softmax_impl(x, dim):
    e = np.exp(x - np.max(x, axis=dim, keepdims=True))
    return e / np.sum(e, axis=dim, keepdims=True)


def _log_softmax_impl(x, dim):
    shifted = x - np.max(x, axis=dim, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=dim, keepdims=True))


def _softmax_type(x, dim) -> TensorType:
    normalize_dim(dim, len(x.shape))
    if not is_float(x.dtype):
        raise TypeError(f"softmax needs a floating-point tensor, got dtype {x.dtype}")
    return same_type(x)


def _softmax_vjp(g, out, x, dim):
    return (out * (g - bind("sum", g * out, dim=(dim,), keepdim=True)),)


def _log_softmax_vjp(g, out, x, dim):
    return (g - bind("exp", out) * bind("sum", g, dim=(dim,), keepdim=True),)


def_op("softmax", impl=_softmax_impl, shape=_softmax_type, vjp=_softmax_vjp)
def_op("log_softmax", impl=_log_softmax_impl, shape=_softmax_type, vjp=_log_softmax_vjp)


def _check_indices(indices, what: str) -> None:
    if np.dtype(indices.dtype).kind not in "iu":
        raise TypeError(f"{what} indices must be integers, got dtype {indices.dtype}")


def _check_range(indices: np.ndarray, n: int, what: str) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        bad = indices[(indices < 0) | (indices >= n)].ravel()[0]
        raise IndexError(f"{what}: index {bad} is out of range for {n} entries")


def _embedding_impl(weight, indices):
    _check_range(indices, weight.shape[0], "embedding")
    return weight[indices]


def _embedding_type(weight, indices) -> TensorType:
    _check_indices(indices, "embedding")
    if len(weight.shape) != 2:
        raise ValueError(f"embedding weight must be 2-D, got shape {fmt(weight.shape)}")
    return TensorType(tuple(indices.shape) + (weight.shape[1],), np.dtype(weight.dtype))


def _embedding_grad_impl(g, indices, num):
    out = np.zeros((num, g.shape[-1]), dtype=g.dtype)
    np.add.at(out, indices, g)
    return out


def _embedding_grad_type(g, indices, num) -> TensorType:
    _check_indices(indices, "embedding_grad")
    return TensorType((num, g.shape[-1]), np.dtype(g.dtype))


def_op(
    "embedding",
    impl=_embedding_impl,
    shape=_embedding_type,
    vjp=lambda g, out, weight, indices: (
        bind("embedding_grad", g, indices, num=weight.shape[0]),
        None,
    ),
)
def_op(
    "embedding_grad",
    impl=_embedding_grad_impl,
    shape=_embedding_grad_type,
    vjp=lambda gg, out, g, indices, num: (bind("embedding", gg, indices), None),
)


def _one_hot_impl(indices, num_classes, dtype):
    _check_range(indices, num_classes, "one_hot")
    return (indices[..., None] == np.arange(num_classes)).astype(as_dtype(dtype))


def _one_hot_type(indices, num_classes, dtype) -> TensorType:
    _check_indices(indices, "one_hot")
    return TensorType(tuple(indices.shape) + (int(num_classes),), as_dtype(dtype))


def_op(
    "one_hot",
    impl=_one_hot_impl,
    shape=_one_hot_type,
    vjp=lambda g, out, indices, num_classes, dtype: (None,),
    differentiable=False,
)


# ---- fused recurrent cells (made by the RNN passes) ---------------------------------------------

ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0)}


def _activation_grad(g, out, nonlinearity):
    """d act / d pre-activation, from the activation's output."""
    if nonlinearity == "tanh":
        return g * (1 - out * out)
    return g * (out > 0)


def _check_nonlinearity(nonlinearity) -> None:
    if nonlinearity not in ACTIVATIONS:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _rnn_cell_impl(x, h, w_ih, w_hh, b, nonlinearity):
    return ACTIVATIONS[nonlinearity](x @ w_ih.T + h @ w_hh.T + b)


def _rnn_cell_type(x, h, w_ih, w_hh, b, nonlinearity) -> TensorType:
    _check_nonlinearity(nonlinearity)
    shapes = ", ".join(fmt(t.shape) for t in (x, h, w_ih, w_hh, b))
    if len(x.shape) != 2 or len(h.shape) != 2 or len(w_ih.shape) != 2 or len(w_hh.shape) != 2:
        raise ValueError(f"rnn_cell expects 2-D x, h, w_ih, w_hh, got shapes {shapes}")
    (batch, inp), (batch_h, hid) = x.shape, h.shape
    if (
        batch != batch_h
        or tuple(w_ih.shape) != (hid, inp)
        or tuple(w_hh.shape) != (hid, hid)
        or tuple(b.shape) != (hid,)
    ):
        raise ValueError(
            f"rnn_cell shapes do not fit x (B, I), h (B, H), w_ih (H, I), w_hh (H, H), b (H,): "
            f"got {shapes}"
        )
    return TensorType((batch, hid), np.result_type(*(t.dtype for t in (x, h, w_ih, w_hh, b))))


def _rnn_cell_vjp(g, out, x, h, w_ih, w_hh, b, nonlinearity):
    d = _activation_grad(g, out, nonlinearity)
    d_t = bind("transpose", d, d0=0, d1=1)
    return d @ w_ih, d @ w_hh, d_t @ x, d_t @ h, bind("sum", d, dim=(0,), keepdim=False)


def_op("rnn_cell", impl=_rnn_cell_impl, shape=_rnn_cell_type, vjp=_rnn_cell_vjp)


def _rnn_step_impl(xw, h, w_hh, nonlinearity):
    return ACTIVATIONS[nonlinearity](xw + h @ w_hh.T)


def _rnn_step_type(xw, h, w_hh, nonlinearity) -> TensorType:
    _check_nonlinearity(nonlinearity)
    hid = h.shape[-1] if len(h.shape) == 2 else -1
    if tuple(xw.shape) != tuple(h.shape) or tuple(w_hh.shape) != (hid, hid):
        shapes = ", ".join(fmt(t.shape) for t in (xw, h, w_hh))
        raise ValueError(f"rnn_step expects xw (B, H), h (B, H), w_hh (H, H), got shapes {shapes}")
    return TensorType(tuple(h.shape), np.result_type(xw.dtype, h.dtype, w_hh.dtype))


def _rnn_step_vjp(g, out, xw, h, w_hh, nonlinearity):
    d = _activation_grad(g, out, nonlinearity)
    return d, d @ w_hh, bind("transpose", d, d0=0, d1=1) @ h


# An rnn_cell whose input projection (x @ w_ih.T + b) was hoisted out of the recurrence.
def_op("rnn_step", impl=_rnn_step_impl, shape=_rnn_step_type, vjp=_rnn_step_vjp)
