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
from .rewrite import replace, subgraphs

PATTERN = "fuse_rnn_cell: products + bias -> tanh/relu"


@register_pass("fuse_rnn_cell")
def fuse_rnn_cell(graph: Graph) -> PassResult:
    changed = False
    for g, state in subgraphs(graph):
        changed |= _fuse(g, state)
    return PassResult(graph, changed)


def _fuse(graph: Graph, state: Node | None) -> bool:
    """Fuse every cell of `graph`; in a loop body, `state` is the loop's state input."""
    shared: dict = {}  # memoized transposes and bias sums, shared by every step
    changed = False
    for act in list(graph.nodes):
        if act.op not in ("tanh", "relu") or act.graph is not graph:
            continue
        match = _match(graph, act, shared, state)
        if isinstance(match, str):
            remark(PATTERN, act, False, match)
            continue
        remark(PATTERN, act, True)
        replace(graph, act, match)
        changed = True
    changed |= _orient_first_cells(graph)
    if changed:
        graph.sort()
    return changed


def _match(graph: Graph, act: Node, shared: dict, state: Node | None) -> Node | str:
    """The fused rnn_cell (added to the graph) when the pattern holds at `act`, else why not."""
    pre = act.inputs[0]
    if pre.op != "add":
        return f"the {act.op} input is {pre.op}, not add"
    escaping = set(graph.outputs)
    if len(pre.users) != 1 or pre in escaping:
        return "the pre-activation sum has another user"
    terms = _add_leaves(pre, escaping)
    products = [t for t in terms if t.op == "matmul" and len(t.users) == 1 and t not in escaping]
    biases = [t for t in terms if t not in products]
    if len(products) != 2:
        return f"the sum has {len(products)} single-use products, not 2"
    if any(len(p.inputs[0].shape) != 2 or len(p.inputs[1].shape) != 2 for p in products):
        return "a product operand is not 2-D"
    hidden = act.shape[-1]
    for b in biases:
        if tuple(b.shape) != (hidden,):
            return f"term %{b.name} of shape {tuple(b.shape)} is not a ({hidden},) bias"
    if len({t.dtype for t in terms}) != 1:
        return "the terms have different dtypes"
    # The recurrent product goes second, as h: its left operand is the loop's state or an earlier
    # cell, or at least has the hidden size (its weight is square).
    if _recurrent_rank(products[0], hidden, state) > _recurrent_rank(products[1], hidden, state):
        products.reverse()
    (x, x_w), (h, h_w) = (p.inputs for p in products)
    if x.shape[0] != h.shape[0] or act.shape != (x.shape[0], hidden):
        return f"the products' rows {x.shape[0]} and {h.shape[0]} do not make one batch"
    if h.shape[1] != hidden:
        return f"neither product takes a hidden state of size {hidden}"
    w_ih, w_hh = _weight(graph, x_w, shared), _weight(graph, h_w, shared)
    bias = _bias_sum(graph, biases, act, shared)
    return graph.add_node("rnn_cell", [x, h, w_ih, w_hh, bias], {"nonlinearity": act.op})


def _recurrent_rank(product: Node, hidden: int, state: Node | None) -> int:
    """How surely this product is the recurrent one: 2 from the state or an earlier cell, 1 if
    shaped like it."""
    left = product.inputs[0]
    if left is state or left.op == "rnn_cell":
        return 2
    return 1 if left.shape[-1] == hidden else 0


def _add_leaves(root: Node, escaping: set) -> list[Node]:
    """The terms of a tree of adds, left to right; inner adds must be used only inside it."""
    leaves, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.op == "add" and (node is root or (len(node.users) == 1 and node not in escaping)):
            stack.extend(reversed(node.inputs))
        else:
            leaves.append(node)
    return leaves


def _orient_first_cells(graph: Graph) -> bool:
    """A chain's first cell sees no earlier cell, so its x and h may be the wrong way round;
    the next cell tells (their weights are swapped): turn it around to match."""
    changed = False
    for cell in list(graph.nodes):
        if cell.op != "rnn_cell" or cell.graph is not graph:
            continue
        prev = cell.inputs[1]
        if prev.op != "rnn_cell" or prev.inputs[2] is prev.inputs[3]:
            continue
        if prev.inputs[2] is cell.inputs[3] and prev.inputs[3] is cell.inputs[2]:
            x, h, w_ih, w_hh, bias = prev.inputs
            turned = graph.add_node("rnn_cell", [h, x, w_hh, w_ih, bias], dict(prev.params))
            replace(graph, prev, turned)
            changed = True
    return changed


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
