"""The op registry: every op is defined once, here, and used by eager mode, tracing and backends.

An op is an `OpDef`:
- `impl(*arrays, **params)`: the numpy reference kernel, the only forward semantics;
- `shape(*types, **params) -> TensorType`: the shape and dtype rule. Its arguments are anything
  with `.shape` and `.dtype` (numpy arrays in eager mode, abstract values while tracing). It
  validates, and raises ValueError/IndexError/TypeError naming the shapes;
- `vjp(g, out, *arrays, **params) -> tuple`: one gradient per input (None for no gradient).

VJP rules are written with Python operators and `bind`, never with numpy calls, so the same rule
runs on numpy arrays (eager backward) and on graph values (autodiff over the IR): `bind` calls
the op's `impl` when every argument is concrete, and otherwise hands the op to the argument's own
`_bind` (the graph builder's interception point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


class TensorType(NamedTuple):
    """The abstract value of a tensor: its shape and numpy dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{dtype_name(self.dtype)}[{dims}]"


@dataclass(frozen=True)
class OpDef:
    """One op: its name, reference kernel, shape rule, gradient rule and flags."""

    name: str
    impl: Callable[..., Any]
    shape: Callable[..., TensorType]
    vjp: Callable[..., tuple]
    pure: bool = True  # False for random ops: never CSE'd, folded or removed as dead
    commutative: bool = False
    differentiable: bool = True  # False: vjp returns all None (comparisons, argmax, ...)

    def __repr__(self) -> str:
        return f"OpDef({self.name!r})"


OPS: dict[str, OpDef] = {}


def def_op(name: str, *, impl, shape, vjp, **flags) -> OpDef:
    """Define and register an op; a duplicate name is an error."""
    if name in OPS:
        raise ValueError(f"op {name!r} is already defined")
    op = OpDef(name, impl, shape, vjp, **flags)
    OPS[name] = op
    return op


def get_op(name: str) -> OpDef:
    """The registered op called `name`."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


_CONCRETE = (np.ndarray, np.generic, int, float, bool)


def bind(name: str, *args, **params):
    """Apply op `name`: on numpy values run its reference kernel, else let the values record it."""
    for a in args:
        if not isinstance(a, _CONCRETE):
            return type(a)._bind(name, args, params)
    return OPS[name].impl(*args, **params)


# ---- dtype helpers ---------------------------------------------------------------------------

DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "bool": np.dtype(np.bool_),
}
_SHORT = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool"}


def as_dtype(dtype) -> np.dtype:
    """A numpy dtype from a name ("float32"), a numpy dtype or a numpy scalar type."""
    dt = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise TypeError(f"unsupported dtype {dt}; mytorch supports {', '.join(DTYPES)}")
    return dt


def dtype_name(dtype) -> str:
    """Short printable dtype name: f32, f64, i64, bool."""
    return _SHORT[np.dtype(dtype).name]


def result_dtype(*types) -> np.dtype:
    """NumPy's promotion rule over the inputs' dtypes."""
    first = types[0].dtype
    if all(t.dtype == first for t in types):
        return np.dtype(first)
    return np.result_type(*(t.dtype for t in types))


def is_float(dtype) -> bool:
    """True for floating-point dtypes."""
    return np.dtype(dtype).kind == "f"


# ---- shape helpers shared by the op families --------------------------------------------------


def fmt(shape) -> str:
    """A shape as PyTorch prints it in messages: (2, 3)."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def normalize_dim(dim: int, ndim: int, what: str = "dim") -> int:
    """A dim in [-ndim, ndim) made non-negative, or an IndexError naming both."""
    if dim.__class__ is int and 0 <= dim < ndim:  # the common case, checked cheaply (tracing
        return dim  # a T-step loop runs this several times per step)
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{what} must be an int, got {type(dim).__name__}")
    lo, hi = -max(ndim, 1), max(ndim, 1) - 1
    if not lo <= dim <= hi:
        raise IndexError(
            f"{what} out of range (expected to be in range of [{lo}, {hi}], but got {dim})"
        )
    return int(dim) % max(ndim, 1)


def broadcast_shapes(*shapes) -> tuple[int, ...]:
    """NumPy broadcasting of shapes, or a ValueError naming them."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        for k, n in enumerate(shape, start=ndim - len(shape)):
            if n != out[k]:
                if out[k] != 1 and n != 1:
                    raise ValueError(
                        "shapes "
                        + " and ".join(fmt(s) for s in shapes)
                        + " cannot be broadcast together"
                    )
                out[k] = n if out[k] == 1 else out[k]
    return tuple(out)


def same_type(x, **params) -> TensorType:
    """Shape rule of shape- and dtype-preserving ops."""
    return TensorType(tuple(x.shape), np.dtype(x.dtype))


def no_grad_vjp(g, out, *args, **params) -> tuple:
    """Gradient rule of ops with no gradient."""
    return (None,) * len(args)
