"""Abstract tracing: run a Python function on shape-only stand-ins and record its ops as a Graph.

Every op reaches `Tracer.record` through the one interception point, `mytorch.tensor.apply`, and
is recorded with the op's own shape rule: no op is implemented twice. Concrete tensors that the
function touches become graph values on first use: tensors that existed before tracing (module
parameters, captured tensors) are parameter inputs, read live at every call; tensors made during
tracing (from Python numbers) are constants.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .. import pytree
from ..errors import CompileError
from ..ops.registry import TensorType
from ..tensor import Tensor, _as_tensor, apply, tracing
from .graph import Graph, Node, collector_paused

_new = object.__new__
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_location() -> str:
    """The innermost source line outside mytorch on the current stack: 'file:line in fn: code'."""
    frame = sys._getframe(1)
    while frame is not None and _in_package(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "<unknown location>"
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    return f"{where}: {line}" if line else where


_INSIDE: dict[str, bool] = {}  # source file -> whether it is mytorch's own code
_OWN_CLASSES: dict[type, bool] = {}  # Module class -> whether all its classes are mytorch's
# (id of a code object, offset of its instruction) -> ((file, line), the code object, kept alive
# so that its id stays its own). A traced loop makes its ops from the same few call sites every
# step; a frame's f_lineno scans the code's line table from its start at every read.
_LOCATIONS: dict[tuple[int, int], tuple[tuple[str, int], object]] = {}


@functools.lru_cache(maxsize=1024)
def _in_package(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


class TracerTensor(Tensor):
    """A stand-in Tensor while tracing: shape and dtype only; reading its numbers is an error."""

    _abstract = True
    # The tape fields of a Tensor, as class defaults: a traced op sets only `node`.
    trainable = True
    _prev = ()
    _op = "traced"
    label = ""

    def __init__(self, node: Node):  # noqa: D107 - Tensor.__init__ is deliberately not called
        self.node = node

    @staticmethod
    def _backward() -> None:
        pass

    @classmethod
    def _bind(cls, name: str, args, params) -> Tensor:
        """`ops.bind` on traced values (gradient rules use it): record the op like `apply`."""
        return apply(name, *args, **params)

    def _data_dependent(self, what: str):
        raise CompileError(
            f"data-dependent operation: {what} of traced value %{self.node.name} "
            f"({self.node.type}) at {user_location()}; traced values have shapes, not numbers"
        )

    data = property(lambda self: self._data_dependent("reading .data"))
    grad = property(lambda self: self._data_dependent("reading .grad"))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.node.type.dtype

    def item(self):
        self._data_dependent("item()")

    def numpy(self):
        self._data_dependent("numpy()")

    def __bool__(self):
        self._data_dependent("bool()")

    def backward(self, grad=None):
        self._data_dependent("backward()")

    def __repr__(self) -> str:
        return f"TracerTensor(%{self.node.name}: {self.node.type})"


@dataclass
class TraceResult:
    """A traced graph, the tensors behind its parameter inputs, and the output structure."""

    graph: Graph
    params: list[Tensor]
    out_spec: pytree.TreeSpec
    out_is_tensor: list[bool] = field(default_factory=list)  # per output leaf
    out_static: list = field(default_factory=list)  # the non-tensor output leaves, in order

    @functools.cached_property
    def returns_flat_tuple(self) -> bool:
        """Whether the function returns a plain tuple of tensors (the common case)."""
        spec = self.out_spec
        return (
            not self.out_static
            and spec.kind == "tuple"
            and all(c.kind == "leaf" for c in spec.children)
        )

    @functools.cached_property
    def returns_single_tensor(self) -> bool:
        """Whether the function returns one tensor (a loss, say), not a structure."""
        return not self.out_static and self.out_spec.kind == "leaf"

    def assemble(self, tensors: list):
        """The function's return value, rebuilt around freshly computed output tensors."""
        if self.returns_flat_tuple:
            return tuple(tensors)  # the common case, without the general walk
        static, produced = iter(self.out_static), iter(tensors)
        leaves = [next(produced) if t else next(static) for t in self.out_is_tensor]
        return pytree.unflatten(self.out_spec, leaves)


class Tracer:
    """Records ops into a graph (installed with `mytorch.tensor.tracing`)."""

    def __init__(self, graph: Graph, param_names: dict[int, str]):
        self.graph = graph
        self.param_names = param_names
        self.params: list[Tensor] = []
        self._lifted: dict[int, Node] = {}
        self._created: dict[int, Tensor] = {}  # kept alive so their ids stay unique
        # (the outermost mytorch frame of the last source-line walk, the user's frame above it)
        self._last_walk: tuple = (None, None)
        self._invariants: dict[tuple, Node] = {}  # see `record`
        self._module_line: tuple[str, int] | None = None  # see `call_module`

    def note_created(self, t: Tensor) -> None:
        self._created[id(t)] = t

    def lift(self, t: Tensor) -> Node:
        """The graph value of tensor `t`, made a constant or a parameter input on first use."""
        if t._abstract:
            if t.node.graph is not self.graph:
                raise CompileError(f"a value traced in another function was used: {t!r}")
            return t.node
        node = self._lifted.get(id(t))
        if node is None:
            if id(t) in self._created:
                node = self.graph.add_const(np.array(t.data))
            else:
                name = self.param_names.get(id(t)) or t.label or f"p{len(self.params)}"
                node = self.graph.add_input(
                    name, TensorType(t.shape, t.dtype), param=True, rename=True
                )
                self.params.append(t)
            self._lifted[id(t)] = node
        return node

    def call_module(self, module, args: tuple, kwargs: dict):
        """`module(*args, **kwargs)` while tracing (what `Module.__call__` does then).

        A module of mytorch's own (Linear, RNN, ...: every class of it defined in mytorch, its
        forward not replaced) runs only mytorch code, so every op it records is at the line that
        called it: found once here, instead of by a walk up the stack per op (`record`).
        """
        cls = module.__class__
        own = _OWN_CLASSES.get(cls)
        if own is None:
            own = _OWN_CLASSES[cls] = all(
                c.__module__ == "mytorch" or c.__module__.startswith("mytorch.")
                for c in cls.__mro__[:-1]
            )
        outer = self._module_line
        if not own or "forward" in module.__dict__:  # user code runs: its ops walk for lines
            self._module_line = None
        elif outer is None:  # (inside another of mytorch's modules, its line is the line)
            self._module_line = self._line(sys._getframe(2))  # (0: here, 1: __call__)
        try:
            return module.forward(*args, **kwargs)
        finally:
            self._module_line = outer

    def _line(self, frame) -> tuple[str, int] | None:
        """The user's line running `frame`: the innermost frame from it outside mytorch."""
        # Each frame object the walk makes costs ~2k instructions, so it stops at the outermost
        # mytorch frame of the previous walk (a module's __call__, the compiler's frames: they
        # stay on the stack for many ops): the same frame has the same user frame above it.
        boundary, above = self._last_walk
        inside = _INSIDE
        below = None
        while frame is not None:
            if frame is boundary:
                frame = above
                break
            filename = frame.f_code.co_filename
            known = inside.get(filename)
            if known is None:
                known = inside[filename] = _in_package(filename)
            if not known:
                if below is not None:
                    self._last_walk = (below, frame)
                break
            below = frame
            frame = frame.f_back
        if frame is None:
            return None
        code = frame.f_code
        found = _LOCATIONS.get((id(code), frame.f_lasti))
        if found is None:
            if len(_LOCATIONS) >= 4096:
                _LOCATIONS.clear()
            loc = (code.co_filename, frame.f_lineno)
            found = _LOCATIONS[id(code), frame.f_lasti] = (loc, code)
        return found[0]

    def record(self, op_name: str, args, params) -> TracerTensor:
        """Record op `op_name` on `args` (stand-ins, concrete tensors or numbers) as a node.

        This runs once per op of the traced program (T times per op of a T-step loop), so the
        common case is kept short: stand-in inputs, a cached type, a lazily formatted location.
        """
        graph = self.graph
        inputs = []
        invariant = True  # reads only parameters: the same value wherever the program makes it
        for a in args:
            if a.__class__ is TracerTensor:
                node = a.node
                if node.graph is graph:
                    inputs.append(node)
                    invariant = False
                    continue
                node = None  # another graph's: `lift` says so
            else:  # a tensor lifted before (`lift`'s first lookup; lifted tensors are kept
                # alive, so no number passed here has the id of one)
                node = self._lifted.get(id(a))
            if node is None:
                node = self.lift(a if isinstance(a, Tensor) else _as_tensor(a))
            inputs.append(node)
            invariant = invariant and node.op == "param"
        if invariant:
            # `W.T` in a step of a T-step loop: recorded once, not T times (and `roll` has T
            # fewer copies to fold). Ops are pure, so the first node is the value every time.
            try:
                key = (op_name, *inputs, *params.items())
                node = self._invariants.get(key)
            except TypeError:  # an unhashable param: recorded as usual
                key = node = None
            if node is not None:
                out = _new(TracerTensor)  # (TracerTensor(node) without the __init__ call)
                out.node = node
                return out
        node = graph.add_node(op_name, inputs, params)
        if invariant and key is not None:
            self._invariants[key] = node
        # The user's line that made it: the line that called a module of mytorch's own, or the
        # innermost frame outside mytorch, walked to from the caller of `apply` (record's only
        # caller, whose own frame object is so never made).
        line = self._module_line
        node.loc = line if line is not None else self._line(sys._getframe(2))
        out = _new(TracerTensor)
        out.node = node
        return out


def trace_call(fn, args, kwargs, *, name: str, param_names: dict[int, str]) -> TraceResult:
    """Trace `fn(*args, **kwargs)`: tensor leaves of the arguments become graph inputs."""
    graph = Graph(name)
    tracer = Tracer(graph, param_names)
    arg_names = _argument_names(fn, args, kwargs)
    leaves, spec = pytree.flatten((args, kwargs))
    flat_names = _leaf_names(arg_names, spec)
    stand_ins = []
    for leaf, leaf_name in zip(leaves, flat_names, strict=True):
        if isinstance(leaf, Tensor):
            node = graph.add_input(leaf_name, TensorType(leaf.shape, leaf.dtype), rename=True)
            stand_ins.append(TracerTensor(node))
        else:
            stand_ins.append(leaf)
    t_args, t_kwargs = pytree.unflatten(spec, stand_ins)
    with tracing(tracer), collector_paused():
        out = fn(*t_args, **t_kwargs)
        out_leaves, out_spec = pytree.flatten(out)
        outputs, static = [], []
        is_tensor = [isinstance(leaf, Tensor) for leaf in out_leaves]
        for leaf in out_leaves:
            if isinstance(leaf, Tensor):
                outputs.append(tracer.lift(leaf))
            else:
                static.append(leaf)
    graph.set_outputs(outputs)
    return TraceResult(graph, tracer.params, out_spec, is_tensor, static)


def _argument_names(fn, args, kwargs) -> list[str]:
    """Names for the positional and keyword arguments, from `fn`'s signature where it has one."""
    try:  # a Module is called through __call__(*args); its forward has the real names
        params = list(inspect.signature(getattr(fn, "forward", fn)).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(len(args)):
        p = params[i] if i < len(params) else None
        if p is None or p.kind == p.VAR_POSITIONAL:
            names.append(f"arg{i}")
        else:
            names.append(p.name)
    return names + list(kwargs)


def _leaf_names(arg_names: list[str], spec: pytree.TreeSpec) -> list[str]:
    """One name per flattened leaf: the argument's name, with `_k` suffixes inside containers."""
    args_spec, kwargs_spec = spec.children
    out: list[str] = []
    for name, child in zip(arg_names, args_spec.children + kwargs_spec.children, strict=True):
        _name_leaves(child, name, out)
    return out


def _name_leaves(spec: pytree.TreeSpec, prefix: str, out: list[str]) -> None:
    if spec.kind == "leaf":
        out.append(prefix)
        return
    keys = spec.meta if spec.kind == "dict" else range(len(spec.children))
    for key, child in zip(keys, spec.children, strict=True):
        _name_leaves(child, f"{prefix}_{key}", out)
