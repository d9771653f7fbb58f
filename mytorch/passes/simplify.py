"""`simplify`: algebraic identities that remove work without changing any value.

- transpose(transpose(x, a, b), a, b) -> x; permute(permute(x)) composes, identity -> x;
- x * 1, 1 * x, x / 1, x + 0, 0 + x, x - 0 -> x (only when that keeps x's shape and dtype);
- reshape / broadcast_to / sum_to to x's own shape -> x; reshape(reshape(x)) -> reshape(x);
- stack(x[0], x[1], ..., x[n-1]) -> x (the steps of a sequence put back together);
- getitem_grad(a, [:, 0:p]) + getitem_grad(b, [:, p:n]) -> cat(a, b): the gradient of a tensor
  read as slices that tile it (a weight split by `split_concat`) is its parts put side by side,
  with no zeros to fill and add;
- transpose(transpose(a) @ b) -> transpose(b) @ a (2-D): a weight's gradient (of `x @ W.T`)
  made in the layout it is returned in, not made transposed and then copied;
- transpose(cat(a, b, dim=0)) -> cat(transpose(a), transpose(b), dim=1) (2-D, the cat read only
  there, some piece a product or a transpose): the pieces then land in the transposed layout
  themselves (a product as the rule above makes it, straight into its slice), with no whole
  transpose copied after the cat (a weight split by `split_concat` or `one_hot_lookup`);
- cat(a @ b1, a @ b2, dim=-1) -> a @ cat(b1, b2, dim=-1) (2-D, products used only there), when
  the operands' cat copies less than the products' (a has more rows than columns): the pieces
  of a split weight's gradient as one product;
- loop(..., zeros, ...) over a sequence of zeros -> the body reads a zeros constant instead,
  which the rules above then fold (a reverse loop's cotangent from outside the loop, when only
  its last state is read): the loop stops reading a zero array at every step;
- last, once nothing above applies: a @ cat(zeros, y) -> a[:, k:] @ y (2-D, also through a
  reshape folding the cat's leading dims): rows of zeros add nothing (a weight's gradient against
  the states the steps start from, the first being zeros), and the cat's copy goes.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ops.shape import Slice, step_range
from .base import PassResult, register_pass
from .rewrite import (
    const_equals,
    is_zeros,
    replace,
    stacked_source,
    subgraphs,
    transposed,
)

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
        for rewrite in (_rewrite, _late_rewrite):
            while _simplify(g, rewrite):  # a rewrite can make another one possible
                changed = True
    return PassResult(graph, changed)


def _simplify(graph: Graph, rewrite) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.graph is not graph:  # removed by an earlier rewrite in this sweep
            continue
        new = rewrite(graph, node)
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
    if op in _ZERO_OPERAND:
        return _with_zeros(graph, node)
    if op == "getitem" and ins[0].op == "cat":
        return _slice_of_part(graph, node)
    if op == "getitem" and ins[0].op == "reshape" and ins[0].shape[:1] == (1,):
        span = step_range(node.params["index"], 1)
        return _take(graph, ins[0], *span, node) if span is not None and span[2] else None
    if op == "getitem" and ins[0].op == "getitem_grad":
        return _slice_of_scatter(graph, node)
    if op == "stack":
        return _unstack(node)
    if op == "transpose" and ins[0].op == "matmul":
        return _transpose_product(graph, node)
    if op == "transpose" and ins[0].op == "cat":
        return _transpose_cat(graph, node)
    if op == "cat" and node.params["dim"] == 0 and any(i.op == "cat" for i in ins):
        return _flatten_cats(graph, node)
    if op == "cat":
        return _join_products(graph, node)
    if op == "loop":
        return _without_zero_sequences(graph, node)
    return None


# op -> the operand positions where zeros make the result zeros, or leave a cheaper op
_ZERO_OPERAND = {"matmul": (0, 1), "mul": (0, 1), "rnn_step": (1,), "rnn_cell": (1,)}


def _with_zeros(graph: Graph, node: Node) -> Node | None:
    """matmul or mul with zeros -> zeros; an RNN step from the zero state skips its product.
    (As in any product: zeros times a value are taken to be zeros, inf and nan included.)"""
    op, ins = node.op, node.inputs
    if not any(is_zeros(ins[k]) for k in _ZERO_OPERAND[op]):
        return None
    if op in ("matmul", "mul"):
        return graph.add_const(np.zeros(node.shape, dtype=node.dtype))
    x = ins[0]
    if op == "rnn_cell":  # act(x @ w_ih.T + b)
        _, _, w_ih, _, bias = ins
        w_t = transposed(graph, w_ih)
        x = graph.add_node("add", [graph.add_node("matmul", [x, w_t]), bias])
    if x.type != node.type:
        return None
    return graph.add_node(node.params["nonlinearity"], [x])


def _without_zero_sequences(graph: Graph, loop: Node) -> Node | None:
    """The loop with its sequences of zeros (all but one, if all are: it counts the steps) read
    as zeros constants in a new body, simplified."""
    sequences = loop.params.get("sequences", 1)
    zero = [k for k in range(sequences) if is_zeros(loop.inputs[k])]
    if len(zero) == sequences:
        zero = zero[1:]
    if not zero:
        return None
    body = loop.params["body"]
    new_body = Graph(body.name)
    value = {}
    for k, i in enumerate(body.inputs):
        if k in zero:
            value[i] = new_body.add_const(np.zeros(i.shape, dtype=i.dtype), i.name)
        else:
            value[i] = new_body.add_input(i.name, i.type)
    for node in body.nodes:  # (the body may be shared: it is copied, not changed)
        if node.is_const:
            value[node] = new_body.add_const(node.value, node.name)
        else:
            ins = [value[i] for i in node.inputs]
            value[node] = new_body.add_node(node.op, ins, node.params, node.type, node.name)
            value[node].loc = node.loc
    new_body.set_outputs([value[o] for o in body.outputs])
    simplify(new_body)
    inputs = [x for k, x in enumerate(loop.inputs) if k not in zero]
    params = {**loop.params, "body": new_body, "sequences": sequences - len(zero)}
    return graph.add_node("loop", inputs, params)


def _take(graph: Graph, x: Node, start: int, stop: int, by_int: bool, like: Node) -> Node:
    """Steps start:stop of x (an int index when by_int), with `like`'s other index entries."""
    if not by_int and (start, stop) == (0, x.shape[0]):
        return x
    if by_int and x.op == "reshape" and x.shape == (1,) + x.inputs[0].shape:
        return x.inputs[0]  # (a peeled step, given its steps dim)
    if x is like.inputs[0]:
        return None
    first = start if by_int else Slice(start, stop, None)
    return graph.add_node("getitem", [x], {"index": (first,) + tuple(like.params["index"][1:])})


def _slice_of_part(graph: Graph, node: Node) -> Node | None:
    """cat(a, b, dim=0)[i] or [i:j] -> the same steps of the one part they lie in: a peeled
    loop's states read where the loop's were."""
    joined = node.inputs[0]
    span = step_range(node.params["index"], joined.shape[0]) if joined.params["dim"] == 0 else None
    if span is None:
        return None
    start, stop, by_int = span
    offset = 0
    for part in joined.inputs:
        n = part.shape[0]
        if offset <= start and stop <= offset + n:
            return _take(graph, part, start - offset, stop - offset, by_int, node)
        offset += n
    return None


def _slice_of_scatter(graph: Graph, node: Node) -> Node | None:
    """getitem_grad(g, [k])[i:j]: zeros when k is not in i:j, else g (a peeled loop's slices
    of the cotangent that only its last step receives)."""
    scatter = node.inputs[0]
    steps = scatter.shape[0]
    read = step_range(node.params["index"], steps)
    written = step_range(scatter.params["index"], steps)
    if read is None or written is None:
        return None
    (start, stop, by_int), (w_start, w_stop, w_int) = read, written
    g = scatter.inputs[0]
    if stop <= w_start or w_stop <= start:
        return graph.add_const(np.zeros(node.shape, dtype=node.dtype))
    if (start, stop, by_int) == (w_start, w_stop, w_int):
        return g if g.type == node.type else None
    if (start, stop) == (w_start, w_stop) and w_int:  # x[k:k+1] of a scatter at [k]
        new = graph.add_node("reshape", [g], {"shape": node.shape})
        return new if new.type == node.type else None
    return None


def _flatten_cats(graph: Graph, node: Node) -> Node | None:
    """cat(a, cat(b, c), dim=0) -> cat(a, b, c), the inner cat's other readers reading its
    steps of the outer one: one copy instead of two (a peeled reverse loop's steps and the
    peeled step before them)."""
    parts, inner_spans, offset = [], [], 0
    for i in node.inputs:
        if i.op == "cat" and i.params["dim"] == 0 and i not in graph.outputs:
            parts.extend(i.inputs)
            inner_spans.append((i, offset))
        else:
            parts.append(i)
        offset += i.shape[0]
    if not inner_spans:  # (inner cats along another dim, or outputs: nothing to join)
        return None
    new = graph.add_node("cat", parts, {"dim": 0})
    if new.type != node.type:
        return None
    for inner, start in inner_spans:
        if any(u is not node for u in inner.users):
            index = (Slice(start, start + inner.shape[0], None),)
            view = graph.add_node("getitem", [new], {"index": index})
            for user in [u for u in inner.users if u is not node]:
                user.inputs = tuple(view if i is inner else i for i in user.inputs)
                view.users.append(user)
                inner.users.remove(user)
    return new


def _late_rewrite(graph: Graph, node: Node) -> Node | None:
    """Rewrites that would hide a better one from `_rewrite`: they run once it is done."""
    if node.op == "matmul":
        return _drop_zero_rows(graph, node)
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
    if not (_swaps(node) and _swaps(a)):
        return None
    b_t = graph.add_node("transpose", [b], {"d0": 0, "d1": 1})
    return graph.add_node("matmul", [b_t, a.inputs[0]], {})


def _transpose_cat(graph: Graph, node: Node) -> Node | None:
    cat = node.inputs[0]
    if not (_only_2d(cat) and _swaps(node) and _read_once(graph, cat)):
        return None
    if not any(x.op in ("matmul", "transpose") for x in cat.inputs):
        return None  # nothing would land in place: one strided copy either way
    pieces = [graph.add_node("transpose", [x], {"d0": 0, "d1": 1}) for x in cat.inputs]
    return graph.add_node("cat", pieces, {"dim": 1 - cat.params["dim"] % 2})


def _swaps(transpose: Node) -> bool:
    """A transpose of a 2-D value that swaps its dims (not one naming the same dim twice)."""
    return {transpose.params["d0"] % 2, transpose.params["d1"] % 2} == {0, 1}


def _drop_zero_rows(graph: Graph, node: Node) -> Node | None:
    a, b = node.inputs
    if not _only_2d(node, a, b):  # (after `_join_products`: a joined product keeps its zeros)
        return None
    joined = b.inputs[0] if b.op == "reshape" else b
    if joined.op != "cat" or joined.params["dim"] != 0 or len(joined.shape) < 2:
        return None
    if joined.shape[-1] != b.shape[1]:  # (a reshape that only folds the leading dims into rows)
        return None
    rows = [int(np.prod(p.shape[:-1], dtype=np.int64)) for p in joined.inputs]
    zero = [is_zeros(p) for p in joined.inputs]
    kept = [k for k, z in enumerate(zero) if not z]
    if not kept or len(kept) == len(zero) or kept != list(range(kept[0], kept[-1] + 1)):
        return None
    start = sum(rows[: kept[0]])
    stop = start + sum(rows[k] for k in kept)
    parts = [joined.inputs[k] for k in kept]
    rest = parts[0] if len(parts) == 1 else graph.add_node("cat", parts, {"dim": 0})
    if rest.shape != (stop - start, b.shape[1]):
        rest = graph.add_node("reshape", [rest], {"shape": (stop - start, b.shape[1])})
    index = (Slice(None, None, None), Slice(start, stop, None))
    return graph.add_node("matmul", [graph.add_node("getitem", [a], {"index": index}), rest], {})


def _same_value(x: Node, y: Node) -> bool:
    """x is y, or the same view (transpose, reshape) of one value, before `cse` merges them."""
    return x is y or (
        x.op == y.op
        and x.op in ("transpose", "reshape")
        and x.params == y.params
        and _same_value(x.inputs[0], y.inputs[0])
    )


def _join_products(graph: Graph, node: Node) -> Node | None:
    if not _joinable(graph, node):
        return None
    right = graph.add_node("cat", [p.inputs[1] for p in node.inputs], {"dim": 1})
    return graph.add_node("matmul", [node.inputs[0].inputs[0], right], {})


def _joinable(graph: Graph, node: Node) -> bool:
    parts = node.inputs
    if len(parts) < 2 or node.params["dim"] not in (1, -1) or not _only_2d(node, *parts):
        return False
    if any(
        p.op != "matmul"
        or not _read_once(graph, p)
        or not _same_value(p.inputs[0], parts[0].inputs[0])
        for p in parts
    ):
        return False
    a = parts[0].inputs[0]
    return _only_2d(a) and a.shape[1] < a.shape[0] and len(set(parts)) == len(parts)


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
