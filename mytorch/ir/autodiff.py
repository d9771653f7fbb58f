"""Reverse mode over the IR: the backward graph of a forward graph.

Each op's gradient rule (its `vjp`, the one definition in `mytorch.ops`) is written with
operators and `bind`, so it runs on graph values as well as on numbers. Running the rules in
reverse order on stand-ins of the forward values *records* the gradient computation as a new
graph, which then goes through the same passes and backends as any forward graph.

A forward value becomes an input of the backward graph only when a gradient rule actually reads
it: the forward saves exactly what the backward needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..ops import bind, get_op
from ..tensor import tracing
from .graph import Graph, Node
from .join_saved import SavedJoin, join_saved
from .trace import Tracer, TracerTensor


def backpropagate(
    graph: Graph,
    value_of: Callable[[Node], object],
    cotangents: dict[Node, object],
    wanted: Iterable[Node],
) -> dict[Node, object]:
    """Gradients of the `wanted` inputs of `graph`, given cotangents of some of its values.

    `value_of(node)` gives a forward value (a number array or a graph value); it is only asked
    for what the gradient rules read. Returns None for a wanted input no gradient reaches.
    """
    wanted = list(wanted)
    flows = _carries_gradient(graph, wanted)
    grads: dict[Node, object] = {}
    for node, ct in cotangents.items():
        if ct is not None and node in flows:
            _accumulate(grads, node, ct)
    for node in reversed(graph.nodes):
        g = grads.pop(node, None)
        if g is None:
            continue
        args = [value_of(i) for i in node.inputs]
        rule = get_op(node.op).vjp
        for inp, gi in zip(node.inputs, rule(g, value_of(node), *args, **node.params), strict=True):
            if gi is not None and inp in flows:
                _accumulate(grads, inp, gi)
    return {i: grads.get(i) for i in wanted}


def _carries_gradient(graph: Graph, wanted: list[Node]) -> set[Node]:
    """The values a gradient of a wanted input flows back through (floating, differentiable)."""
    flows = set(wanted)
    for node in graph.nodes:
        if (
            not node.is_const
            and node.dtype.kind == "f"
            and get_op(node.op).differentiable
            and any(i in flows for i in node.inputs)
        ):
            flows.add(node)
    return flows


def _accumulate(grads: dict, node: Node, g) -> None:
    grads[node] = g if node not in grads else grads[node] + g


# ---- graph values standing in for forward values -------------------------------------------------


class ForwardValue(TracerTensor):
    """A forward value seen from the backward graph: it becomes a backward input (or a copy of a
    constant) the first time a gradient rule reads it, not before."""

    def __init__(self, forward: Node, materialize: Callable[[Node], Node]):  # noqa: D107
        self.forward = forward
        self._materialize = materialize
        self._node: Node | None = None
        self.trainable = True
        self._prev = ()
        self._op = forward.op
        self.label = forward.name

    @property
    def node(self) -> Node:
        if self._node is None:
            self._node = self._materialize(self.forward)
        return self._node

    @property
    def shape(self) -> tuple[int, ...]:
        return self.forward.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.forward.type.dtype


class GraphBuilder:
    """Records ops into `graph` while gradient rules run (nested inside any outer tracing)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.tracer = Tracer(graph, {})

    def recording(self):
        return tracing(self.tracer, nested=True)

    def node(self, value) -> Node:
        """The graph node of a recorded value (numbers and arrays become constants)."""
        if isinstance(value, np.ndarray):
            return self.graph.add_const(value)
        return self.tracer.lift(value)


def memoized_values(graph: Graph, known: dict[Node, Callable]) -> Callable[[Node], object]:
    """`value_of` for `backpropagate` over a graph run on given values: inputs (and any node)
    from `known` (functions making the value, called at most once, only if it is read), the rest
    recomputed with `bind` from their inputs, once."""
    values: dict[Node, object] = {}

    def value_of(node: Node):
        if node not in values:
            if node in known:
                values[node] = known[node]()
            elif node.is_const:
                values[node] = node.value
            else:
                args = [value_of(i) for i in node.inputs]
                values[node] = bind(node.op, *args, **node.params)
        return values[node]

    return value_of


# ---- the backward graph of a whole forward graph -----------------------------------------------


@dataclass
class Backward:
    """A derived backward graph and how to call it.

    `graph` has one input per cotangent and per saved forward value (in `graph.inputs` order:
    `inputs[k]` is fed by `sources[k]`), and one output per gradient (`gradients[k]` is the
    forward input position it belongs to).
    """

    graph: Graph
    # ("cotangent", output position), ("saved", forward value) or ("joined", SavedJoin)
    sources: list[tuple[str, object]]
    gradients: list[int]
    derived_nodes: int = 0  # the graph's size before any pass

    def prune_inputs(self) -> None:
        """Drop inputs the (optimized) backward graph no longer reads."""
        keep = [
            (i, s)
            for i, s in zip(self.graph.inputs, self.sources, strict=True)
            if i.users or i in self.graph.outputs
        ]
        self.graph.inputs = [i for i, _ in keep]
        self.sources = [s for _, s in keep]

    @property
    def saved(self) -> list[Node | SavedJoin]:
        """What the backward reads of the forward: its inputs, values or joins of values."""
        return [n for kind, n in self.sources if kind in ("saved", "joined")]


def derive_backward(forward: Graph, wrt: Iterable[int]) -> Backward:
    """The backward graph giving the gradients of forward inputs `wrt` (positions in
    `forward.inputs`) from the cotangents of the forward's floating-point outputs."""
    graph = Graph(f"{forward.name}_backward")
    builder = GraphBuilder(graph)
    sources: list[tuple[str, object]] = []
    cotangents: dict[Node, object] = {}
    for k, out in enumerate(forward.outputs):
        if out.dtype.kind == "f":
            ct = TracerTensor(graph.add_input(f"grad_{out.name}", out.type, rename=True))
            sources.append(("cotangent", k))
            with builder.recording():
                cotangents[out] = ct if out not in cotangents else cotangents[out] + ct

    def materialize(node: Node) -> Node:
        if node.is_const:
            return graph.add_const(node.value)
        if not node.is_input and _rematerializable(node):  # redo a view rather than save it
            args = [value_of(i) for i in node.inputs]
            return builder.node(bind(node.op, *args, **node.params))
        sources.append(("saved", node))
        return graph.add_input(node.name, node.type, param=node.is_param, rename=True)

    stand_ins: dict[Node, ForwardValue] = {}

    def value_of(node: Node) -> ForwardValue:
        if node not in stand_ins:
            stand_ins[node] = ForwardValue(node, materialize)
        return stand_ins[node]

    positions = [k for k in wrt if forward.inputs[k].dtype.kind == "f"]
    with builder.recording():
        grads = backpropagate(forward, value_of, cotangents, [forward.inputs[k] for k in positions])
        found = [(k, grads[forward.inputs[k]]) for k in positions]
        outputs = [builder.node(g) for _, g in found if g is not None]
    graph.set_outputs(outputs)
    remove_dead(graph)
    backward = Backward(graph, sources, [k for k, g in found if g is not None])
    backward.prune_inputs()
    return backward


# Ops that only re-index their input: recomputing them in the backward costs nothing, while
# saving them would make the forward write a copy.
VIEW_OPS = {"transpose", "permute", "reshape", "getitem", "broadcast_to"}


def _rematerializable(node: Node) -> bool:
    if node.is_input or node.is_const:
        return True
    return node.op in VIEW_OPS and all(_rematerializable(i) for i in node.inputs)


def optimized_backward(forward: Graph, wrt: Iterable[int], optimize, dump=None) -> Backward:
    """`derive_backward`, then `optimize` (a pass pipeline) and the inputs it left unread
    dropped; `dump`, if given, gets the derived graph as a stage."""
    backward = derive_backward(forward, wrt)
    if dump:
        dump.stage("derived", backward.graph)
    backward.derived_nodes = len(backward.graph)
    backward.graph = optimize(backward.graph)
    if join_saved(backward.graph, backward.sources):
        remove_dead(backward.graph)
    backward.prune_inputs()
    return backward


def clone(graph: Graph, name: str | None = None) -> tuple[Graph, dict[Node, Node]]:
    """A copy of `graph` (same names, types, source locations) and the node mapping."""
    new = Graph(name or graph.name)
    mapping: dict[Node, Node] = {}
    for i in graph.inputs:
        mapping[i] = new.add_input(i.name, i.type, param=i.is_param)
    for n in graph.nodes:
        if n.is_const:
            mapping[n] = new.add_const(n.value, name=n.name)
        else:
            inputs = [mapping[i] for i in n.inputs]
            mapping[n] = new.add_node(n.op, inputs, dict(n.params), type=n.type, name=n.name)
        mapping[n].loc = n.loc
    new.set_outputs([mapping[o] for o in graph.outputs])
    return new, mapping


def remove_dead(graph: Graph) -> None:
    """Drop nodes no output depends on (gradient rules compute every input's gradient)."""
    for node in reversed(graph.nodes):
        if not node.users and node not in graph.outputs:
            graph.remove_node(node)
