"""Reductions over dims: sum, mean, max, min, argmax, argmin.

The `dim` param is None (all dims) or a tuple of non-negative dims; `canonical_dims` makes it so.
"""

from __future__ import annotations

import numpy as np

from .elementwise import cast
from .registry import TensorType, bind, def_op, no_grad_vjp, normalize_dim


def canonical_dims(dim, ndim: int) -> tuple[int, ...] | None:
    """`dim` (None, an int or a sequence of ints) as None or a sorted tuple of distinct dims."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = tuple(sorted({normalize_dim(d, ndim) for d in dims}))
    if len(out) != len(dims):
        raise ValueError(f"dim {dim} repeats a dimension")
    return out


def reduced_shape(shape, dim, keepdim: bool) -> tuple[int, ...]:
    """The shape left after reducing `dim` of `shape`."""
    dims = canonical_dims(dim, len(shape))
    if dims is None:
        dims = tuple(range(len(shape)))
    if keepdim:
        return tuple(1 if i in dims else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in dims)


def _expand_back(g, x_shape, dim, keepdim):
    """Broadcast a reduced gradient back over the reduced dims of x."""
    kept = reduced_shape(x_shape, dim, keepdim=True)
    if tuple(g.shape) != kept:
        g = bind("reshape", g, shape=kept)
    if kept != tuple(x_shape):
        g = bind("broadcast_to", g, shape=tuple(x_shape))
    return g


def _count(x_shape, dim) -> int:
    dims = canonical_dims(dim, len(x_shape))
    dims = range(len(x_shape)) if dims is None else dims
    return int(np.prod([x_shape[d] for d in dims], dtype=np.int64))


def _axis(dim):
    return None if dim is None else tuple(dim) if not isinstance(dim, int) else dim


def _reduce_type(kind):
    def rule(x, dim=None, keepdim=False) -> TensorType:
        shape = reduced_shape(x.shape, dim, keepdim)
        if kind == "index":
            return TensorType(shape, np.dtype(np.int64))
        if kind == "extremum" and _count(x.shape, dim) == 0:
            raise ValueError(f"cannot take the max/min of an empty reduction over shape {x.shape}")
        dtype = np.dtype(x.dtype)
        if kind == "sum" and dtype.kind in "biu":
            dtype = np.dtype(np.int64)
        if kind == "mean" and dtype.kind != "f":
            raise TypeError(f"mean needs a floating-point tensor, got dtype {dtype}")
        return TensorType(shape, dtype)

    return rule


def _sum_vjp(g, out, x, dim=None, keepdim=False):
    return (_expand_back(g, x.shape, dim, keepdim),)


def _mean_vjp(g, out, x, dim=None, keepdim=False):
    return (_expand_back(g, x.shape, dim, keepdim) / _count(x.shape, dim),)


def _extremum_vjp(g, out, x, dim=None, keepdim=False):
    # Ties share the gradient equally (PyTorch's rule for full reductions).
    hit = cast(x == _expand_back(out, x.shape, dim, keepdim), g.dtype)
    share = hit / _expand_back(bind("sum", hit, dim=dim, keepdim=True), x.shape, dim, True)
    return (_expand_back(g, x.shape, dim, keepdim) * share,)


def _arg_impl(np_fn):
    def impl(x, dim=None, keepdim=False):
        if dim is None:
            out = np.asarray(np_fn(x))
            return out.reshape((1,) * x.ndim) if keepdim else out
        (axis,) = dim
        return np_fn(x, axis=axis, keepdims=keepdim)

    return impl


def _arg_type(x, dim=None, keepdim=False) -> TensorType:
    if dim is not None and len(canonical_dims(dim, len(x.shape))) != 1:
        raise ValueError(f"argmax/argmin take a single dim, got {dim}")
    return _reduce_type("index")(x, dim, keepdim)


def_op(
    "sum",
    impl=lambda x, dim=None, keepdim=False: np.sum(x, axis=_axis(dim), keepdims=keepdim),
    shape=_reduce_type("sum"),
    vjp=_sum_vjp,
)
def_op(
    "mean",
    impl=lambda x, dim=None, keepdim=False: np.mean(x, axis=_axis(dim), keepdims=keepdim),
    shape=_reduce_type("mean"),
    vjp=_mean_vjp,
)
def_op(
    "max",
    impl=lambda x, dim=None, keepdim=False: np.max(x, axis=_axis(dim), keepdims=keepdim),
    shape=_reduce_type("extremum"),
    vjp=_extremum_vjp,
)
def_op(
    "min",
    impl=lambda x, dim=None, keepdim=False: np.min(x, axis=_axis(dim), keepdims=keepdim),
    shape=_reduce_type("extremum"),
    vjp=_extremum_vjp,
)
def_op(
    "argmax",
    impl=_arg_impl(np.argmax),
    shape=_arg_type,
    vjp=no_grad_vjp,
    differentiable=False,
)
def_op(
    "argmin",
    impl=_arg_impl(np.argmin),
    shape=_arg_type,
    vjp=no_grad_vjp,
    differentiable=False,
)
