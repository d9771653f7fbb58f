"""Flatten nested tuples, lists and dicts of values to leaves and back (inputs and outputs)."""

from __future__ import annotations

from typing import Any, NamedTuple


class TreeSpec(NamedTuple):
    """The structure of a nested value: its container type, keys and children."""

    kind: str  # "leaf", "tuple", "list", "dict" or "namedtuple"
    meta: Any  # dict keys, or the namedtuple class
    children: tuple


LEAF = TreeSpec("leaf", None, ())


def flatten(obj) -> tuple[list, TreeSpec]:
    """The leaves of `obj` in order, and the structure to rebuild it."""
    leaves: list = []
    return leaves, _flatten(obj, leaves)


def _flatten(obj, leaves: list) -> TreeSpec:
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return TreeSpec("namedtuple", type(obj), tuple(_flatten(x, leaves) for x in obj))
    if isinstance(obj, (tuple, list)):
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return TreeSpec(kind, None, tuple(_flatten(x, leaves) for x in obj))
    if isinstance(obj, dict):
        keys = tuple(obj)
        return TreeSpec("dict", keys, tuple(_flatten(obj[k], leaves) for k in keys))
    leaves.append(obj)
    return LEAF


def unflatten(spec: TreeSpec, leaves) -> Any:
    """Rebuild the nested value of `spec` from its leaves."""
    it = iter(leaves)
    return _unflatten(spec, it)


def _unflatten(spec: TreeSpec, it) -> Any:
    if spec.kind == "leaf":
        return next(it)
    children = [_unflatten(c, it) for c in spec.children]
    if spec.kind == "tuple":
        return tuple(children)
    if spec.kind == "list":
        return children
    if spec.kind == "dict":
        return dict(zip(spec.meta, children, strict=True))
    return spec.meta(*children)
