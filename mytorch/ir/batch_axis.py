"""The batch axis of a graph, and the graph of a slice of the batch.

`batch_axes(graph)` finds an axis of the first argument whose rows never mix: every value gets
the axis that holds those rows (or None when it is the same for every slice: parameters,
constants), propagated through each op's rule. A slice of the batch then computes exactly its
rows of every value, so a batch split in two runs as two independent calls (`batch_slice`). A
reduction over the batch axis, a product contracting it, a random op, or any op without a rule
here makes the graph unsplittable (None).

A value that is the same for every slice may still be read row by row: a zeros (B, H) initial
state carried by a loop, a (B, H) argument added to the batch. Such a read takes the slice's
rows of it (`reads`); a bias broadcast over the batch is read whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ops import OPS
from ..ops.registry import TensorType
from ..ops.shape import Slice
from .graph import Graph, Node


class Unsplittable(Exception):
    """Raised by a rule: these rows mix, or the op has no rule."""


@dataclass
class BatchAxes:
    """The batch size, each value's batch axis (None: the same for every slice), and the reads
    of such values that take a slice's rows: (reader, input position) -> the axis of the rows.
    `partial`: the values each slice computes a share of (summed over slices); `layout`: the
    (outer, inner) sizes around the batch rows of a merged dim (absent: (1, 1), a plain one)."""

    size: int
    axes: dict[Node, int | None]
    reads: dict[tuple[Node, int], int] = field(default_factory=dict)
    partial: set[Node] = field(default_factory=set)
    layout: dict[Node, tuple[int, int]] = field(default_factory=dict)

    def plain(self, node: Node) -> bool:
        """Whether `node`'s batch rows, if any, are a dim of their own."""
        return node not in self.layout

    def slice_key(self, start: int, stop: int) -> tuple:
        """What a slice's graph depends on: its size, the rows of constants it reads, and where
        its rows start if it reads rows of a computed value (a getitem of those rows). Slices
        with one key have the same graph (and may share one build)."""
        key = [stop - start]
        for (reader, k), axis in self.reads.items():
            x = reader.inputs[k]
            if not x.is_const:
                key.append(start)
                break
            key.append(np.take(x.value, range(start, stop), axis=axis).tobytes())
        return tuple(key)


def batch_axes(
    graph: Graph, given: dict[Node, int | None] | None = None, partial=(), size: int = 0
) -> BatchAxes | None:
    """The batch axes of `graph`, trying each axis of its first argument (the first giving
    outputs rows, else the first giving partial sums); None if none works. Or with the inputs'
    axes `given` (and which inputs are `partial`, for a batch of `size`)."""
    if given is not None:
        return _try(graph, given, size, partial)
    args = [i for i in graph.inputs if not i.is_param]
    if not args:
        return None
    sums = None  # the first axis whose outputs are partial sums only
    for axis, size in enumerate(args[0].shape):
        if size < 2:
            continue
        given = {i: None for i in graph.inputs}
        given[args[0]] = axis
        found = _try(graph, given, size)
        if found is None:
            continue
        for arg in args[1:]:  # another argument with rows too (labels): sliced, not read whole
            for dim in [d for d, n in enumerate(arg.shape) if n == size]:
                more = _try(graph, {**given, arg: dim}, size)
                if more is not None:
                    given, found = {**given, arg: dim}, more
                    break
        if any(found.axes[o] is not None for o in graph.outputs):
            return found
        if sums is None and any(o in found.partial for o in graph.outputs):
            sums = found
    return sums


def _try(graph: Graph, given: dict, size: int, partial=()) -> BatchAxes | None:
    """The axes that follow from the inputs' (`given`; `partial`: inputs that are partial
    sums), or None when the graph does not split so."""
    found = BatchAxes(size, dict(given), partial=set(partial))
    try:
        _propagate(graph, found)
    except Unsplittable:
        return None
    return found


def _propagate(graph: Graph, found: BatchAxes) -> None:
    axes, partial, layout = found.axes, found.partial, found.layout
    for node in graph.nodes:
        rule = RULES.get(node.op)
        if node.is_const:
            axes[node] = None
        elif any(i in partial for i in node.inputs):
            axes[node] = None
            if not _linear(node, found):
                raise Unsplittable(f"%{node.name} ({node.op}) is not linear in a partial sum")
            partial.add(node)
        elif rule is None or not OPS[node.op].pure:
            if any(axes[i] is not None for i in node.inputs):
                raise Unsplittable(node.op)
            axes[node] = None
        else:
            merged = [i for i in node.inputs if i in layout]
            if merged and node.op not in FOLLOW_LAYOUT:
                raise Unsplittable(f"%{node.name} ({node.op}): the batch merged with other dims")
            if merged and len({layout.get(i) for i in node.inputs if axes[i] is not None}) > 1:
                raise Unsplittable(f"%{node.name}: inputs' batch rows laid out differently")
            axes[node] = rule(node, found)
            if axes[node] is None:
                layout.pop(node, None)
            elif merged and node.op not in ("reshape", "getitem"):
                layout[node] = layout[merged[0]]


def _linear(node: Node, found: BatchAxes) -> bool:
    """Whether `node` is a partial sum when the inputs in `found.partial` are (and the others
    are the same for every slice)."""
    if any(found.axes[i] is not None for i in node.inputs):
        return False  # a partial mixing with rows
    part = [i in found.partial for i in node.inputs]
    if node.op in ("add", "sub", "cat", "stack"):
        return all(part)
    if node.op in ("mul", "matmul"):
        return sum(part) == 1
    if node.op == "div":
        return part == [True, False]
    if node.op == "cast":
        return node.dtype.kind == "f"
    return node.op in LINEAR


# ---- rules: a node's axis from its inputs' -------------------------------------------------------


def _read(node: Node, k: int, want: int | None, found: BatchAxes) -> None:
    """Input k of `node` is read with its batch rows at `want` (None: whole)."""
    x = node.inputs[k]
    have = found.axes[x]
    if have is None and want is not None:
        if x.shape[want] != found.size:
            raise Unsplittable(f"%{node.name}: %{x.name} has no batch rows at dim {want}")
        found.reads[node, k] = want
    elif have != want:
        raise Unsplittable(f"%{node.name}: %{x.name}'s batch axis is {have}, needed {want}")


def _broadcasting(node: Node, found: BatchAxes) -> int | None:
    """Elementwise with numpy broadcasting: every input's batch rows align with the output's."""
    ndim = len(node.shape)
    known = {found.axes[i] + ndim - len(i.shape) for i in node.inputs if found.axes[i] is not None}
    if len(known) > 1:
        raise Unsplittable(f"%{node.name}: inputs' batch axes disagree")
    out = known.pop() if known else None
    for k, i in enumerate(node.inputs):
        at = None if out is None else out - (ndim - len(i.shape))
        _read(node, k, at if at is not None and at >= 0 and i.shape[at] != 1 else None, found)
    return out


def _matmul(node: Node, found: BatchAxes) -> int | None:
    a, b = node.inputs
    if len(a.shape) < 2 or len(b.shape) < 2:
        if found.axes[a] is not None or found.axes[b] is not None:
            raise Unsplittable(f"%{node.name}: a vector product")
        return None
    contracted = [
        found.axes[x] is not None and found.axes[x] - len(x.shape) == end
        for x, end in ((a, -1), (b, -2))
    ]
    if any(contracted):  # each slice's product: its share of the whole batch's
        for k, (x, end) in enumerate(((a, -1), (b, -2))):
            if not contracted[k]:
                if found.axes[x] is not None:
                    raise Unsplittable(f"%{node.name}: batch axes on both operands")
                _read(node, k, len(x.shape) + end, found)
        found.partial.add(node)
        return None
    ndim = len(node.shape)
    known = set()
    for x in (a, b):
        if found.axes[x] is not None:
            known.add(ndim + found.axes[x] - len(x.shape))
    if len(known) > 1:
        raise Unsplittable(f"%{node.name}: batch axes on both operands")
    out = known.pop() if known else None
    for k, (x, kept) in enumerate(((a, -2), (b, -1))):
        at = None
        if out is not None:
            from_end = out - ndim
            if from_end == kept or from_end < -2:  # its rows (columns), or a stacked dim
                at = len(x.shape) + from_end
                at = at if at >= 0 and x.shape[at] != 1 else None
        _read(node, k, at, found)
    return out


def _transpose(node: Node, found: BatchAxes) -> int | None:
    axis = found.axes[node.inputs[0]]
    ndim = len(node.shape)
    d0, d1 = node.params["d0"] % ndim, node.params["d1"] % ndim
    return {d0: d1, d1: d0}.get(axis, axis)


def _permute(node: Node, found: BatchAxes) -> int | None:
    axis = found.axes[node.inputs[0]]
    ndim = len(node.shape)
    return None if axis is None else [d % ndim for d in node.params["dims"]].index(axis)


def _getitem(node: Node, found: BatchAxes) -> int | None:
    (x,) = node.inputs
    axis = found.axes[x]
    if axis is None:
        return None
    dim = out = 0
    for item in node.params["index"]:
        if item is None:
            out += 1
            continue
        if not isinstance(item, (int, Slice)):
            raise Unsplittable("getitem: an advanced index")
        if dim == axis:
            layout = found.layout.get(x)
            if layout is not None:
                found.layout[node] = _merged_part(item, x.shape[dim], layout, found.size)
                if found.layout[node] == (1, 1):
                    del found.layout[node]
            elif not _whole(item, x.shape[dim]):
                raise Unsplittable("getitem: a part of the batch")
            return out
        out += isinstance(item, Slice)
        dim += 1
    if x in found.layout:
        found.layout[node] = found.layout[x]
    return out + axis - dim


def _merged_part(item, n: int, layout: tuple[int, int], size: int) -> tuple[int, int]:
    """The layout of whole blocks of every batch row (steps of T*B rows) taken from a merged
    dim of `n`; anything else mixes the rows."""
    if not isinstance(item, Slice):
        raise Unsplittable("getitem: an index into merged batch rows")
    start, stop, step = slice(item.start, item.stop, item.step).indices(n)
    block = size * layout[1]
    if step != 1 or start % block or stop % block or stop <= start:
        raise Unsplittable("getitem: a part of merged batch rows")
    return (stop - start) // block, layout[1]


def _whole(item, n: int) -> bool:
    if not isinstance(item, Slice):
        return False
    return slice(item.start, item.stop, item.step).indices(n) == (0, n, 1)


def _joining(node: Node, found: BatchAxes) -> int | None:
    """stack and cat: every piece sliced alike, along another dim than the join."""
    known = {found.axes[i] for i in node.inputs if found.axes[i] is not None}
    if len(known) > 1:
        raise Unsplittable(f"%{node.name}: pieces' batch axes disagree")
    axis = known.pop() if known else None
    if axis is None:
        return None
    dim = node.params["dim"] % len(node.shape)
    if node.op == "cat" and dim == axis:
        raise Unsplittable("cat along the batch axis")
    for k in range(len(node.inputs)):
        _read(node, k, axis, found)
    return axis + (node.op == "stack" and dim <= axis)


def _reduction(node: Node, found: BatchAxes) -> int | None:
    axis = found.axes[node.inputs[0]]
    if axis is None:
        return None
    dims = node.params.get("dim")
    if dims is None or axis in dims:
        if node.op not in ("sum", "mean"):
            raise Unsplittable(f"%{node.name} reduces over the batch")
        found.partial.add(node)  # a mean: rescaled by `batch_slice`
        return None
    return axis if node.params.get("keepdim") else axis - sum(d < axis for d in dims)


def _reshape(node: Node, found: BatchAxes) -> int | None:
    """The output dim holding the batch rows: each row's elements stay together (`inner`
    after each row's start, `outer` groups before), else the rows mix."""
    (x,) = node.inputs
    axis = found.axes[x]
    if axis is None:
        return None
    outer, inner = found.layout.get(x, (1, 1))
    after = inner * math.prod(x.shape[axis + 1 :])  # elements per batch row
    rows = after * found.size
    shape = node.shape
    for dim in reversed(range(len(shape))):
        total = math.prod(shape[dim:])
        if total % rows == 0:
            suffix = total // shape[dim]
            if after % suffix:
                break
            layout = (total // rows, after // suffix)
            if layout == (1, 1):
                found.layout.pop(node, None)
            else:
                found.layout[node] = layout
            return dim
    raise Unsplittable(f"%{node.name}: a reshape mixing the batch rows")


def _sum_to(node: Node, found: BatchAxes) -> int | None:
    (x,) = node.inputs
    axis = found.axes[x]
    if axis is None:
        return None
    lead = len(x.shape) - len(node.shape)
    if axis < lead or node.shape[axis - lead] == 1:
        found.partial.add(node)
        return None
    return axis - lead


def _broadcast_to(node: Node, found: BatchAxes) -> int | None:
    """A value's axis carries over. A value the same for every slice broadcast along one dim
    the size of the batch gets that axis: a slice's rows of it are it broadcast to the slice
    (a gradient's broadcast of a mean's cotangent, computed per slice, not read by rows)."""
    (x,) = node.inputs
    lead = len(node.shape) - len(x.shape)
    axis = found.axes[x]
    if axis is not None:
        return axis + lead
    dims = [
        d
        for d, n in enumerate(node.shape)
        if n == found.size and (d < lead or x.shape[d - lead] == 1)
    ]
    return dims[0] if len(dims) == 1 else None


def _one_hot(node: Node, found: BatchAxes) -> int | None:
    return found.axes[node.inputs[0]]


def _softmax(node: Node, found: BatchAxes) -> int | None:
    axis = found.axes[node.inputs[0]]
    if axis is not None and node.params["dim"] % len(node.shape) == axis:
        raise Unsplittable("softmax over the batch")
    return axis


def _rnn(node: Node, found: BatchAxes) -> int | None:
    """rnn_step(xw, h, w_hh) and rnn_cell(x, h, w_ih, w_hh, b): the batch is their rows."""
    known = {found.axes[i] for i in node.inputs[:2] if found.axes[i] is not None}
    if known - {0}:
        raise Unsplittable(f"%{node.name}: the batch is not its rows")
    axis = 0 if known else None
    for k in range(len(node.inputs)):
        _read(node, k, axis if k < 2 else None, found)
    return axis


def _embedding(node: Node, found: BatchAxes) -> int | None:
    _read(node, 0, None, found)
    return found.axes[node.inputs[1]]


def _embedding_grad(node: Node, found: BatchAxes) -> int | None:
    """embedding_grad(g, indices): each slice adds its rows of g into the table, so the table
    is a partial sum (as a product contracting the batch is); g and the indices share the
    batch axis (g has one dim more, the table's width, last)."""
    axes = {found.axes[i] for i in node.inputs} - {None}
    if not axes:
        return None
    axis = axes.pop()
    if axes or axis >= len(node.inputs[1].shape):
        raise Unsplittable(f"%{node.name}: g's and the indices' batch axes disagree")
    _read(node, 0, axis, found)
    _read(node, 1, axis, found)
    found.partial.add(node)
    return None


def _loop(node: Node, found: BatchAxes) -> int | None:
    body: Graph = node.params["body"]
    k = node.params.get("sequences", 1)
    given = []
    for s in node.inputs[:k]:
        axis = found.axes[s]
        if axis == 0:
            raise Unsplittable("loop: the batch is its steps")
        given.append(None if axis is None else axis - 1)
    invariants = [found.axes[i] for i in node.inputs[k + 1 :]]
    h0 = node.inputs[k]
    if found.axes[h0] is not None:
        carries = [found.axes[h0]]
    else:  # the same for every slice; or read row by row, as the body wants
        carries = [None] + [d for d, n in enumerate(h0.shape) if n == found.size]
    for carry in carries:
        axes = dict(zip(body.inputs, [*given, carry, *invariants], strict=True))
        inner = BatchAxes(found.size, axes)
        try:
            _propagate(body, inner)
        except Unsplittable:
            continue
        if inner.partial or inner.layout:  # kept simple: a body's rows stay rows
            continue
        if inner.axes[body.outputs[0]] == carry:
            _read(node, k, carry, found)
            found.axes.update(inner.axes)
            found.reads.update(inner.reads)
            return None if carry is None else carry + 1
    raise Unsplittable(f"%{node.name}: no batch axis of its carry fits its body")


ELEMENTWISE = (
    "add sub mul div pow where eq ne lt le gt ge neg exp log sqrt tanh sigmoid relu abs clamp cast"
)
RULES = {name: _broadcasting for name in ELEMENTWISE.split()}
RULES.update(
    matmul=_matmul,
    transpose=_transpose,
    permute=_permute,
    getitem=_getitem,
    stack=_joining,
    cat=_joining,
    sum=_reduction,
    mean=_reduction,
    max=_reduction,
    min=_reduction,
    argmax=_reduction,
    argmin=_reduction,
    softmax=_softmax,
    log_softmax=_softmax,
    rnn_step=_rnn,
    rnn_cell=_rnn,
    embedding=_embedding,
    embedding_grad=_embedding_grad,
    loop=_loop,
    reshape=_reshape,
    sum_to=_sum_to,
    broadcast_to=_broadcast_to,
    one_hot=_one_hot,
)
# Views and sums: they follow a batch axis merged with other dims (`BatchAxes.layout`), as
# elementwise ops and products do, and keep a partial sum partial, as negation does.
_VIEWS_AND_SUMS = (
    *("reshape", "getitem", "transpose", "permute", "broadcast_to"),
    *("sum", "mean", "sum_to"),
)
FOLLOW_LAYOUT = {*ELEMENTWISE.split(), "matmul", *_VIEWS_AND_SUMS}
LINEAR = {"neg", *_VIEWS_AND_SUMS}


# ---- the graph of one slice of the batch ------------------------------------------------------


def batch_slice(graph: Graph, found: BatchAxes, start: int, stop: int) -> Graph:
    """A graph computing rows [start, stop) of the batch of every output of `graph`, from those
    rows of each argument that has a batch axis (and every other input whole)."""
    out = Graph(f"{graph.name}_rows{start}_{stop}")
    copy = _SliceCopy(found, start, stop)
    env = {i: out.add_input(i.name, copy.type(i), param=i.is_param) for i in graph.inputs}
    copy.nodes(graph, out, env)
    out.set_outputs([copy.value(out, env, o) for o in graph.outputs])
    return out


class _SliceCopy:
    def __init__(self, found: BatchAxes, start: int, stop: int):
        self.found, self.start, self.stop = found, start, stop
        self.sliced: dict[tuple[Node, int], Node] = {}  # (copied value, axis) -> its rows

    def nodes(self, graph: Graph, out: Graph, env: dict) -> None:
        """Copy `graph`'s nodes into `out`; constants are copied when first read."""
        for node in graph.nodes:
            if node.is_const:
                continue
            params = dict(node.params)
            if node.op == "loop":
                params["body"] = self.body(params["body"])
            elif node.op == "getitem" and self.found.axes[node.inputs[0]] is not None:
                params["index"] = self.index(node)
            elif "shape" in params and self.found.axes[node] is not None:
                params["shape"] = self.type(node).shape  # reshape, broadcast_to, sum_to
            inputs = []
            for k, x in enumerate(node.inputs):
                axis = self.found.reads.get((node, k))
                value = self.value(out, env, x, axis)
                inputs.append(value)
            env[node] = out.add_node(node.op, inputs, params, self.type(node), node.name)
            if node.op == "mean" and self.found.axes[node.inputs[0]] is not None:
                if node in self.found.partial:  # its rows' share of the whole batch's mean
                    share = np.asarray((self.stop - self.start) / self.found.size, node.dtype)
                    scale = out.add_const(share, f"{node.name}.share")
                    env[node] = out.add_node("mul", [env[node], scale], name=f"{node.name}.part")

    def body(self, body: Graph) -> Graph:
        inner = Graph(body.name)
        env = {i: inner.add_input(i.name, self.type(i)) for i in body.inputs}
        self.nodes(body, inner, env)
        inner.set_outputs([self.value(inner, env, o) for o in body.outputs])
        return inner

    def value(self, out: Graph, env: dict, x: Node, axis: int | None = None) -> Node:
        """`x` in `out`, whole or (`axis`) its rows: a constant's are sliced here."""
        if x.is_const:
            key = (x, axis)
            if key not in self.sliced:
                value = x.value
                name = x.name
                if axis is not None:
                    value = value[(slice(None),) * axis + (slice(self.start, self.stop),)]
                    name = f"{x.name}.rows{axis}"
                self.sliced[key] = out.add_const(value, name)
            return self.sliced[key]
        return env[x] if axis is None else self.rows(out, env[x], axis)

    def rows(self, out: Graph, x: Node, axis: int) -> Node:
        """A getitem of the rows of `x` (a value in `out`) along `axis`, made once."""
        key = (x, axis)
        if key not in self.sliced:
            index = (Slice(None, None, None),) * axis + (Slice(self.start, self.stop, None),)
            name = f"{x.name}.rows{axis}"
            self.sliced[key] = out.add_node("getitem", [x], {"index": index}, name=name)
        return self.sliced[key]

    def index(self, node: Node) -> tuple:
        """A getitem's index with its item at the batch axis made the slice's: `:`, or the
        same blocks of merged rows (`_merged_part`), each the slice's rows long."""
        x = node.inputs[0]
        axis, items, dim = self.found.axes[x], list(node.params["index"]), 0
        for k, item in enumerate(items):
            if item is None:
                continue
            if dim == axis:
                items[k] = Slice(None, None, None)
                if x in self.found.layout:
                    start, stop, _ = slice(item.start, item.stop, item.step).indices(x.shape[dim])
                    block = self.found.size * self.found.layout[x][1]
                    rows = (self.stop - self.start) * self.found.layout[x][1]
                    items[k] = Slice(start // block * rows, stop // block * rows, None)
            dim += 1
        return tuple(items)

    def type(self, node: Node) -> TensorType:
        axis = self.found.axes[node]
        if axis is None:
            return node.type
        shape = list(node.shape)
        outer, inner = self.found.layout.get(node, (1, 1))
        shape[axis] = outer * (self.stop - self.start) * inner
        return TensorType(tuple(shape), np.dtype(node.dtype))
