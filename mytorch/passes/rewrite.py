"""Small helpers shared by the passes: constant tests, pruning dead values, node placement."""

from __future__ import annotations

import numpy as np

from ..ir.graph import CONST, INPUT_KINDS, Graph, Node
from ..ops import get_op
from ..ops.registry import TensorType
from ..ops.shape import ALL


def is_pure(node: Node) -> bool:
    """Constants and pure ops; inputs and random ops are never removed or merged."""
    op = node.op
    if op == CONST:
        return True
    return op not in INPUT_KINDS and get_op(op).pure


def const_equals(node: Node, value: float) -> bool:
    """True if `node` is a constant whose every element equals `value`."""
    return node.is_const and node.value.size > 0 and bool(np.all(node.value == value))


def prune(graph: Graph, nodes) -> None:
    """Remove the given nodes, and then their inputs, as far as they became unused and pure."""
    dead: set[Node] = set()
    outputs = set(graph.outputs)
    stack = list(nodes)
    while stack:  # a node's inputs are looked at again whenever it dies
        node = stack.pop()
        if (
            node not in dead
            and node.graph is graph
            and node not in outputs
            and is_pure(node)
            and all(u in dead for u in node.users)
        ):
            dead.add(node)
            stack.extend(node.inputs)
    graph.remove_nodes(dead)


def replace(graph: Graph, old: Node, new: Node) -> None:
    """Use `new` wherever `old` was used, then drop what became dead."""
    graph.replace_all_uses(old, new)
    prune(graph, [old])


def is_zeros(node: Node) -> bool:
    """A constant of zeros, or a view of one (before `const_fold` makes it a constant)."""
    while node.op in ("reshape", "broadcast_to"):
        node = node.inputs[0]
    return const_equals(node, 0)


def transposed(graph: Graph, x: Node, before: Node | None = None) -> Node:
    """x with dims 0 and 1 swapped: a new transpose, or x's source when x is that transpose of it
    (a weight taken back out of `W.T` is W itself, not `W.T.T`: dumps stay readable)."""
    swap = {"d0": 0, "d1": 1}
    if x.op == "transpose" and x.params == swap:
        return x.inputs[0]
    return graph.add_node("transpose", [x], swap, before=before)


def inline_body(graph: Graph, body: Graph, args, before: Node) -> Node:
    """`body` (one output) applied once to `args`, as nodes of `graph` placed before `before`."""
    value = dict(zip(body.inputs, args, strict=True))
    for node in body.nodes:
        if node.is_const:
            value[node] = graph.add_const(node.value, before=before)
        else:
            inputs = [value[i] for i in node.inputs]
            value[node] = graph.add_node(
                node.op, inputs, node.params, type=node.type, before=before
            )
            value[node].loc = node.loc
    return value[body.outputs[0]]


def step_index(node: Node) -> int | None:
    """t when `node` is `x[t]` (an int index on dim 0, the other dims whole), else None."""
    if node.op != "getitem":
        return None
    index = node.params["index"]
    if not index or not isinstance(index[0], int) or index[0] < 0:
        return None
    if any(i != ALL and i is not Ellipsis for i in index[1:]):
        return None
    return index[0]


def stacked_source(steps) -> Node | None:
    """x when `steps` are exactly x[0], x[1], ..., x[n-1] and x has n steps, else None."""
    steps = list(steps)
    source = steps[0].inputs[0] if steps and steps[0].op == "getitem" else None
    if source is None or not source.shape or source.shape[0] != len(steps):
        return None
    for t, node in enumerate(steps):
        if step_index(node) != t or node.inputs[0] is not source:
            return None
    return source


def subgraphs(graph: Graph) -> list[tuple[Graph, Node | None]]:
    """`graph` and every loop body in it, each with its state input (None for `graph` itself).

    Local rewrites (simplify, CSE, fusions) apply inside loop bodies too: once `roll` has run,
    the body is where a loop's per-step work is.
    """
    out: list[tuple[Graph, Node | None]] = [(graph, None)]
    k = 0
    while k < len(out):
        for node in out[k][0].nodes:
            if node.op == "loop":
                body = node.params["body"]
                out.append((body, body.inputs[node.params.get("sequences", 1)]))
        k += 1
    return out


def is_forward_loop(node: Node) -> bool:
    """A loop over one sequence, first step first: loop(xs, h0, *invariants)."""
    return (
        node.op == "loop"
        and node.params.get("sequences", 1) == 1
        and not node.params.get("reverse", False)
    )


def rnn_step_body(xs: Node, h: Node, w_hh: Node, nonlinearity: str) -> Graph:
    """The body of a loop over `xs` from state `h`: (x, h, w_hh) -> rnn_step(x, h, w_hh)."""
    body = Graph("body")
    x_type = TensorType(tuple(xs.shape[1:]), xs.dtype)
    names, types = ("x", "h", "w_hh"), (x_type, h.type, w_hh.type)
    inputs = [body.add_input(n, t) for n, t in zip(names, types, strict=True)]
    body.set_outputs([body.add_node("rnn_step", inputs, {"nonlinearity": nonlinearity})])
    return body


def hoist_out(graph: Graph, loop: Node, value: Node, before: Node) -> Node | None:
    """`value`, computed in forward `loop`'s body from the loop's invariants only, computed
    outside it (placed before `before`); None when it depends on the step's input or state."""
    assert is_forward_loop(loop)
    body = loop.params["body"]
    made: dict[Node, Node] = {
        i: outer for i, outer in zip(body.inputs[2:], loop.inputs[2:], strict=True)
    }
    pending = [(value, False)]
    while pending:  # inputs first, without recursion
        node, ready = pending.pop()
        if node in made:
            continue
        if node.is_input or not is_pure(node):  # the step's input or state, or a draw per step
            return None
        if node.is_const:
            made[node] = graph.add_const(node.value, before=before)
        elif ready and node.op == "transpose" and node.params == {"d0": 0, "d1": 1}:
            made[node] = transposed(graph, made[node.inputs[0]], before=before)
        elif ready:
            made[node] = graph.add_node(
                node.op, [made[i] for i in node.inputs], node.params, before=before
            )
        else:
            pending.append((node, True))
            pending.extend((i, False) for i in node.inputs if i not in made)
    return made[value]
