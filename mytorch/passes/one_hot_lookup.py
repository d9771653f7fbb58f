"""`one_hot_lookup`: `matmul(one_hot(i, C), W)` with W a (C, N) matrix becomes `embedding(W, i)`.

A one-hot row times W is row i of W, so the product is a row lookup: for the names example's
hoisted input projection (T*B one-hot letters times the 57 input rows of W_ih.T) that is T*B row
copies instead of a product over all 57 classes, and autodiff makes the weight's gradient an
`embedding_grad` (adding each row of the cotangent into its class's row) instead of
`one_hot.T @ g`. The one-hot may be an integer one made float by a `cast` to W's dtype
(`F.one_hot(i, C).float()`). Fires only when the lookup has the product's type, in loop bodies too
(the product's type rule already makes W's rows the one-hot's classes).

Caveat: the product adds 0 * W[c, j] for every other class c, and 0 * inf is nan, so an inf in
W makes its column nan in every row of the product; the lookup returns row i as it is (eager
mode, which multiplies, then differs from the compiled code there).
"""

from __future__ import annotations

from ..ir.graph import Graph, Node, infer_type
from .base import PassResult, register_pass, remark
from .rewrite import replace, subgraphs

PATTERN = "one_hot_lookup: matmul(one_hot(i), W) -> embedding(W, i)"


@register_pass("one_hot_lookup")
def one_hot_lookup(graph: Graph) -> PassResult:
    changed = False
    for g, _ in subgraphs(graph):
        for node in list(g.nodes):
            one_hot = _one_hot(node.inputs[0]) if node.op == "matmul" else None
            if one_hot is not None:
                changed |= _rewrite(g, node, one_hot)
    return PassResult(graph, changed)


def _one_hot(x: Node) -> Node | None:
    """The one_hot node `x` is: itself, or an integer one_hot cast to a float dtype."""
    if x.op == "cast" and x.dtype.kind == "f" and x.inputs[0].dtype.kind in "iu":
        x = x.inputs[0]
    return x if x.op == "one_hot" else None


def _rewrite(graph: Graph, matmul: Node, one_hot: Node) -> bool:
    weight = matmul.inputs[1]
    classes = one_hot.params["num_classes"]
    if len(weight.shape) != 2:
        return remark(PATTERN, matmul, False, f"W has shape {list(weight.shape)}, not 2-D")
    indices = one_hot.inputs[0]
    lookup = infer_type("embedding", [weight, indices], {})
    if lookup != matmul.type:
        return remark(PATTERN, matmul, False, f"the lookup is {lookup}, the product {matmul.type}")
    bias = _row_bias(graph, matmul)
    if bias is None:
        replace(graph, matmul, graph.add_node("embedding", [weight, indices], before=matmul))
        return remark(PATTERN, matmul, True, f"{classes} classes")
    # A bias added to every looked-up row is added to the table's rows instead, once each.
    add, b = bias
    table = graph.add_node("add", [weight, b], before=add)
    replace(graph, add, graph.add_node("embedding", [table, indices], before=add))
    return remark(PATTERN, matmul, True, f"{classes} classes, the bias added to the table")


def _row_bias(graph: Graph, matmul: Node) -> tuple[Node, Node] | None:
    """(add, b) when the product's only use adds to it a b the same for every row (a bias of
    shape (N,), (1, N), (1,) or ()), so that the lookup can read W + b. Not when the product is
    an output too: it would still be made, as a second lookup besides the one with the bias."""
    if len(matmul.users) != 1 or matmul in graph.outputs:
        return None
    (add,) = matmul.users
    if add.op != "add" or add.type != matmul.type:
        return None
    b = add.inputs[1] if add.inputs[0] is matmul else add.inputs[0]
    if b is matmul or b.dtype != matmul.dtype or len(b.shape) > 2:
        return None
    if any(n != 1 for n in b.shape[:-1]) or b.shape[-1:] not in ((), (1,), matmul.shape[-1:]):
        return None
    return add, b
