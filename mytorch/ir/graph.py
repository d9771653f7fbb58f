"""The IR: a `Graph` of SSA `Node`s, each an op from the registry with its output type.

Three kinds of value have no op of their own, and are kept distinct:
- graph inputs (`kind="input"`): the arguments of the traced function;
- parameters (`kind="param"`): tensors the function reads that are not arguments (a module's
  weights, a captured tensor). They are inputs too, passed live at every call, never baked in;
- constants (`op="const"`): values made inside the function from Python numbers.

Nodes keep their users, so rewrites are cheap; `replace_all_uses` is the one way to rewire.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import networkx as nx
import numpy as np

from ..ops.registry import TensorType, get_op

INPUT_KINDS = ("input", "param")
CONST = "const"


# Tracing a loop records the same few (op, input types, params) signatures over and over. So
# equal params share one frozen mapping, and each signature's output type is cached: an op's shape
# rule runs once per signature, not once per node. The tables are dropped together when they grow.
_FROZEN: dict[tuple, Mapping] = {}  # params items (any order) -> the shared mapping
_FROZEN_IDS: dict[int, Mapping] = {}  # id -> shared frozen mapping (kept alive by _FROZEN)
# (op, id(params), *ids of the input types) -> (output type, what the ids belong to). Keying by id
# is cheap, and sound: the entry keeps those objects alive, so no other object has their ids.
_TYPES: dict[tuple, tuple] = {}
_CANONICAL: dict[TensorType, TensorType] = {}  # one object per distinct type, so ids match
_CACHE_LIMIT = 1 << 14


def freeze_params(params: Mapping) -> Mapping:
    """Params as a read-only mapping sorted by key (so equal params print and hash equally).

    Hashable params (all but a loop's body) give one shared mapping per distinct value.
    """
    # Keyed with the values' classes too: 1, 1.0 and True are equal, but print differently.
    # (Traced ops pass one or two params: those keys are built without a comprehension.)
    if len(params) == 1:
        (item,) = params.items()
        key = (item, item[1].__class__)
    elif len(params) == 2:
        a, b = params.items()
        key = (a, b, a[1].__class__, b[1].__class__)
    else:
        key = (*params.items(), *[v.__class__ for v in params.values()])
    try:
        frozen = _FROZEN.get(key)
    except TypeError:  # an unhashable value: a mapping of its own
        return MappingProxyType(dict(sorted(params.items())))
    if frozen is None:  # new, or the same params in another order
        if len(_FROZEN) >= _CACHE_LIMIT:
            _clear_caches()
        items = sorted(params.items())
        if any(isinstance(v, Graph) for _, v in items):  # a body, rewritten in place: not shared
            return MappingProxyType(dict(items))
        canonical = (*items, *[v.__class__ for _, v in items])
        frozen = _FROZEN.get(canonical)
        if frozen is None:
            frozen = _FROZEN[canonical] = MappingProxyType(dict(items))
            _FROZEN_IDS[id(frozen)] = frozen
        _FROZEN[key] = frozen
    return frozen


def _clear_caches() -> None:
    _FROZEN.clear()
    _FROZEN_IDS.clear()
    _TYPES.clear()
    _CANONICAL.clear()


def canonical_type(type: TensorType) -> TensorType:
    """The one shared object equal to `type` (so type caches can key on its id)."""
    return _CANONICAL.setdefault(type, type)


NO_PARAMS = freeze_params({})
_new = object.__new__


class Node:
    """One SSA value: an op applied to earlier nodes, or a graph input, parameter or constant."""

    __slots__ = (
        "name",
        "op",
        "inputs",
        "params",
        "type",
        "users",
        "value",
        "graph",
        "loc",
        "__weakref__",
    )

    def __init__(self, name, op, inputs=(), params=NO_PARAMS, type=None, value=None):
        # (Graph.add_node sets these fields itself: keep the two in step)
        self.name: str = name
        self.op: str = op
        self.inputs: tuple[Node, ...] = inputs if inputs.__class__ is tuple else tuple(inputs)
        self.params: Mapping = (
            params if params.__class__ is MappingProxyType else freeze_params(params or {})
        )
        self.type: TensorType = type
        self.users: list[Node] = []
        self.value: np.ndarray | None = value  # constants only
        self.graph: Graph | None = None
        self.loc: tuple[str, int] | None = None  # the user's source line that made it, if traced

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    @property
    def is_input(self) -> bool:
        return self.op in INPUT_KINDS

    @property
    def is_param(self) -> bool:
        return self.op == "param"

    @property
    def is_const(self) -> bool:
        return self.op == CONST

    def __repr__(self) -> str:
        return f"%{self.name}"


class Graph:
    """An SSA graph: inputs (arguments, then parameters), nodes in topological order, outputs."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.inputs: list[Node] = []
        self._nodes: list[Node] = []
        self._removed = 0  # nodes removed but not yet compacted out of _nodes
        self._before: dict[Node, list[Node]] = {}  # nodes to place before others, at compaction
        self.outputs: list[Node] = []
        self._names: set[str] = set()
        self._counters: dict[str, tuple[str, itertools.count]] = {}  # hint -> (base, counter)

    # ---- building -------------------------------------------------------------------------------

    def unique_name(self, hint: str) -> str:
        """A fresh value name: the hint itself for inputs, else hint + a counter (`matmul0`)."""
        entry = self._counters.get(hint)
        if entry is None:
            base = re.sub(r"[^A-Za-z0-9_.]", "_", hint) or "v"
            # Hints that clean up to one base share its counter.
            entry = next((e for e in self._counters.values() if e[0] == base), None)
            entry = self._counters[hint] = entry or (base, itertools.count())
        base, counter = entry
        names = self._names
        name = f"{base}{next(counter)}"
        while name in names:
            name = f"{base}{next(counter)}"
        names.add(name)
        return name

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"graph {self.name!r} already has a value named %{name}")
        self._names.add(name)
        return name

    def add_input(
        self, name: str, type: TensorType, *, param: bool = False, rename: bool = False
    ) -> Node:
        """Append a graph input (or a parameter input) named `name` (made unique if `rename`)."""
        name = self.unique_name(name) if rename and name in self._names else self._claim(name)
        node = Node(name, "param" if param else "input", type=canonical_type(type))
        node.graph = self
        self.inputs.append(node)
        return node

    def add_const(
        self, value: np.ndarray, name: str | None = None, *, before: Node | None = None
    ) -> Node:
        """Append a constant node holding `value` (or place it just before node `before`)."""
        value = np.asarray(value)
        node = Node(
            self._claim(name) if name else self.unique_name("c"),
            CONST,
            type=canonical_type(TensorType(tuple(value.shape), value.dtype)),
            value=value,
        )
        return self._append(node, before)

    def add_node(
        self,
        op: str,
        inputs: Iterable[Node],
        params=None,
        type=None,
        name=None,
        *,
        before: Node | None = None,
    ) -> Node:
        """Append an op node (or place it just before node `before`); its type is given, or
        computed by the op's shape rule."""
        inputs = inputs if inputs.__class__ is tuple else tuple(inputs)
        params = freeze_params(params) if params else NO_PARAMS
        if type is None:  # (infer_type's cache lookup, inline: this runs once per traced op)
            if len(inputs) == 1:
                key = (op, id(params), id(inputs[0].type))
            elif len(inputs) == 2:
                key = (op, id(params), id(inputs[0].type), id(inputs[1].type))
            else:
                key = (op, id(params), *[id(i.type) for i in inputs])
            found = _TYPES.get(key)
            type = found[0] if found is not None else infer_type(op, inputs, params)
        name = self._claim(name) if name else self.unique_name(op)
        # Node(name, op, inputs, params, type) without the __init__ call (once per traced op)
        node = _new(Node)
        node.name, node.op, node.inputs, node.params, node.type = name, op, inputs, params, type
        node.users, node.value, node.loc = [], None, None
        if before is not None:
            return self._append(node, before)
        node.graph = self  # what _append does, inline
        for i in inputs:
            i.users.append(node)
        self._nodes.append(node)
        return node

    def _append(self, node: Node, before: Node | None = None) -> Node:
        node.graph = self
        for i in node.inputs:
            i.users.append(node)
        if before is None:
            self._nodes.append(node)
        elif before.graph is not self or before.is_input:
            raise ValueError(f"cannot place %{node.name} before %{before.name}: not an op here")
        else:  # placed when the node list is next read (O(1) now, one O(N) pass for all)
            self._before.setdefault(before, []).append(node)
        return node

    @property
    def nodes(self) -> list[Node]:
        """The op and constant nodes, in order (inputs excluded)."""
        if self._removed or self._before:
            self._compact()
        return self._nodes

    def _compact(self) -> None:
        """Drop removed nodes and place the nodes added `before=` others, in one pass."""
        before, out = self._before, []
        for node in self._nodes:
            if before and node in before:
                stack = [(node, iter(before.pop(node)))]
                while stack:  # what was placed before a placed node goes first (no recursion)
                    anchor, pending = stack[-1]
                    placed = next(pending, None)
                    if placed is None:
                        stack.pop()
                        if anchor is not node and anchor.graph is self:
                            out.append(anchor)
                    elif placed in before:
                        stack.append((placed, iter(before.pop(placed))))
                    elif placed.graph is self:
                        out.append(placed)
            if node.graph is self:
                out.append(node)
        self._nodes, self._removed = out, 0

    def sort(self) -> None:
        """Restore a topological node order after rewrites appended nodes out of place.

        Stable: among the valid orders, the lexicographically smallest by current position
        (each step takes the earliest node whose inputs are all placed).
        """
        nodes = self.nodes
        position = {n: k for k, n in enumerate(nodes)}
        waiting = [0] * len(nodes)  # per node: how many distinct inputs are not placed yet
        users: list[list[int]] = [[] for _ in nodes]
        in_order = True
        for k, n in enumerate(nodes):
            for p in {position[i] for i in n.inputs if i in position}:
                users[p].append(k)
                waiting[k] += 1
                in_order = in_order and p < k
        if in_order:
            return
        ready = [k for k, w in enumerate(waiting) if not w]  # ascending, so already a heap
        order = []
        while ready:
            k = heapq.heappop(ready)
            order.append(nodes[k])
            for u in users[k]:
                waiting[u] -= 1
                if not waiting[u]:
                    heapq.heappush(ready, u)
        if len(order) != len(nodes):
            raise ValueError(f"graph {self.name!r} has a cycle")
        self._nodes = order

    def set_outputs(self, outputs: Iterable[Node]) -> None:
        self.outputs = list(outputs)

    # ---- rewriting ------------------------------------------------------------------------------

    def replace_all_uses(self, old: Node, new: Node) -> None:
        """Make every user of `old` (and the outputs) use `new` instead."""
        if old is new:
            return
        for user in list(old.users):
            user.inputs = tuple(new if i is old else i for i in user.inputs)
            new.users.append(user)
        old.users.clear()
        self.outputs = [new if o is old else o for o in self.outputs]

    def remove_node(self, node: Node) -> None:
        """Delete a node nobody uses (O(1): the node list is compacted on its next read)."""
        if node.users or node in self.outputs:
            raise AssertionError(f"cannot remove %{node.name}: it is still used")
        if node.graph is not self or node.is_input:
            raise AssertionError(f"%{node.name} is not an op node of graph {self.name!r}")
        for i in node.inputs:
            i.users.remove(node)
        self._names.discard(node.name)
        node.graph = None
        self._removed += 1

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """Delete many nodes at once, each unused or used only by others among them (O(N))."""
        dead = nodes if isinstance(nodes, set) else set(nodes)
        for node in dead:  # (checked before anything changes)
            if node.graph is not self or node.op in INPUT_KINDS:
                raise AssertionError(f"%{node.name} is not an op node of graph {self.name!r}")
            if not dead.issuperset(node.users):
                raise AssertionError(f"cannot remove %{node.name}: it is still used")
        for node in self.outputs:
            if node in dead:
                raise AssertionError(f"cannot remove %{node.name}: it is still used")
        names = self._names
        touched = set()
        for node in dead:
            touched.update(node.inputs)
            names.discard(node.name)
            node.graph = None
            node.users = []
        touched -= dead
        for value in touched:  # the live values that lose users
            value.users = [u for u in value.users if u.graph is self]
        self._removed += len(dead)

    # ---- views ----------------------------------------------------------------------------------

    def all_values(self) -> list[Node]:
        """Inputs then nodes, in definition order."""
        return self.inputs + self.nodes

    def to_networkx(self) -> nx.DiGraph:
        """A networkx view: an edge from every input value to its user (for graph algorithms)."""
        g = nx.DiGraph()
        for n in self.all_values():
            g.add_node(n, op=n.op)
            for i in n.inputs:
                g.add_edge(i, n)
        return g

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self.nodes)

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __eq__(self, other) -> bool:
        return isinstance(other, Graph) and str(self) == str(other)

    __hash__ = object.__hash__

    def to_dot(self) -> str:
        """Graphviz DOT text of this graph."""
        from .printer import to_dot

        return to_dot(self)

    def render(self, path: str) -> str:
        """Draw this graph to an SVG or PNG file with Graphviz's `dot`."""
        from .printer import render

        return render(self, path)


@contextlib.contextmanager
def collector_paused():
    """Pause Python's cyclic garbage collector. Tracing, verifying and rewriting a long graph
    make many objects that live on in the graph; collections would only scan them again and
    again (a third of verifying a 5,000-step trace). Restores the collector's state after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def shares_params(node: Node) -> bool:
    """True when `node`'s params are the shared mapping of their value (never with a graph)."""
    return _FROZEN_IDS.get(id(node.params)) is node.params


def subgraph_params(node: Node) -> list[Graph]:
    """The graphs among `node`'s params (a loop's body)."""
    if shares_params(node):
        return []
    return [v for v in node.params.values() if isinstance(v, Graph)]


def infer_type(op: str, inputs, params: Mapping) -> TensorType:
    """The output type of `op` on `inputs` with (frozen) `params`, by the op's own shape rule."""
    key = (op, id(params), *[id(i.type) for i in inputs])
    found = _TYPES.get(key)
    if found is not None:
        return found[0]
    types = [i.type for i in inputs]
    result = get_op(op).shape(*types, **params)
    if _FROZEN_IDS.get(id(params)) is params:  # shared params never hold a (mutable) body graph
        if len(_TYPES) >= _CACHE_LIMIT:
            _clear_caches()
        result = canonical_type(result)
        _TYPES[key] = (result, params, types)
    return result
