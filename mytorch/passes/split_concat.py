"""`split_concat`: `cat([x, h], -1) @ W.T` becomes `x @ Wx.T + h @ Wh.T`.

Wx and Wh are slices of the live parameter W (columns of W, i.e. rows of W.T), so the
concatenated copy of the inputs is never built and each product can be optimized on its own
(the input product can be hoisted out of a recurrence). Fires only when the cat has no other
user and is concatenated along the contracted dim.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ops.shape import ALL, Slice
from .base import PassResult, register_pass, remark
from .rewrite import replace, subgraphs

PATTERN = "split_concat: cat -> matmul"


@register_pass("split_concat")
def split_concat(graph: Graph) -> PassResult:
    changed = False
    for g, _ in subgraphs(graph):
        changed |= _split_all(g)
    return PassResult(graph, changed)


def _split_all(graph: Graph) -> bool:
    slices: dict = {}  # (weight, start, stop) -> slice node, shared by every step
    changed = False
    for cat in list(graph.nodes):
        if cat.op != "cat" or cat.graph is not graph or not _matches(graph, cat):
            continue
        (matmul,) = cat.users
        replace(graph, matmul, _split(graph, cat, matmul.inputs[1], slices))
        changed = True
    if changed:
        graph.sort()
    return changed


def _matches(graph: Graph, cat: Node) -> bool:
    if len(cat.users) != 1:
        return remark(PATTERN, cat, False, f"cat has {len(cat.users)} users, not 1")
    if cat in graph.outputs:
        return remark(PATTERN, cat, False, "cat is also a graph output")
    user = cat.users[0]
    if user.op != "matmul" or user.inputs[0] is not cat or user.inputs[1] is cat:
        return remark(PATTERN, cat, False, f"cat is not the left operand of a matmul ({user.op})")
    last = len(cat.shape) - 1
    if cat.params["dim"] != last:
        return remark(PATTERN, cat, False, f"cat dim is {cat.params['dim']}, not the last dim")
    if len(user.inputs[1].shape) != 2:
        return remark(PATTERN, cat, False, "the matmul's right operand is not 2-D")
    return remark(PATTERN, cat, True)


def _split(graph: Graph, cat: Node, right: Node, slices: dict) -> Node:
    total, start = None, 0
    for piece in cat.inputs:
        stop = start + piece.shape[-1]
        product = graph.add_node("matmul", [piece, _rows(graph, right, start, stop, slices)])
        total = product if total is None else graph.add_node("add", [total, product])
        start = stop
    return total


def _rows(graph: Graph, right: Node, start: int, stop: int, slices: dict) -> Node:
    """Rows start:stop of `right`; for right = W.T, the transpose of W's columns start:stop."""
    transposed = right.op == "transpose" and right.params["d0"] == 0 and right.params["d1"] == 1
    source = right.inputs[0] if transposed else right
    key = (source, start, stop, transposed)
    if key not in slices:
        index = (ALL, Slice(start, stop, None)) if transposed else (Slice(start, stop, None),)
        piece = graph.add_node("getitem", [source], {"index": index})
        if transposed:
            piece = graph.add_node("transpose", [piece], {"d0": 0, "d1": 1})
        slices[key] = piece
    return slices[key]
