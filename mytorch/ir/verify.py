"""The verifier: structure first (ownership, single assignment, definition before use, users),
then types (every node's type recomputed by its op's shape rule). Runs after tracing and passes."""

from __future__ import annotations

from ..ops import OPS
from .graph import (
    CONST,
    Graph,
    Node,
    collector_paused,
    infer_type,
    shares_params,
    subgraph_params,
)


class VerifyError(AssertionError):
    """A graph breaks an IR invariant; the message names the node, its op and the types."""


def verify(graph: Graph) -> Graph:
    """Check `graph`'s invariants; return it unchanged or raise VerifyError.

    One sweep over the nodes (this runs after tracing and after every pass, on graphs as long as
    a traced loop): type checks reuse the shape-rule cache of `infer_type`.
    """
    with collector_paused():
        return _verify(graph)


def _verify(graph: Graph) -> Graph:
    names: set[str] = set()
    defined: set[Node] = set()
    for node in graph.inputs:
        _check_name(node, names, graph, lambda n=node: f"input %{n.name}")
        if node.inputs:
            raise VerifyError(f"input %{node.name} has inputs")
        defined.add(node)
    uses: dict[Node, list[Node]] = {}  # value -> the nodes reading it, once per read
    for index, node in enumerate(graph.nodes):
        name = node.name
        if name in names or node.graph is not graph or node.op not in OPS:
            _check_node(graph, index, node, names)
        names.add(name)
        if node.op == CONST:
            _check_const(node, index)
        else:
            for i in node.inputs:
                if i not in defined:
                    raise VerifyError(f"{_where(index, node)} uses %{i.name} before its definition")
                readers = uses.get(i)
                if readers is None:
                    uses[i] = [node]
                else:
                    readers.append(node)
            try:
                expected = infer_type(node.op, node.inputs, node.params)
            except (ValueError, TypeError, IndexError) as e:
                raise VerifyError(
                    f"{_where(index, node)}: {_operands(node)} are invalid: {e}"
                ) from e
            if expected is not node.type and expected != node.type:
                raise VerifyError(
                    f"{_where(index, node)}: recorded type {node.type}, but its shape rule gives "
                    f"{expected} for {_operands(node)}"
                )
            if node.params and not shares_params(node):
                for body in subgraph_params(node):
                    try:
                        _verify(body)
                    except VerifyError as e:
                        raise VerifyError(f"{_where(index, node)}: in its body: {e}") from e
        defined.add(node)
    for o in graph.outputs:
        if o not in defined:
            raise VerifyError(f"output %{o.name} is not defined in the graph")
    _check_users(graph, uses)
    return graph


def _where(index: int, node: Node) -> str:
    return f"node {index} (%{node.name} = {node.op})"


def _check_node(graph: Graph, index: int, node: Node, names: set[str]) -> None:
    """The error for a node that is named twice, belongs to another graph or has no op."""
    where = _where(index, node)
    _check_name(node, names, graph, lambda: where)
    if node.graph is not graph:
        raise VerifyError(f"{where} belongs to another graph")
    if node.op != CONST:
        raise VerifyError(f"{where}: unknown op {node.op!r}")


def _check_users(graph: Graph, uses: dict[Node, list[Node]]) -> None:
    """Every value's `users` lists exactly the nodes that take it as an input (with repeats)."""
    for value in graph.all_values():
        users = value.users
        readers = uses.get(value, [])
        if users == readers:  # in the same order: so it is as nodes are appended
            continue
        if len(users) == len(readers):  # in another order (after rewrites)
            for u in users:
                if u.graph is not graph or value not in u.inputs:
                    break
            else:
                continue
        stale = [u for u in users if u.graph is not graph or value not in u.inputs]
        raise VerifyError(
            f"%{value.name}: its users list is out of step with the graph "
            f"({len(users)} listed, {len(readers)} uses; stale: {[u.name for u in stale]})"
        )


def _check_name(node: Node, names: set[str], graph: Graph, where) -> None:
    if node.name in names:
        raise VerifyError(
            f"{where()}: %{node.name} is assigned more than once in graph {graph.name!r}"
        )
    names.add(node.name)


def _check_const(node: Node, index: int) -> None:
    if tuple(node.value.shape) != node.type.shape or node.value.dtype != node.type.dtype:
        raise VerifyError(
            f"{_where(index, node)}: value is {node.value.dtype}{list(node.value.shape)}, "
            f"recorded type is {node.type}"
        )


def _operands(node: Node) -> str:
    inputs = ", ".join(f"%{i.name}: {i.type}" for i in node.inputs)
    return f"inputs ({inputs}) with params {dict(node.params)}"
