"""Backends: each turns an optimized Graph into a runner (input arrays -> fresh output arrays)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ir.graph import Graph
from ..ir.interpreter import run

BACKENDS: dict[str, Callable] = {}


def register_backend(name: str, backend: Callable | None = None):
    """Register `backend` (a callable Graph -> runner) under `name`; usable as a decorator."""

    def add(obj):
        if name in BACKENDS:
            raise ValueError(f"a backend named {name!r} is already registered")
        BACKENDS[name] = obj
        return obj

    return add if backend is None else add(backend)


@register_backend("numpy")
def numpy_backend(graph: Graph):
    """The reference interpreter as a backend."""

    def runner(inputs):
        # Fresh arrays, as native code returns: callers keep them or add into them (a gradient
        # becomes `.grad`), so none may be an input, a constant's value or another output.
        return [np.array(out) for out in run(graph, inputs)]

    return runner


@register_backend("llvm")
def llvm_backend(graph: Graph):
    """Native code through llvmlite (imported on first use, so `import mytorch` stays fast)."""
    from .llvm import build

    return build(graph)
