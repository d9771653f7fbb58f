"""The IR: a `Graph` of SSA `Node`s, each an op from the registry with its output type.

Three kinds of value have no op of their own, and are kept distinct:
- graph inputs (`kind="input"`): the arguments of the traced function;
- parameters (`kind="param"`): tensors the function reads that are not arguments (a module's
  weights, a captured tensor). They are inputs too, passed live at every call, never baked in;
- constants (`op="const"`): values made inside the function from Python numbers.

Nodes keep their users, so rewrites are cheap; `replace_all_uses` is the one way to rewire.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import networkx as nx
import numpy as np

from ..ops.registry import TensorType, get_op

INPUT_KINDS = ("input", "param")
CONST = "const"


def freeze_params(params: Mapping) -> Mapping:
    """Params as a read-only mapping sorted by key (so equal params print and hash equally)."""
    return MappingProxyType(dict(sorted(params.items())))


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
        "checked",
        "__weakref__",
    )

    def __init__(self, name, op, inputs=(), params=None, type=None, value=None):
        self.name: str = name
        self.op: str = op
        self.inputs: tuple[Node, ...] = tuple(inputs)
        self.params: Mapping = freeze_params(params or {})
        self.type: TensorType = type
        self.users: list[Node] = []
        self.value: np.ndarray | None = value  # constants only
        self.graph: Graph | None = None
        self.loc: tuple[str, int] | None = None  # the user's source line that made it, if traced
        self.checked: tuple | None = None  # what the verifier last type-checked (see verify)

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
        self.outputs: list[Node] = []
        self._names: set[str] = set()
        self._counters: dict[str, itertools.count] = {}

    # ---- building -------------------------------------------------------------------------------

    def unique_name(self, hint: str) -> str:
        """A fresh value name: the hint itself for inputs, else hint + a counter (`matmul0`)."""
        base = re.sub(r"[^A-Za-z0-9_.]", "_", hint) or "v"
        counter = self._counters.setdefault(base, itertools.count())
        while True:
            name = f"{base}{next(counter)}"
            if name not in self._names:
                break
        self._names.add(name)
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
        node = Node(name, "param" if param else "input", type=type)
        node.graph = self
        self.inputs.append(node)
        return node

    def add_const(self, value: np.ndarray, name: str | None = None) -> Node:
        """Append a constant node holding `value`."""
        value = np.asarray(value)
        node = Node(
            self._claim(name) if name else self.unique_name("c"),
            CONST,
            type=TensorType(tuple(value.shape), value.dtype),
            value=value,
        )
        return self._append(node)

    def add_node(self, op: str, inputs: Iterable[Node], params=None, type=None, name=None) -> Node:
        """Append an op node; its type is given, or computed by the op's shape rule."""
        inputs = tuple(inputs)
        derived = type is None
        if derived:
            type = op_type(op, inputs, params or {})
        node = Node(self._claim(name) if name else self.unique_name(op), op, inputs, params, type)
        if derived:  # the type is the shape rule's own answer: the verifier need not redo it
            node.checked = type_check_key(node)
        return self._append(node)

    def _append(self, node: Node) -> Node:
        node.graph = self
        for i in node.inputs:
            i.users.append(node)
        self._nodes.append(node)
        return node

    @property
    def nodes(self) -> list[Node]:
        """The op and constant nodes, in order (inputs excluded)."""
        if self._removed:
            self._nodes = [n for n in self._nodes if n.graph is self]
            self._removed = 0
        return self._nodes

    def sort(self) -> None:
        """Restore a topological node order after rewrites appended nodes out of place.

        Stable: among the valid orders, the one closest to the current order.
        """
        position = {n: k for k, n in enumerate(self.nodes)}
        deps = nx.DiGraph()
        deps.add_nodes_from(self._nodes)
        deps.add_edges_from((i, n) for n in self._nodes for i in n.inputs if i in position)
        self._nodes = list(nx.lexicographical_topological_sort(deps, key=position.__getitem__))

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


def type_check_key(node: Node) -> tuple:
    """What a node's type depends on: its inputs, their types, its params (see `verify`)."""
    return (node.inputs, tuple(i.type for i in node.inputs), node.params, node.type)


def op_type(op: str, inputs, params) -> TensorType:
    """The output type of `op` on `inputs`, by the op's own shape rule."""
    return get_op(op).shape(*(i.type for i in inputs), **params)
