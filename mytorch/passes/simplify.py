"""`simplify`: algebraic identities that remove work without changing any value.

- transpose(transpose(x, a, b), a, b) -> x; permute(permute(x)) composes, identity -> x;
- x * 1, 1 * x, x / 1, x + 0, 0 + x, x - 0 -> x (only when that keeps x's shape and dtype);
- reshape / broadcast_to / sum_to to x's own shape -> x; reshape(reshape(x)) -> reshape(x);
- stack(x[0], x[1], ..., x[n-1]) -> x (the steps of a sequence put back together);
- getitem_grad(a, [:, 0:p]) + getitem_grad(b, [:, p:n]) -> cat(a, b): the gradient of a tensor
  read as slices that tile it (a weight split by `split_concat`) is its parts put side by side,
  with no zeros to fill and add.
- transpose(transpose(a) @ b) -> transpose(b) @ a (2-D): a weight's gradient (of `x @ W.T`)
  made in the layout it is returned in, not made transposed and then copied;
- cat(a @ b1, a @ b2, dim=-1) -> a @ cat(b1, b2, dim=-1) (2-D, products used only there), when
  the operands' cat copies less than the products' (a has more rows than columns): the pieces
  of a split weight's gradient as one product.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ops.shape import Slice
from .base import PassResult, register_pass
from .rewrite import const_equals, replace, stacked_source, subgraphs

_IDENTITY_OPERAND = {  # op -> (identity constant, operand positions where it may stand)
    "add": (0, (0, 1)),
    "sub": (0, (1,)),
    "mul": (1, (0, 1)),
    "div": (1, (1,)),
}


@register_pass("simplify")
def simplify(graph: Graph) -> PassResult:
    changed = False
    for g, _ in subgraphs(graph):
        while _simplify(g):  # a rewrite can make another one possible
            changed = True
    return PassResult(graph, changed)


def _simplify(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.graph is not graph:  # removed by an earlier rewrite in this sweep
            continue
        new = _rewrite(graph, node)
        if new is not None:
            replace(graph, node, new)
            changed = True
    if changed:
        graph.sort()
    return changed


def _rewrite(graph: Graph, node: Node) -> Node | None:
    """A value equal to `node` that is cheaper, or None."""
    op, ins = node.op, node.inputs
    if op == "add" and all(i.op == "getitem_grad" for i in ins):
        return _join_scatters(graph, node)
    if op in _IDENTITY_OPERAND:
        identity, positions = _IDENTITY_OPERAND[op]
        for k in positions:
            other = ins[1 - k]
            if const_equals(ins[k], identity) and other.type == node.type:
                return other
        return None
    if op in ("reshape", "broadcast_to", "sum_to") and ins[0].type == node.type:
        return ins[0]
    if op == "reshape" and ins[0].op == "reshape":
        source = ins[0].inputs[0]
        if source.type == node.type:
            return source
        return graph.add_node("reshape", [source], dict(node.params))
    if op == "transpose" and ins[0].op == "transpose" and ins[0].params == node.params:
        return ins[0].inputs[0]
    if op == "permute":
        dims = tuple(node.params["dims"])
        if dims == tuple(range(len(dims))):
            return ins[0]
        if ins[0].op == "permute":
            inner = ins[0].params["dims"]
            composed = tuple(inner[d] for d in dims)
            if composed == tuple(range(len(dims))):
                return ins[0].inputs[0]
            return graph.add_node("permute", [ins[0].inputs[0]], {"dims": composed})
    if op == "stack":
        return _unstack(node)
    if op == "transpose" and ins[0].op == "matmul":
        return _transpose_product(graph, node)
    if op == "cat":
        return _join_products(graph, node)
    return None


def _read_once(graph: Graph, node: Node) -> bool:
    return len(node.users) == 1 and node not in graph.outputs


def _only_2d(*nodes: Node) -> bool:
    return all(len(n.shape) == 2 for n in nodes)


def _transpose_product(graph: Graph, node: Node) -> Node | None:
    product = node.inputs[0]
    a, b = product.inputs
    if not _only_2d(product, a, b) or a.op != "transpose" or not _read_once(graph, product):
        return None
    b_t = graph.add_node("transpose", [b], {"d0": 0, "d1": 1})
    return graph.add_node("matmul", [b_t, a.inputs[0]], {})


def _same_value(x: Node, y: Node) -> bool:
    """x is y, or the same view (transpose, reshape) of one value, before `cse` merges them."""
    return x is y or (
        x.op == y.op
        and x.op in ("transpose", "reshape")
        and x.params == y.params
        and _same_value(x.inputs[0], y.inputs[0])
    )


def _join_products(graph: Graph, node: Node) -> Node | None:
    parts = node.inputs
    if len(parts) < 2 or node.params["dim"] not in (1, -1) or not _only_2d(node, *parts):
        return None
    if any(
        p.op != "matmul"
        or not _read_once(graph, p)
        or not _same_value(p.inputs[0], parts[0].inputs[0])
        for p in parts
    ):
        return None
    a = parts[0].inputs[0]
    if not _only_2d(a) or a.shape[1] >= a.shape[0] or len(set(parts)) != len(parts):
        return None
    right = graph.add_node("cat", [p.inputs[1] for p in parts], {"dim": 1})
    return graph.add_node("matmul", [a, right], {})


def _join_scatters(graph: Graph, node: Node) -> Node | None:
    spans = [_slice_span(s.params["index"], s.params["shape"]) for s in node.inputs]
    if None in spans or len({dim for dim, _, _ in spans}) != 1:
        return None
    dim = spans[0][0]
    order = sorted(range(len(spans)), key=lambda k: spans[k][1])
    edges = [spans[k][1:] for k in order]
    size = node.inputs[0].params["shape"][dim]
    tiles = edges[0][0] == 0 and edges[-1][1] == size
    if not tiles or any(a[1] != b[0] for a, b in zip(edges, edges[1:], strict=False)):
        return None
    if any(s.params["shape"] != node.inputs[0].params["shape"] for s in node.inputs):
        return None
    joined = graph.add_node("cat", [node.inputs[k].inputs[0] for k in order], {"dim": dim})
    return joined if joined.type == node.type else None


def _slice_span(index, shape) -> tuple[int, int, int] | None:
    """(dim, start, stop) when `index` takes all of every dim but one, and a range of that one."""
    span = None
    for dim, entry in enumerate(index):
        if not isinstance(entry, Slice) or entry.step not in (None, 1):
            return None
        start, stop, _ = slice(entry.start, entry.stop).indices(shape[dim])
        if (start, stop) == (0, shape[dim]):
            continue
        if span is not None or start >= stop:
            return None
        span = (dim, start, stop)
    return span


def _unstack(node: Node) -> Node | None:
    """stack(x[0], ..., x[n-1], dim=0) is x itself, when x has exactly n steps."""
    if node.params["dim"] != 0:
        return None
    source = stacked_source(node.inputs)
    return source if source is not None and source.type == node.type else None
