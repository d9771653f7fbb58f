"""`fuse_rnn_cell`: `act(x @ Wx.T + h @ Wh.T + biases)` becomes one `rnn_cell` node.

act is tanh or relu. The two products and the biases are the leaves of a tree of adds whose
intermediate values have no other user (nothing escapes the fused kernel). Biases must have the
hidden size as their only dim; several are summed into one (for nn.RNNCell's b_ih + b_hh, a sum
that CSE shares across steps). This is the shape nn.RNNCell programs have, and the shape
`split_concat` leaves the tutorial cell in.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from .base import PassResult, register_pass, remark
from .rewrite import replace

PATTERN = "fuse_rnn_cell: products + bias -> tanh/relu"


@register_pass("fuse_rnn_cell")
def fuse_rnn_cell(graph: Graph) -> PassResult:
    shared: dict = {}  # memoized transposes and bias sums, shared by every step
    changed = False
    for act in list(graph.nodes):
        if act.op not in ("tanh", "relu") or act.graph is not graph:
            continue
        terms = _match(act)
        if terms is None:
            continue
        replace(graph, act, _fuse(graph, act, *terms, shared))
        changed = True
    if changed:
        graph.sort()
    return PassResult(graph, changed)


def _match(act: Node):
    """(products, biases) when the pattern holds at `act`, else None (with a remark)."""
    pre = act.inputs[0]
    if pre.op != "add":
        return remark(PATTERN, act, False, f"the {act.op} input is {pre.op}, not add") or None
    if len(pre.users) != 1:
        return remark(PATTERN, act, False, "the pre-activation sum has another user") or None
    terms = _add_leaves(pre)
    products = [t for t in terms if t.op == "matmul" and len(t.users) == 1]
    biases = [t for t in terms if t not in products]
    if len(products) != 2:
        reason = f"the sum has {len(products)} single-use products, not 2"
        return remark(PATTERN, act, False, reason) or None
    if any(len(p.inputs[0].shape) != 2 or len(p.inputs[1].shape) != 2 for p in products):
        return remark(PATTERN, act, False, "a product operand is not 2-D") or None
    hidden = act.shape[-1]
    for b in biases:
        if tuple(b.shape) != (hidden,):
            reason = f"term %{b.name} of shape {tuple(b.shape)} is not a ({hidden},) bias"
            return remark(PATTERN, act, False, reason) or None
    if len({t.dtype for t in terms}) != 1:
        return remark(PATTERN, act, False, "the terms have different dtypes") or None
    remark(PATTERN, act, True)
    return products, biases


def _add_leaves(root: Node) -> list[Node]:
    """The terms of a tree of adds, left to right; inner adds must have one user each."""
    leaves, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.op == "add" and (node is root or len(node.users) == 1):
            stack.extend(reversed(node.inputs))
        else:
            leaves.append(node)
    return leaves


def _fuse(graph: Graph, act: Node, products, biases, shared: dict) -> Node:
    (x, x_w), (h, h_w) = (p.inputs for p in products)
    w_ih, w_hh = _weight(graph, x_w, shared), _weight(graph, h_w, shared)
    bias = _bias_sum(graph, biases, act, shared)
    return graph.add_node("rnn_cell", [x, h, w_ih, w_hh, bias], {"nonlinearity": act.op})


def _weight(graph: Graph, right: Node, shared: dict) -> Node:
    """W (out, in) from the right operand W.T of a product: the transpose's input if it is one."""
    if right.op == "transpose" and right.params["d0"] == 0 and right.params["d1"] == 1:
        return right.inputs[0]
    if ("t", right) not in shared:
        shared["t", right] = graph.add_node("transpose", [right], {"d0": 0, "d1": 1})
    return shared["t", right]


def _bias_sum(graph: Graph, biases, act: Node, shared: dict) -> Node:
    key = ("b", *biases)
    if key not in shared:
        if not biases:
            shared[key] = graph.add_const(np.zeros(act.shape[-1], act.dtype))
        else:
            total = biases[0]
            for b in biases[1:]:
                total = graph.add_node("add", [total, b])
            shared[key] = total
    return shared[key]
