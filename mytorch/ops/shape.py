"""Shape ops: reshape, transpose, permute, broadcasting, cat, stack and indexing.

Params are hashable and canonical (non-negative dims, explicit shapes), so that the same
computation always records the same node and graphs can be compared and printed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .registry import TensorType, bind, broadcast_shapes, def_op, fmt, normalize_dim


def resolve_shape(shape, numel: int, old_shape=None) -> tuple[int, ...]:
    """A reshape target with one -1 inferred, or a ValueError naming both shapes."""
    shape = tuple(int(d) for d in shape)
    old = fmt(old_shape) if old_shape is not None else f"of {numel} elements"
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {fmt(shape)}")
    if any(d < -1 for d in shape):
        raise ValueError(f"reshape: invalid shape {fmt(shape)}")
    known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
    if -1 in shape:
        if known == 0 or numel % known:
            raise ValueError(f"shape {fmt(shape)} is invalid for input {old} ({numel} elements)")
        shape = tuple(numel // known if d == -1 else d for d in shape)
    elif known != numel:
        raise ValueError(f"shape {fmt(shape)} is invalid for input {old} ({numel} elements)")
    return shape


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _reshape_type(x, shape) -> TensorType:
    return TensorType(resolve_shape(shape, _numel(x.shape), x.shape), np.dtype(x.dtype))


def_op(
    "reshape",
    impl=lambda x, shape: np.reshape(x, shape),
    shape=_reshape_type,
    vjp=lambda g, out, x, shape: (bind("reshape", g, shape=tuple(x.shape)),),
)


def _transpose_type(x, d0, d1) -> TensorType:
    n = len(x.shape)
    d0, d1 = normalize_dim(d0, n), normalize_dim(d1, n)
    shape = list(x.shape)
    shape[d0], shape[d1] = shape[d1], shape[d0]
    return TensorType(tuple(shape), np.dtype(x.dtype))


def_op(
    "transpose",
    impl=lambda x, d0, d1: np.swapaxes(x, d0, d1),
    shape=_transpose_type,
    vjp=lambda g, out, x, d0, d1: (bind("transpose", g, d0=d0, d1=d1),),
)


def _permute_type(x, dims) -> TensorType:
    n = len(x.shape)
    norm = [normalize_dim(d, n) for d in dims]
    if sorted(norm) != list(range(n)):
        raise ValueError(f"permute: dims {tuple(dims)} are not a permutation of {n} dims")
    return TensorType(tuple(x.shape[d] for d in norm), np.dtype(x.dtype))


def_op(
    "permute",
    impl=lambda x, dims: np.transpose(x, dims),
    shape=_permute_type,
    vjp=lambda g, out, x, dims: (bind("permute", g, dims=tuple(np.argsort(dims).tolist())),),
)


def _broadcast_to_type(x, shape) -> TensorType:
    shape = tuple(shape)
    if broadcast_shapes(x.shape, shape) != shape:
        raise ValueError(f"cannot broadcast shape {fmt(x.shape)} to {fmt(shape)}")
    return TensorType(shape, np.dtype(x.dtype))


def_op(
    "broadcast_to",
    impl=lambda x, shape: np.broadcast_to(x, shape),
    shape=_broadcast_to_type,
    vjp=lambda g, out, x, shape: (bind("sum_to", g, shape=tuple(x.shape)),),
)


def _sum_to_impl(x, shape):
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1
    )
    return np.sum(x, axis=axes, keepdims=True).reshape(shape) if axes else x


def _sum_to_type(x, shape) -> TensorType:
    shape = tuple(shape)
    if broadcast_shapes(x.shape, shape) != tuple(x.shape):
        raise ValueError(f"cannot sum shape {fmt(x.shape)} down to {fmt(shape)}")
    return TensorType(shape, np.dtype(x.dtype))


def_op(
    "sum_to",
    impl=_sum_to_impl,
    shape=_sum_to_type,
    vjp=lambda g, out, x, shape: (bind("broadcast_to", g, shape=tuple(x.shape)),),
)


# ---- cat and stack ---------------------------------------------------------------------------


def _cat_type(*xs, dim) -> TensorType:
    if not xs:
        raise ValueError("cat expects a non-empty sequence of tensors")
    ref = xs[0].shape
    d = normalize_dim(dim, len(ref))
    for x in xs[1:]:
        ok = len(x.shape) == len(ref) and all(
            a == b for i, (a, b) in enumerate(zip(x.shape, ref, strict=True)) if i != d
        )
        if not ok:
            raise ValueError(
                f"cat: tensors must have the same shape except in dim {dim}, "
                f"got {' and '.join(fmt(x.shape) for x in xs)}"
            )
    shape = list(ref)
    shape[d] = sum(x.shape[d] for x in xs)
    return TensorType(tuple(shape), np.result_type(*(x.dtype for x in xs)))


def _cat_vjp(g, out, *xs, dim):
    grads, start = [], 0
    for x in xs:
        stop = start + x.shape[dim]
        index = (Slice(None, None, None),) * dim + (Slice(start, stop, None),)
        grads.append(bind("getitem", g, index=index))
        start = stop
    return tuple(grads)


def_op(
    "cat",
    impl=lambda *xs, dim: np.concatenate(xs, axis=dim),
    shape=_cat_type,
    vjp=_cat_vjp,
)


def _stack_type(*xs, dim) -> TensorType:
    if not xs:
        raise ValueError("stack expects a non-empty sequence of tensors")
    ref = xs[0].shape
    d = normalize_dim(dim, len(ref) + 1)
    if any(tuple(x.shape) != tuple(ref) for x in xs):
        raise ValueError(
            "stack expects each tensor to be equal size, got "
            + " and ".join(fmt(x.shape) for x in xs)
        )
    shape = tuple(ref[:d]) + (len(xs),) + tuple(ref[d:])
    return TensorType(shape, np.result_type(*(x.dtype for x in xs)))


def _stack_vjp(g, out, *xs, dim):
    return tuple(
        bind("getitem", g, index=(Slice(None, None, None),) * dim + (i,)) for i in range(len(xs))
    )


def_op(
    "stack",
    impl=lambda *xs, dim: np.stack(xs, axis=dim),
    shape=_stack_type,
    vjp=_stack_vjp,
)


# ---- indexing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    """A hashable `slice` (Python's own is unhashable before 3.12), used in index params."""

    start: int | None
    stop: int | None
    step: int | None

    def __str__(self) -> str:
        parts = (self.start, self.stop) if self.step is None else (self.start, self.stop, self.step)
        return ":".join("" if v is None else str(v) for v in parts)


ALL = Slice(None, None, None)  # `:`


def step_range(index, steps: int) -> tuple[int, int, bool] | None:
    """(start, stop, by_int) when `index` takes steps start:stop of dim 0 and all of the other
    dims (by_int: an int index, dropping dim 0)."""
    if not index or any(i not in (ALL, Ellipsis) for i in index[1:]):
        return None
    first = index[0]
    if isinstance(first, int) and -steps <= first < steps:
        start = first % steps
        return start, start + 1, True
    if isinstance(first, Slice) and first.step in (None, 1):
        start, stop, _ = slice(first.start, first.stop).indices(steps)
        return (start, stop, False) if start < stop else None
    return None


@dataclass(frozen=True)
class IntArray:
    """A hashable integer-array index: its flat values and shape."""

    values: tuple[int, ...]
    shape: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        return np.array(self.values, dtype=np.int64).reshape(self.shape)

    def __str__(self) -> str:
        return str(self.to_numpy().tolist()).replace(" ", "")


def encode_index(index) -> tuple:
    """A user's index (ints, slices, None, Ellipsis, integer arrays) as hashable index params."""
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for item in items:
        if item is None or item is Ellipsis:
            out.append(item)
        elif isinstance(item, (bool, np.bool_)):
            raise IndexError("boolean indices are not supported; use integer arrays")
        elif isinstance(item, (int, np.integer)):
            out.append(int(item))
        elif isinstance(item, slice):
            out.append(
                Slice(
                    *(None if v is None else _as_int(v) for v in (item.start, item.stop, item.step))
                )
            )
        elif isinstance(item, (list, np.ndarray)):
            arr = np.asarray(item)
            if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
                raise IndexError(f"index arrays must hold integers, got dtype {arr.dtype}")
            arr = arr.astype(np.int64)
            out.append(IntArray(tuple(arr.ravel().tolist()), arr.shape))
        else:
            raise IndexError(f"unsupported index {item!r} of type {type(item).__name__}")
    return tuple(out)


def _as_int(v) -> int:
    if not isinstance(v, (int, np.integer)):
        raise IndexError(f"slice indices must be integers or None, got {v!r}")
    return int(v)


def decode_index(index: tuple) -> tuple:
    """Index params back as a numpy index."""
    out = []
    for item in index:
        if isinstance(item, Slice):
            out.append(slice(item.start, item.stop, item.step))
        elif isinstance(item, IntArray):
            out.append(item.to_numpy())
        else:
            out.append(item)
    return tuple(out)


def _basic_index_shape(shape, index) -> tuple[int, ...] | None:
    """The result shape for ints, slices and None (the common case), else None."""
    out, dim = [], 0
    for item in index:
        if item is None:
            out.append(1)
            continue
        if dim >= len(shape) or not isinstance(item, (int, Slice)):
            return None
        n = shape[dim]
        if isinstance(item, int):
            if not -n <= item < n:
                return None  # let numpy word the IndexError
        else:
            out.append(len(range(*slice(item.start, item.stop, item.step).indices(n))))
        dim += 1
    return tuple(out) + tuple(shape[dim:])


def _getitem_type(x, index) -> TensorType:
    shape = _basic_index_shape(tuple(x.shape), index)
    if shape is not None:
        return TensorType(shape, np.dtype(x.dtype))
    # Index a zero-stride stand-in of the same shape: numpy's exact rules, no memory.
    stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), x.shape, (0,) * len(x.shape))
    try:
        shape = stand_in[decode_index(index)].shape
    except IndexError as e:
        where = f"index {format_index(index)} is invalid for shape {fmt(x.shape)}"
        raise IndexError(f"{where}: {e}") from None
    return TensorType(tuple(shape), np.dtype(x.dtype))


def format_index(index: tuple) -> str:
    """An index as Python would write it: [0, 1:3, None]."""
    names = {None: "None", Ellipsis: "..."}
    return (
        "["
        + ", ".join(names.get(i, str(i)) if i is None or i is Ellipsis else str(i) for i in index)
        + "]"
    )


def _getitem_grad_impl(g, shape, index):
    out = np.zeros(shape, dtype=g.dtype)
    np.add.at(out, decode_index(index), g)
    return out


def_op(
    "getitem",
    impl=lambda x, index: np.asarray(x[decode_index(index)]),
    shape=_getitem_type,
    vjp=lambda g, out, x, index: (bind("getitem_grad", g, shape=tuple(x.shape), index=index),),
)
def_op(
    "getitem_grad",
    impl=_getitem_grad_impl,
    shape=lambda g, shape, index: TensorType(tuple(shape), np.dtype(g.dtype)),
    vjp=lambda gg, out, g, shape, index: (bind("getitem", gg, index=index),),
)
