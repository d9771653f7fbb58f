"""The verifier: structure first (ownership, single assignment, definition before use, users),
then types (every node's type recomputed by its op's shape rule). Runs after tracing and passes."""

from __future__ import annotations

from ..ops import OPS
from .graph import Graph, Node, op_type, type_check_key


class VerifyError(AssertionError):
    """A graph breaks an IR invariant; the message names the node, its op and the types."""


def verify(graph: Graph) -> Graph:
    """Check `graph`'s invariants; return it unchanged or raise VerifyError."""
    defined: set[int] = set()
    names: set[str] = set()
    for node in graph.inputs:
        _check_name(node, names, graph, f"input %{node.name}")
        if node.inputs:
            raise VerifyError(f"input %{node.name} has inputs")
        defined.add(id(node))
    for index, node in enumerate(graph.nodes):
        where = f"node {index} (%{node.name} = {node.op})"
        _check_name(node, names, graph, where)
        if node.graph is not graph:
            raise VerifyError(f"{where} belongs to another graph")
        if not node.is_const and node.op not in OPS:
            raise VerifyError(f"{where}: unknown op {node.op!r}")
        for i in node.inputs:
            if id(i) not in defined:
                raise VerifyError(f"{where} uses %{i.name} before its definition")
        _check_type(node, where)
        defined.add(id(node))
    for o in graph.outputs:
        if id(o) not in defined:
            raise VerifyError(f"output %{o.name} is not defined in the graph")
    _check_users(graph)
    return graph


def _check_users(graph: Graph) -> None:
    """Every value's `users` lists exactly the nodes that take it as an input (with repeats)."""
    uses: dict[Node, int] = {v: 0 for v in graph.all_values()}
    for node in graph.nodes:
        for i in node.inputs:
            uses[i] += 1
    for value, count in uses.items():
        stale = [u for u in value.users if u.graph is not graph or value not in u.inputs]
        if stale or len(value.users) != count:
            raise VerifyError(
                f"%{value.name}: its users list is out of step with the graph "
                f"({len(value.users)} listed, {count} uses; stale: {[u.name for u in stale]})"
            )


def _check_name(node: Node, names: set[str], graph: Graph, where: str) -> None:
    if node.name in names:
        raise VerifyError(
            f"{where}: %{node.name} is assigned more than once in graph {graph.name!r}"
        )
    names.add(node.name)


def _check_type(node: Node, where: str) -> None:
    if node.is_const:
        if tuple(node.value.shape) != node.type.shape or node.value.dtype != node.type.dtype:
            raise VerifyError(
                f"{where}: value is {node.value.dtype}{list(node.value.shape)}, "
                f"recorded type is {node.type}"
            )
        return
    # A node whose inputs, their types, params and type are as when last checked is still right:
    # re-verifying after a pass only re-derives the types of what the pass touched.
    key = type_check_key(node)
    if node.checked is not None and _same(node.checked, key):
        return
    try:
        expected = op_type(node.op, node.inputs, node.params)
    except (ValueError, TypeError, IndexError) as e:
        raise VerifyError(f"{where}: {_operands(node)} are invalid: {e}") from e
    if expected != node.type:
        raise VerifyError(
            f"{where}: recorded type {node.type}, but its shape rule gives {expected} "
            f"for {_operands(node)}"
        )
    node.checked = key


def _same(old: tuple, new: tuple) -> bool:
    inputs, types, params, type_ = old
    return (
        len(inputs) == len(new[0])
        and all(a is b for a, b in zip(inputs, new[0], strict=True))
        and types == new[1]
        and params is new[2]
        and type_ == new[3]
    )


def _operands(node: Node) -> str:
    inputs = ", ".join(f"%{i.name}: {i.type}" for i in node.inputs)
    return f"inputs ({inputs}) with params {dict(node.params)}"
