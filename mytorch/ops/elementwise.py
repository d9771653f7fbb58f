"""Elementwise ops: arithmetic with NumPy broadcasting, comparisons, activations, casts."""

from __future__ import annotations

import numpy as np

from .registry import (
    TensorType,
    as_dtype,
    bind,
    broadcast_shapes,
    def_op,
    is_float,
    no_grad_vjp,
    result_dtype,
    same_type,
)


def unbroadcast(g, shape):
    """Sum a broadcast gradient back down to `shape` (a no-op when the shapes agree)."""
    if tuple(g.shape) == tuple(shape):
        return g
    return bind("sum_to", g, shape=tuple(shape))


def cast(x, dtype):
    """`x` converted to `dtype` (a no-op when it already has it)."""
    if np.dtype(x.dtype) == np.dtype(dtype):
        return x
    return bind("cast", x, dtype=np.dtype(dtype).name)


def binary_type(a, b, **params) -> TensorType:
    """Shape rule of broadcasting binary ops: broadcast shapes, NumPy dtype promotion."""
    return TensorType(broadcast_shapes(a.shape, b.shape), result_dtype(a, b))


def compare_type(a, b, **params) -> TensorType:
    """Shape rule of comparisons: broadcast shapes, bool result."""
    return TensorType(broadcast_shapes(a.shape, b.shape), np.dtype(np.bool_))


def _binary(name, impl, vjp, **flags):
    return def_op(name, impl=impl, shape=binary_type, vjp=vjp, **flags)


_binary(
    "add",
    np.add,
    lambda g, out, a, b: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)),
    commutative=True,
)
_binary(
    "sub",
    np.subtract,
    lambda g, out, a, b: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)),
)
_binary(
    "mul",
    np.multiply,
    lambda g, out, a, b: (unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)),
    commutative=True,
)


def _div_type(a, b) -> TensorType:
    """True division: integer operands give float64, as np.divide does."""
    out = binary_type(a, b)
    return out if is_float(out.dtype) else TensorType(out.shape, np.dtype(np.float64))


def_op(
    "div",
    impl=np.divide,
    shape=_div_type,
    vjp=lambda g, out, a, b: (unbroadcast(g / b, a.shape), unbroadcast(-g * out / b, b.shape)),
)


def _pow_vjp(g, out, a, b):
    ga = g * b * a ** (b - 1)
    # d/db a**b = a**b * log(a), taken as 0 where a <= 0 (there the real power is undefined or
    # its log-derivative is), so a constant exponent such as x ** 2 never produces NaNs.
    safe_a = bind("where", a > 0, a, 1)
    gb = g * out * bind("log", safe_a)
    return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)


_binary("pow", np.power, _pow_vjp)


def _where_type(cond, a, b) -> TensorType:
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be bool, got {cond.dtype}")
    shape = broadcast_shapes(cond.shape, a.shape, b.shape)
    return TensorType(shape, result_dtype(a, b))


def _where_vjp(g, out, cond, a, b):
    zero = bind("where", cond, 0, g)
    return None, unbroadcast(g - zero, a.shape), unbroadcast(zero, b.shape)


def_op("where", impl=np.where, shape=_where_type, vjp=_where_vjp)

for _name, _impl in [
    ("eq", np.equal),
    ("ne", np.not_equal),
    ("lt", np.less),
    ("le", np.less_equal),
    ("gt", np.greater),
    ("ge", np.greater_equal),
]:
    def_op(_name, impl=_impl, shape=compare_type, vjp=no_grad_vjp, differentiable=False)


def _float_type(x, **params) -> TensorType:
    if not is_float(x.dtype):
        raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}")
    return same_type(x)


def _unary(name, impl, vjp, float_only=True):
    return def_op(name, impl=impl, shape=_float_type if float_only else same_type, vjp=vjp)


def _sigmoid(x):
    # tanh form: stable for large |x| without overflow warnings
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_unary("neg", np.negative, lambda g, out, x: (-g,), float_only=False)
_unary("exp", np.exp, lambda g, out, x: (g * out,))
_unary("log", np.log, lambda g, out, x: (g / x,))
_unary("sqrt", np.sqrt, lambda g, out, x: (g * 0.5 / out,))
_unary("tanh", np.tanh, lambda g, out, x: (g * (1 - out * out),))
_unary("sigmoid", _sigmoid, lambda g, out, x: (g * out * (1 - out),))
_unary("relu", lambda x: np.maximum(x, 0), lambda g, out, x: (g * (x > 0),), float_only=False)
_unary("abs", np.abs, lambda g, out, x: (g * (x > 0) - g * (x < 0),), float_only=False)


def _clamp_impl(x, min=None, max=None):
    if min is not None:
        x = np.maximum(x, min)
    if max is not None:
        x = np.minimum(x, max)
    return x


def _clamp_vjp(g, out, x, min=None, max=None):
    if min is not None:
        g = g * (x >= min)
    if max is not None:
        g = g * (x <= max)
    return (g,)


def _clamp_type(x, min=None, max=None) -> TensorType:
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return same_type(x)


def_op("clamp", impl=_clamp_impl, shape=_clamp_type, vjp=_clamp_vjp)


def _cast_vjp(g, out, x, dtype):
    # Only float-to-float casts carry a gradient.
    return (cast(g, x.dtype) if is_float(x.dtype) and is_float(dtype) else None,)


def_op(
    "cast",
    impl=lambda x, dtype: x.astype(as_dtype(dtype)),
    shape=lambda x, dtype: TensorType(tuple(x.shape), as_dtype(dtype)),
    vjp=_cast_vjp,
)
