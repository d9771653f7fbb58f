"""Per-op lowerings for the llvm backend, registered by op name.

Two kinds:
- view lowerings return a new `View` of their input (transpose, slices, broadcasts, reshapes of
  contiguous values): no code, no copy. They may return None to ask for a materialized copy.
- kernel lowerings emit loops that write the op's value into a destination view `out`.

Semantics follow each op's numpy reference (`mytorch/ops`), including NaN propagation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ..ops.shape import IntArray, Slice, decode_index
from . import gemm, mathfns
from .kernel import I8, I64, View, contiguous_strides, intrinsic, llvm_type

VIEWS: dict[str, Callable] = {}
KERNELS: dict[str, Callable] = {}
# Ops the backend deliberately does not lower: programs using them run eagerly (with a warning).
UNSUPPORTED = {
    "randn": "a random op: its draws must come from mytorch's generator, in order",
    "rand": "a random op: its draws must come from mytorch's generator, in order",
    "dropout_mask": "a random op: its draws must come from mytorch's generator, in order",
}


@dataclass(frozen=True)
class Scaled:
    """A kernel whose code serves every size of one dimension: the named dims of its views
    (view position, dim) have size `count * unit`, and `count` is passed at run time (a loop's
    steps, a product's groups of rows or of k steps). The kernel sees those dims as `unit`
    long and reads the count as `ctx.count`; `plan` holds what its code decides from the count."""

    count: int
    unit: int
    dims: tuple[tuple[int, int], ...]
    plan: tuple = ()


# op -> fn(node, views) -> Scaled | None: the ops whose kernels can take a size at run time
SCALED: dict[str, Callable] = {}


def scaled(op: str):
    def add(fn):
        SCALED[op] = fn
        return fn

    return add


def view_lowering(op: str):
    def add(fn):
        VIEWS[op] = fn
        return fn

    return add


def lowering(*ops: str):
    def add(fn):
        for op in ops:
            KERNELS[op] = fn
        return fn

    return add


# ---- views -----------------------------------------------------------------------------------


@view_lowering("transpose")
def _transpose(ctx, node, x: View):
    order = list(range(len(x.shape)))
    d0, d1 = node.params["d0"], node.params["d1"]
    order[d0], order[d1] = order[d1], order[d0]
    return x.transpose(order)


@view_lowering("permute")
def _permute(ctx, node, x: View):
    return x.transpose(node.params["dims"])


@view_lowering("broadcast_to")
def _broadcast_to(ctx, node, x: View):
    return x.broadcast_to(node.shape)


@view_lowering("reshape")
def _reshape(ctx, node, x: View):
    return x.reshape(node.shape)


@view_lowering("getitem")
def _getitem_view(ctx, node, x: View):
    """Ints, slices and None are a view; integer arrays need a gather (returns None)."""
    index = node.params["index"]
    if any(isinstance(i, IntArray) for i in index):
        return None
    if Ellipsis in index:
        k = index.index(Ellipsis)
        real = sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:k] + (Slice(None, None, None),) * (len(x.shape) - real) + index[k + 1 :]
    offset, shape, strides, dim = 0, [], [], 0
    for item in index:
        if item is None:
            shape.append(1)
            strides.append(0)
            continue
        n, s = x.shape[dim], x.strides[dim]
        if isinstance(item, int):
            offset += (item % n) * s
        else:
            start, _, step = slice(item.start, item.stop, item.step).indices(n)
            offset += start * s
            shape.append(len(range(*slice(item.start, item.stop, item.step).indices(n))))
            strides.append(s * step)
        dim += 1
    shape += x.shape[dim:]
    strides += x.strides[dim:]
    b = ctx.k.builder
    new_offset = b.add(x.offset, ir.Constant(I64, offset)) if offset else x.offset
    return View(x.ptr, new_offset, tuple(shape), tuple(strides), x.dtype, x.param)


# ---- elementwise -----------------------------------------------------------------------------


def _is_float(ty) -> bool:
    return isinstance(ty, (ir.FloatType, ir.DoubleType))


_APPROXIMATIONS = {
    "exp": mathfns.exp,
    "log": mathfns.log,
    "tanh": mathfns.tanh,
    "sigmoid": mathfns.sigmoid,
}


def emit_math(b: ir.IRBuilder, module: ir.Module, op: str, x: ir.Value) -> ir.Value:
    """exp, log, tanh, sigmoid (vectorizable approximations) or sqrt (an instruction) of x."""
    if op in _APPROXIMATIONS:
        return _APPROXIMATIONS[op](b, x)
    return b.call(intrinsic(module, f"llvm.{op}", x.type), [x])


def _intrinsic(ctx, name: str, value: ir.Value, *more: ir.Value) -> ir.Value:
    return ctx.k.builder.call(
        intrinsic(ctx.module, name, value.type, 1 + len(more)), [value, *more]
    )


def _bool(b: ir.IRBuilder, flag: ir.Value) -> ir.Value:
    return b.zext(flag, I8)


def _truth(b: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """An i1 from a stored value (bool bytes, ints or floats)."""
    if _is_float(value.type):
        return b.fcmp_unordered("!=", value, ir.Constant(value.type, 0.0))
    return b.icmp_unsigned("!=", value, ir.Constant(value.type, 0))


def _convert(b: ir.IRBuilder, value: ir.Value, src: np.dtype, dst: np.dtype) -> ir.Value:
    """numpy's astype between float32/float64/int32/int64/bool."""
    src, dst = np.dtype(src), np.dtype(dst)
    to = llvm_type(dst)
    if src == dst:
        return value
    if dst.kind == "b":
        return _bool(b, _truth(b, value))
    if src.kind == "f" and dst.kind == "f":
        return b.fpext(value, to) if dst.itemsize > src.itemsize else b.fptrunc(value, to)
    if src.kind == "f":
        return b.fptosi(value, to)
    if dst.kind == "f":
        return b.uitofp(value, to) if src.kind == "b" else b.sitofp(value, to)
    if src.kind == "b":
        return b.zext(value, to)
    return b.sext(value, to) if dst.itemsize > src.itemsize else b.trunc(value, to)


_FCMP = {"eq": "==", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _scalar(ctx, op: str, dtype: np.dtype, args: list[ir.Value], params) -> ir.Value:
    """One element of an elementwise op, all operands already converted to `dtype`."""
    b = ctx.k.builder
    is_f = dtype.kind == "f"
    zero = ir.Constant(llvm_type(dtype), 0.0 if is_f else 0)
    if op == "add":
        return b.fadd(*args) if is_f else b.add(*args)
    if op == "sub":
        return b.fsub(*args) if is_f else b.sub(*args)
    if op == "mul":
        return b.fmul(*args) if is_f else b.mul(*args)
    if op == "div":  # true division: the shape rule makes integer operands compute in float
        return b.fdiv(*args)
    if op == "pow":
        if not is_f:  # integer powers through double: exact while results stay below 2**53
            as_f = [b.sitofp(v, ir.DoubleType()) for v in args]
            return b.fptosi(_intrinsic(ctx, "llvm.pow", *as_f), args[0].type)
        return _intrinsic(ctx, "llvm.pow", *args)
    if op == "neg":
        return b.fneg(args[0]) if is_f else b.sub(zero, args[0])
    if op == "abs":
        if is_f:
            return _intrinsic(ctx, "llvm.fabs", args[0])
        return b.select(b.icmp_signed("<", args[0], zero), b.sub(zero, args[0]), args[0])
    if op in ("exp", "log", "tanh", "sigmoid", "sqrt"):
        return ctx.math(op, args[0])
    if op == "relu":
        neg = b.fcmp_ordered("<", args[0], zero) if is_f else b.icmp_signed("<", args[0], zero)
        return b.select(neg, zero, args[0])  # NaN stays NaN, as np.maximum(x, 0)
    if op == "clamp":
        x = args[0]
        for bound, cmp in ((params.get("min"), "<"), (params.get("max"), ">")):
            if bound is not None:
                c = ctx.k.constant(bound, dtype)
                out_of_range = b.fcmp_ordered(cmp, x, c) if is_f else b.icmp_signed(cmp, x, c)
                x = b.select(out_of_range, c, x)
        return x
    if op in _FCMP:
        flag = b.fcmp_ordered(_FCMP[op], *args) if is_f else b.icmp_signed(_FCMP[op], *args)
        return _bool(b, flag)
    if op == "ne":
        flag = b.fcmp_unordered("!=", *args) if is_f else b.icmp_signed("!=", *args)
        return _bool(b, flag)
    raise AssertionError(f"no scalar lowering for {op}")


_ELEMENTWISE = (
    "add sub mul div pow neg abs exp log tanh sigmoid sqrt relu clamp eq ne lt le gt ge"
).split()


@lowering(*_ELEMENTWISE)
def _elementwise(ctx, node, out: View, *args: View):
    k, b = ctx.k, ctx.k.builder
    is_compare = node.op in ("eq", "ne", "lt", "le", "gt", "ge")
    compute = np.result_type(*(a.dtype for a in args)) if is_compare else node.dtype
    views = [a.broadcast_to(out.shape) for a in args]

    def body(idx):
        vals = [_convert(b, k.load(v, idx), v.dtype, compute) for v in views]
        k.store(_scalar(ctx, node.op, np.dtype(compute), vals, node.params), out, idx)

    k.loop_nest(out.shape, body, "e")


# Float ops computed one element at a time from same-index elements: a chain of them runs as one
# loop (see `fused_elementwise`).
FUSABLE = frozenset(_ELEMENTWISE) - {"eq", "ne", "lt", "le", "gt", "ge"}


def fused_elementwise(ctx, node, out: View, *leaves: View, tree):
    """out = node's value: a tree of elementwise ops in one loop, the inner ops' values never
    stored. `tree` is (node, children), each child a subtree or the int position of a leaf view in
    `leaves` (already seen with out's shape)."""
    k, b = ctx.k, ctx.k.builder

    def value(tree, idx):
        node, children = tree
        vals = []
        for child in children:
            if isinstance(child, int):
                v, dtype = k.load(leaves[child], idx), leaves[child].dtype
            else:
                v, dtype = value(child, idx), child[0].dtype
            vals.append(_convert(b, v, dtype, node.dtype))
        return _scalar(ctx, node.op, np.dtype(node.dtype), vals, node.params)

    k.loop_nest(out.shape, lambda idx: k.store(value(tree, idx), out, idx), "f")


@lowering("where")
def _where(ctx, node, out: View, cond: View, a: View, x: View):
    k, b = ctx.k, ctx.k.builder
    views = [v.broadcast_to(out.shape) for v in (cond, a, x)]

    def body(idx):
        c, va, vb = (k.load(v, idx) for v in views)
        va = _convert(b, va, views[1].dtype, node.dtype)
        vb = _convert(b, vb, views[2].dtype, node.dtype)
        k.store(b.select(_truth(b, c), va, vb), out, idx)

    k.loop_nest(out.shape, body, "w")


@lowering("cast")
def _cast(ctx, node, out: View, x: View):
    k, b = ctx.k, ctx.k.builder
    k.loop_nest(
        out.shape, lambda idx: k.store(_convert(b, k.load(x, idx), x.dtype, out.dtype), out, idx)
    )


# ---- reductions ------------------------------------------------------------------------------


def _reduce_dims(node, ndim: int) -> tuple[int, ...]:
    dim = node.params.get("dim")
    return tuple(range(ndim)) if dim is None else tuple(dim)


def _out_index(idx, dims, keepdim: bool):
    """The output index of input index `idx` after reducing `dims`."""
    zero = ir.Constant(I64, 0)
    return [zero if d in dims else i for d, i in enumerate(idx) if keepdim or d not in dims]


def _accumulator(ctx, out: View) -> View:
    """Where to sum into: float32 sums accumulate in float64 (a float32 running sum of a million
    terms loses about two digits; numpy sums pairwise), other dtypes in place."""
    if out.dtype != np.dtype(np.float32):
        return out
    return ctx.scratch(out.shape, np.float64)


def _finish_sum(ctx, acc: View, out: View, divisor: int = 1) -> None:
    k, b = ctx.k, ctx.k.builder

    def store(idx):
        v = k.load(acc, idx)
        if divisor != 1:
            v = b.fdiv(v, k.constant(divisor, acc.dtype))
        k.store(_convert(b, v, acc.dtype, out.dtype), out, idx)

    if acc is not out or divisor != 1:
        k.loop_nest(out.shape, store)


@lowering("sum", "mean")
def _sum(ctx, node, out: View, x: View):
    k, b = ctx.k, ctx.k.builder
    dims, keep = _reduce_dims(node, len(x.shape)), node.params.get("keepdim", False)
    acc = _accumulator(ctx, out)
    gemm.fill(k, acc, k.constant(0, acc.dtype))
    is_f = out.dtype.kind == "f"

    def body(idx):
        o = _out_index(idx, dims, keep)
        v = _convert(b, k.load(x, idx), x.dtype, acc.dtype)
        total = k.load(acc, o)
        k.store(b.fadd(total, v) if is_f else b.add(total, v), acc, o)

    k.loop_nest(x.shape, body, "r")
    count = int(np.prod([x.shape[d] for d in dims], dtype=np.int64))
    _finish_sum(ctx, acc, out, count if node.op == "mean" else 1)


@lowering("sum_to")
def _sum_to(ctx, node, out: View, x: View):
    """Sum a broadcast value back down to `shape` (the gradient of broadcasting)."""
    k, b = ctx.k, ctx.k.builder
    acc = _accumulator(ctx, out)
    gemm.fill(k, acc, k.constant(0, acc.dtype))
    lead = len(x.shape) - len(out.shape)
    zero = ir.Constant(I64, 0)

    def body(idx):
        o = [zero if out.shape[d] == 1 else idx[lead + d] for d in range(len(out.shape))]
        v = _convert(b, k.load(x, idx), x.dtype, acc.dtype)
        k.store(b.fadd(k.load(acc, o), v), acc, o)

    if ctx.count is not None:  # the leading dim's size at run time (`_sum_to_scaled`)
        k.loop(ctx.count, lambda t: k.loop_nest(x.shape[1:], lambda idx: body([t, *idx]), "r"))
    else:
        k.loop_nest(x.shape, body, "r")
    _finish_sum(ctx, acc, out)


@scaled("sum_to")
def _sum_to_scaled(node, views):
    """A sum over a leading dim (a bias gradient over time steps) takes its size at run time."""
    out, x = views
    if len(x.shape) > len(out.shape) and x.shape[0] > 0:
        return Scaled(x.shape[0], 1, ((1, 0),))
    return None


@lowering("max", "min", "argmax", "argmin")
def _extremum(ctx, node, out: View, x: View):
    """Running max/min (NaN wins, like numpy); arg variants keep the first index reaching it."""
    k, b = ctx.k, ctx.k.builder
    dims, keep = _reduce_dims(node, len(x.shape)), node.params.get("keepdim", False)
    want_index = node.op.startswith("arg")
    cmp = ">" if node.op in ("max", "argmax") else "<"
    is_f = x.dtype.kind == "f"
    # The running value lives in scratch for arg ops (their output holds the index).
    best = ctx.scratch(out.shape, x.dtype) if want_index else out
    inner_shape = [x.shape[d] for d in dims]
    outer_shape = [n for d, n in enumerate(x.shape) if d not in dims]

    def outer(o_idx):
        full = dict(zip([d for d in range(len(x.shape)) if d not in dims], o_idx, strict=True))
        zero = ir.Constant(I64, 0)
        o = [zero if d in dims else full[d] for d in range(len(x.shape)) if keep or d not in dims]
        first = [full.get(d, zero) for d in range(len(x.shape))]
        k.store(k.load(x, first), best, o)
        if want_index:
            k.store(ir.Constant(I64, 0), out, o)

        def inner(r_idx):
            pos = dict(zip(dims, r_idx, strict=True))
            idx = [full[d] if d in full else pos[d] for d in range(len(x.shape))]
            v, cur = k.load(x, idx), k.load(best, o)
            if is_f:
                better = b.fcmp_ordered(cmp, v, cur)
                nan_new = b.and_(b.fcmp_unordered("!=", v, v), b.fcmp_ordered("==", cur, cur))
                better = b.or_(better, nan_new)
            else:
                better = b.icmp_signed(cmp, v, cur)
            k.store(b.select(better, v, cur), best, o)
            if want_index:
                flat = ir.Constant(I64, 0)
                for d, size in zip(dims, inner_shape, strict=True):
                    flat = b.add(b.mul(flat, ir.Constant(I64, size)), pos[d])
                k.store(b.select(better, flat, k.load(out, o)), out, o)

        k.loop_nest(inner_shape, inner, "x")

    k.loop_nest(outer_shape, outer, "o")


# ---- softmax ---------------------------------------------------------------------------------


@lowering("softmax", "log_softmax")
def _softmax(ctx, node, out: View, x: View):
    k, b = ctx.k, ctx.k.builder
    dim = node.params["dim"]
    n = x.shape[dim]
    outer_shape = x.shape[:dim] + x.shape[dim + 1 :]
    acc = ctx.scratch((2,), x.dtype)  # running max, then the sum of exponentials
    zero = ir.Constant(I64, 0)
    one = ir.Constant(I64, 1)

    def outer(o_idx):
        def at(i):
            return list(o_idx[:dim]) + [i] + list(o_idx[dim:])

        k.store(k.load(x, at(zero)), acc, [zero])

        def find_max(i):
            v, m = k.load(x, at(i)), k.load(acc, [zero])
            bigger = b.or_(b.fcmp_ordered(">", v, m), b.fcmp_unordered("!=", v, v))
            k.store(b.select(bigger, v, m), acc, [zero])

        k.loop(n, find_max, "sm")
        k.store(k.constant(0, x.dtype), acc, [one])

        def exp_sum(i):
            e = ctx.math("exp", b.fsub(k.load(x, at(i)), k.load(acc, [zero])))
            if node.op == "softmax":
                k.store(e, out, at(i))
            k.store(b.fadd(k.load(acc, [one]), e), acc, [one])

        k.loop(n, exp_sum, "se")
        if node.op == "softmax":
            total = k.load(acc, [one])
            k.loop(n, lambda i: k.store(b.fdiv(k.load(out, at(i)), total), out, at(i)), "sd")
        else:
            log_total = ctx.math("log", k.load(acc, [one]))
            m = k.load(acc, [zero])

            def write(i):
                k.store(b.fsub(b.fsub(k.load(x, at(i)), m), log_total), out, at(i))

            k.loop(n, write, "sl")

    k.loop_nest(outer_shape, outer, "so")


# ---- data movement ---------------------------------------------------------------------------


@lowering("cat", "stack")
def _cat(ctx, node, out: View, *xs: View):
    for x, dst in zip(xs, cat_slices(ctx, node, out), strict=True):
        convert_copy(ctx, x, dst)


def cat_slices(ctx, node, out: View) -> list[View]:
    """Where each input of a cat or stack goes in its value `out`."""
    dim = node.params["dim"]
    start = 0
    slices = []
    for x in node.inputs:
        if node.op == "stack":
            slices.append(ctx.k.offset_view(out, dim, ir.Constant(I64, start)))
            start += 1
        else:
            n = x.shape[dim]
            step = ctx.k.builder.mul(ir.Constant(I64, start), ir.Constant(I64, out.strides[dim]))
            shape = out.shape[:dim] + (n,) + out.shape[dim + 1 :]
            offset = ctx.k.builder.add(out.offset, step)
            slices.append(View(out.ptr, offset, shape, out.strides, out.dtype))
            start += n
    return slices


def convert_copy(ctx, src: View, dst: View) -> None:
    """dst[...] = src[...], broadcasting src and converting its dtype as numpy does (a cat of
    float32 and float64)."""
    if src.shape != dst.shape:
        src = src.broadcast_to(dst.shape)
    if src.dtype == dst.dtype:
        gemm.copy(ctx.k, src, dst)
        return
    k, b = ctx.k, ctx.k.builder
    k.loop_nest(
        dst.shape, lambda i: k.store(_convert(b, k.load(src, i), src.dtype, dst.dtype), dst, i)
    )


def _gather_table(shape, index) -> np.ndarray:
    """For every output element of x[index], the flat C-order position it reads in x."""
    return np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)[
        decode_index(index)
    ]


def _flat_to_view(ctx, view: View, flat: ir.Value) -> ir.Value:
    """Address of the element at C-order position `flat` of `view`."""
    b = ctx.k.builder
    idx = []
    for size in reversed(view.shape):
        idx.append(b.srem(flat, ir.Constant(I64, size)))
        flat = b.sdiv(flat, ir.Constant(I64, size))
    return ctx.k.address(view, list(reversed(idx)))


@lowering("getitem")
def _gather(ctx, node, out: View, x: View):
    """Integer-array indexing: a compile-time table of source positions (shapes are static)."""
    table = ctx.k.global_array(_gather_table(x.shape, node.params["index"]).ravel(), "gather")
    flat_out = View(out.ptr, out.offset, (out.size,), (1,), out.dtype)
    k, b = ctx.k, ctx.k.builder

    def body(i):
        src = _flat_to_view(ctx, x, k.load(table, [i]))
        dst = _flat_to_view(ctx, out, i) if not out.is_contiguous else k.address(flat_out, [i])
        b.store(b.load(src, typ=llvm_type(x.dtype)), dst)

    k.loop(out.size, body, "g")


def copy_kernel(ctx, node, out: View, src: View):
    """out = src (a kernel of its own: `basic_getitem_grad`'s copy)."""
    convert_copy(ctx, src, out)


def is_basic_index(index) -> bool:
    return not any(isinstance(i, IntArray) for i in index)


@lowering("getitem_grad")
def _scatter(ctx, node, out: View, g: View):
    """Integer-array indexing's gradient (`GraphLowering` lowers basic indexing's as a copy into
    a zeroed value): a compile-time table of destinations, adding (indices may repeat)."""
    k, b = ctx.k, ctx.k.builder
    gemm.fill(k, out, k.constant(0, out.dtype))
    table = k.global_array(_gather_table(node.shape, node.params["index"]).ravel(), "scatter")

    def body(i):
        dst = _flat_to_view(ctx, out, k.load(table, [i]))
        src = _flat_to_view(ctx, g, i)
        ty = llvm_type(out.dtype)
        b.store(b.fadd(b.load(dst, typ=ty), b.load(src, typ=ty)), dst)

    k.loop(int(np.prod(g.shape, dtype=np.int64)), body, "s")


def _checked_index(ctx, idx_view: View, i_idx, n: int, what: str) -> ir.Value:
    """Load an index; out of [0, n) sets the error status and reads row 0 instead."""
    b = ctx.k.builder
    raw = _convert(b, ctx.k.load(idx_view, i_idx), idx_view.dtype, np.dtype(np.int64))
    bad = b.or_(
        b.icmp_signed("<", raw, ir.Constant(I64, 0)), b.icmp_signed(">=", raw, ir.Constant(I64, n))
    )
    ctx.flag_error(bad, f"{what}: an index is out of range for {n} entries")
    return b.select(bad, ir.Constant(I64, 0), raw)


@lowering("embedding")
def _embedding(ctx, node, out: View, weight: View, indices: View):
    k = ctx.k
    num, width = weight.shape
    # Rows read whole: a table seen transposed (a weight's columns, W.T's rows, as a one-hot
    # product's lookup reads them) is copied once, not read a cache line per element.
    weight = ctx.contiguous(weight)

    def body(idx):
        row = _checked_index(ctx, indices, idx, num, "embedding")
        k.loop(width, lambda j: k.store(k.load(weight, [row, j]), out, list(idx) + [j]), "d")

    _each_index(ctx, indices, body)


@lowering("embedding_grad")
def _embedding_grad(ctx, node, out: View, g: View, indices: View):
    k, b = ctx.k, ctx.k.builder
    num, width = out.shape
    gemm.fill(k, out, k.constant(0, out.dtype))

    def body(idx):
        row = _checked_index(ctx, indices, idx, num, "embedding_grad")

        def add(j):
            k.store(b.fadd(k.load(out, [row, j]), k.load(g, list(idx) + [j])), out, [row, j])

        k.loop(width, add, "d")

    _each_index(ctx, indices, body)


def _each_index(ctx, indices: View, body) -> None:
    """body(idx) at every position of `indices`: its leading dim's size given at run time in a
    scaled kernel (`_indices_scaled`)."""
    k = ctx.k
    if ctx.count is not None:
        rest = indices.shape[1:]
        k.loop(ctx.count, lambda t: k.loop_nest(rest, lambda idx: body([t, *idx]), "i"), "t")
    else:
        k.loop_nest(indices.shape, body, "t")


@scaled("embedding")
@scaled("embedding_grad")
def _indices_scaled(node, views):
    """A lookup or its gradient over steps of indices (a sequence's letters, T x batch) takes
    the number of steps at run time: one kernel serves every sequence length."""
    rows = 0 if node.op == "embedding" else 1  # the view with a row per index: out, or g
    indices = views[2]
    if not indices.shape or indices.shape[0] == 0:
        return None
    return Scaled(indices.shape[0], 1, ((rows, 0), (2, 0)))


@lowering("one_hot")
def _one_hot(ctx, node, out: View, indices: View):
    k, b = ctx.k, ctx.k.builder
    classes = node.params["num_classes"]
    one, zero = k.constant(1, out.dtype), k.constant(0, out.dtype)

    def body(idx):
        hot = _checked_index(ctx, indices, idx, classes, "one_hot")
        k.loop(
            classes,
            lambda c: k.store(b.select(b.icmp_signed("==", c, hot), one, zero), out, idx + [c]),
            "c",
        )

    k.loop_nest(indices.shape, body, "t")


# ---- products and recurrent cells ------------------------------------------------------------


@lowering("matmul")
def _matmul(ctx, node, out: View, a: View, bmat: View, bias: View | None = None):
    """out = a @ b (+ bias, broadcast over rows: a following `add` fused in by the lowering)."""
    a = _promote(ctx, a, out.dtype)
    bmat = _promote(ctx, bmat, out.dtype)
    # 1-D operands become a row (a) or a column (b) matrix.
    a2 = a
    if len(a.shape) == 1:
        a2 = View(a.ptr, a.offset, (1,) + a.shape, (0,) + a.strides, a.dtype)
    b2 = bmat
    if len(bmat.shape) == 1:
        b2 = View(bmat.ptr, bmat.offset, bmat.shape + (1,), bmat.strides + (1,), bmat.dtype)
    if ctx.count is not None and len(out.shape) == 3:  # (n, M, K) @ (K, N): see `_matmul_scaled`
        _row_groups(ctx, out, a, bmat, bias)
        return
    chunks = None if ctx.count is None else (ctx.count, ctx.scaled.unit)
    if not out.is_contiguous:  # a 2-D product placed into a cat's value or an output's
        assert bias is None and len(out.shape) == len(a.shape) == len(bmat.shape) == 2
        if out.strides[1] != 1:  # into a transposed view: out.T = b.T @ a.T
            a, bmat, out = bmat.transpose((1, 0)), a.transpose((1, 0)), out.transpose((1, 0))
        _product(ctx, a, bmat, out, init=_zeros(ctx, out), chunks=chunks)
        return
    m, n = a2.shape[-2], b2.shape[-1]
    batch = tuple(out.shape[: len(out.shape) - (len(a.shape) > 1) - (len(bmat.shape) > 1)])
    out2 = View(out.ptr, out.offset, batch + (m, n), contiguous_strides(batch + (m, n)), out.dtype)
    a3 = a2.broadcast_to(batch + a2.shape[-2:])
    b3 = b2.broadcast_to(batch + b2.shape[-2:])
    if bias is None:
        bias = _zeros(ctx, out2)
    start = _promote(ctx, bias, out.dtype).broadcast_to(out2.shape)
    rows = _merge_rows(a3)
    if len(b2.shape) == 2 and rows is not None and _merge_rows(start) is not None:
        # (T, B, K) @ (K, N): one (T*B, K) product
        flat_out = View(out.ptr, out.offset, (rows.shape[0], n), (n, 1), out.dtype)
        _product(ctx, rows, b2, flat_out, init=_merge_rows(start), chunks=chunks)
        return
    assert chunks is None
    gemm.batched(
        ctx.k,
        batch,
        [a3, b3, out2, start],
        lambda av, bv, cv, iv: _product(ctx, av, bv, cv, init=iv),
    )


# ---- elementwise work ending a product -------------------------------------------------------
#
# A 2-D product read only by a chain of elementwise ops (a backward step's (g + d @ W) * (1 - h*h))
# ends in them: the product's kernel applies the chain to each tile of its sums while they are in
# registers, reading the chain's other operands' tiles at the same rows and columns, and writes
# the chain's value. The product's value is never stored, nor read back by a pass of its own.

EPILOGUE_OPS = frozenset({"add", "sub", "mul", "div", "neg"})  # one instruction, on vectors too
PRODUCT = "product"  # the product's place among an epilogue tree's leaves


def product_epilogues(graph, inlined: set, computed: set) -> dict:
    """root -> product: the elementwise ops that end a 2-D float matmul in its kernel. `root` is
    the op whose `fused_elementwise` tree (its `inlined` inputs, transitively) reads the product,
    its only user; every op of the tree is in EPILOGUE_OPS with the product's type, its operands
    of the product's dtype (no conversions). Products and ops in `computed` are computed with
    other nodes already (a bias add, a product placed into its consumer)."""
    outputs = set(graph.outputs)
    ends = {}
    for mm in graph.nodes:
        if (
            mm.op != "matmul"
            or mm in computed
            or mm in outputs
            or len(mm.users) != 1
            or mm.dtype.kind != "f"
            or len(mm.shape) != 2
            or any(len(i.shape) != 2 or i.dtype != mm.dtype for i in mm.inputs)
        ):
            continue
        root = mm.users[0]
        while root in inlined and root.op != "reshape" and len(root.users) == 1:
            root = root.users[0]
        if root in inlined or root in computed or root in ends:
            continue
        if _epilogue_fits(root, mm.type, inlined):
            ends[root] = mm
    return ends


def _epilogue_fits(node, type_, inlined) -> bool:
    """Whether `node` and its inlined inputs compute in `type_`, from operands of its dtype."""
    if node.op not in EPILOGUE_OPS or node.type != type_:
        return False
    return all(
        _epilogue_fits(i, type_, inlined) if i in inlined else i.dtype == type_.dtype
        for i in node.inputs
    )


def epilogue_tree(node, product, env, inlined, leaves: list):
    """`product_with_epilogue`'s tree for root `node`: (node, children), each child a subtree, an
    int position in `leaves` (appended here, as views of node's shape) or PRODUCT."""
    children = []
    for i in node.inputs:
        if i is product:
            children.append(PRODUCT)
        elif i in inlined:
            children.append(epilogue_tree(i, product, env, inlined, leaves))
        else:
            children.append(len(leaves))
            leaves.append(env[i].broadcast_to(node.shape))
    return (node, children)


def product_with_epilogue(ctx, node, out: View, a: View, b: View, *leaves: View, tree):
    """out = tree's value (`epilogue_tree`) with the product a @ b (`node`) as PRODUCT."""

    def value(tree, product, loaded):
        op, children = tree
        args = [
            product
            if child == PRODUCT
            else loaded[child]
            if isinstance(child, int)
            else value(child, product, loaded)
            for child in children
        ]
        return _scalar(ctx, op.op, np.dtype(op.dtype), args, op.params)

    if out.strides[1] != 1:  # out.T = b.T @ a.T, the operands' tiles transposed alike
        a, b, out = b.transpose((1, 0)), a.transpose((1, 0)), out.transpose((1, 0))
        leaves = tuple(v.transpose((1, 0)) for v in leaves)
    epilogue = gemm.Epilogue(tuple(leaves), lambda acc, loaded: value(tree, acc, loaded))
    _product(ctx, a, b, out, init=_zeros(ctx, out), epilogue=epilogue)


# Products share one kernel for every multiple of these: rows of A per group (a batch of at least
# this many rows); k steps per chunk (the largest power of two up to CHUNK_STEPS dividing the
# depth, at least MIN_CHUNK_STEPS: a depth of T * batch gives one chunk size for every T when
# CHUNK_STEPS divides the batch, a few otherwise).
GROUP_MIN_ROWS = 16
CHUNK_STEPS = 64
MIN_CHUNK_STEPS = 16


@scaled("matmul")
def _matmul_scaled(node, views):
    """Products whose size grows with a sequence's length take it at run time: (n, M, K) @ (K, N)
    (an input projection over time steps) as n products of M rows, B prepared once; and a
    weight gradient A.T @ G whose k steps are n * CHUNK_STEPS, in chunks of k steps."""
    out, a, b = views[:3]
    if out.dtype.kind != "f" or any(v.dtype != out.dtype for v in views):
        return None
    if (
        len(out.shape) == len(a.shape) == 3
        and len(b.shape) == 2
        and out.is_contiguous
        and a.shape[1] >= GROUP_MIN_ROWS
        and a.strides[0] == a.strides[1] * a.shape[1]
        and all(len(v.shape) == 1 for v in views[3:])
    ):
        return Scaled(out.shape[0], 1, ((0, 0), (1, 0)))
    if len(out.shape) == len(a.shape) == len(b.shape) == 2 and len(views) == 3:
        depth = a.shape[1]
        unit = math.gcd(depth, CHUNK_STEPS)
        if a.strides[0] == 1 and b.strides[1] == 1 and depth and unit >= MIN_CHUNK_STEPS:
            return Scaled(depth // unit, unit, ((1, 1), (2, 0)))
    return None


def _row_groups(ctx, out: View, a: View, b: View, bias: View | None) -> None:
    """out[t] = a[t] @ b (+ bias) for t < ctx.count, b packed once before the groups."""
    k = ctx.k
    a0 = View(a.ptr, a.offset, a.shape[1:], a.strides[1:], a.dtype)
    _operands(ctx, a0, b, copy_a=False)  # the groups' products find the copy
    one = View(out.ptr, out.offset, out.shape[1:], out.strides[1:], out.dtype)
    start = _zeros(ctx, one) if bias is None else bias.broadcast_to(one.shape)

    def group(t):
        with ctx.scope():
            _product(ctx, k.offset_view(a, 0, t), b, k.offset_view(out, 0, t), init=start)

    k.loop(ctx.count, group, "g")


def _chunked(ctx, a: View, b: View, c: View, init, count, unit: int) -> None:
    """c = init + a @ b over count * unit k steps (count an i64 value; a and b seen with their k
    dim `unit` long): one product, its k blocks counted at run time (`gemm.accumulate_steps`)."""
    total = ctx.k.builder.mul(count, ir.Constant(I64, unit))
    gemm.accumulate_steps(ctx.k, a, b, c, init, total)


def _zeros(ctx, like: View) -> View:
    """Zeros of like's shape and dtype: one constant element seen everywhere. The products start
    their sums from it in registers, with no pass over C to clear it first."""
    zero = ctx.k.global_array(np.zeros(1, like.dtype), "zero")
    return View(zero.ptr, zero.offset, like.shape, (0,) * len(like.shape), like.dtype)


def _product(
    ctx, a: View, b: View, c: View, init=None, activation=None, chunks=None, epilogue=None
) -> None:
    """c = activation((init or c) + a @ b), over `chunks` (count, unit) of k steps if given;
    with a `gemm.Epilogue`, c = epilogue((init or c) + a @ b).
    A weight used as W.T (every `x @ W.T`) is read in place by the dot kernel or copied k-major
    for the axpy kernel, whichever costs less; the copy of a parameter is kept between calls.
    A plain B with many rows of A is copied into column panels."""
    if chunks is not None:
        assert activation is None and epilogue is None
        _chunked(ctx, a, b, c, init, *chunks)
        return
    if c.dtype.kind != "f":  # integer products: exact, in plain loops
        assert epilogue is None
        if init is not None:
            gemm.copy(ctx.k, init.broadcast_to(c.shape), c)
        gemm.scalar_kernel(ctx.k, a, b, c)
        return
    a, b = _operands(ctx, a, b)
    gemm.accumulate(ctx.k, a, b, c, init, activation, ctx.reverse_k, epilogue)


def _operands(ctx, a: View, b: View, copy_a: bool = True):
    """A and B as the product reads them (see `_product`); A as it is unless `copy_a`."""
    packed = ctx.existing_copy(b)  # e.g. a loop's weight, packed before its first step
    if packed is not None:
        return a, packed
    if gemm.prefers_packing(a.shape[0], b, kept=_keep(b)):
        return a, ctx.kept_transpose(b, a.shape[0]) if _keep(b) else ctx.contiguous(b)
    if b.strides[0] == 1:  # the dot form reads rows of A as vectors
        return ctx.contiguous(a) if copy_a else a, b
    if gemm.prefers_panels(a, b):  # a plain B (a backward's G @ W), copied once per call
        return a, ctx.panels(b, a.shape[0])
    return a, b


def _keep(b: View) -> bool:
    """Whether a k-major copy of b (a parameter's W.T) is worth keeping between calls."""
    return b.param is not None and len(b.shape) == 2 and b.strides[0] == 1


def _merge_rows(v: View) -> View | None:
    """A view of shape (..., M, K) as (prod(...) * M, K), when its strides allow it."""
    if len(v.shape) == 2:
        return v
    for d in range(len(v.shape) - 2):
        if v.strides[d] != v.strides[d + 1] * v.shape[d + 1]:
            return None
    rows = int(np.prod(v.shape[:-1], dtype=np.int64))
    return View(v.ptr, v.offset, (rows, v.shape[-1]), v.strides[-2:], v.dtype)


def _promote(ctx, v: View, dtype) -> View:
    if v.dtype == dtype:
        return v
    tmp = ctx.scratch(v.shape, dtype)
    k, b = ctx.k, ctx.k.builder
    k.loop_nest(v.shape, lambda idx: k.store(_convert(b, k.load(v, idx), v.dtype, dtype), tmp, idx))
    return tmp


def _activation(ctx, nonlinearity: str) -> gemm.Activation:
    """The cell's nonlinearity, emitted on values (scalars or vectors)."""

    def emit(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
        if nonlinearity == "tanh":
            return emit_math(b, b.module, "tanh", v)
        zero = ir.Constant(v.type, None)  # relu: NaN stays NaN, as np.maximum(x, 0)
        return b.select(b.fcmp_ordered("<", v, zero), zero, v)

    return gemm.Activation(nonlinearity, emit)


@lowering("rnn_cell")
def _rnn_cell(ctx, node, out: View, x, h, w_ih, w_hh, bias):
    """out = act(x @ w_ih.T + b + h @ w_hh.T): the bias starts the first product's sums and the
    nonlinearity ends the second's, both inside the product kernels."""
    _product(ctx, x, w_ih.transpose((1, 0)), out, init=bias)
    act = _activation(ctx, node.params["nonlinearity"])
    _product(ctx, h, w_hh.transpose((1, 0)), out, activation=act)


@lowering("rnn_step")
def _rnn_step(ctx, node, out: View, xw, h, w_hh):
    """out = act(xw + h @ w_hh.T), the input projection and the nonlinearity fused in."""
    act = _activation(ctx, node.params["nonlinearity"])
    _product(ctx, h, w_hh.transpose((1, 0)), out, init=xw, activation=act)


@lowering("loop")
def _loop(ctx, node, out: View, *args: View):
    """hs[t] = body(xs[t], h_{t-1}, *invariants): the body's code runs inside a native loop.

    With `sequences=k`, the first k inputs are all sliced at step t; with `reverse=True`, t runs
    from T-1 down to 0 and each step reads the state of step t+1. The number of steps may come
    at run time (`_loop_scaled`): one kernel then serves every sequence length.
    """
    k, b = ctx.k, ctx.k.builder
    sequences, reverse = node.params.get("sequences", 1), node.params.get("reverse", False)
    seqs, h0, invariants = args[:sequences], ctx.contiguous(args[sequences]), args[sequences + 1 :]
    if ctx.count is not None:
        steps, plan = ctx.count, ctx.scaled.plan
    else:
        steps = ir.Constant(I64, seqs[0].shape[0])
        plan = _loop_plan(node, args, seqs[0].shape[0])
    # The body (an rnn_step) uses its 2-D invariants as W.T: pack them here, before the loop,
    # where packing pays, so the body finds the copy instead of making one every step.
    rows = h0.shape[0] if h0.shape else 1
    for w, how in zip(invariants, plan, strict=True):
        if how == "panels":
            ctx.panels(w, rows)  # B of the body's products as it is (a reverse loop's W)
        elif how == "kept":
            ctx.kept_transpose(w.transpose((1, 0)), rows)
        elif how == "copy":
            ctx.contiguous(w.transpose((1, 0)))
    zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
    last = b.sub(steps, one)
    ty = llvm_type(h0.dtype)
    body = node.params["body"]

    def step(i):
        t = b.sub(last, i) if reverse else i
        first = b.icmp_signed("==", i, zero)
        before = b.add(t, one) if reverse else b.sub(t, one)
        prev = k.offset_view(out, 0, before)  # only dereferenced after the first step
        start = b.gep(h0.ptr, [h0.offset], inbounds=True, source_etype=ty)
        previous = b.gep(prev.ptr, [prev.offset], source_etype=ty)
        h = View(b.select(first, start, previous), zero, h0.shape, h0.strides, h0.dtype)
        outer_reverse = ctx.reverse_k
        # Odd steps run their products' k steps backwards: the weight rows read last by one
        # step are read first by the next, while still in L1.
        ctx.reverse_k = b.trunc(i, ir.IntType(1))
        try:
            with ctx.scope():
                ctx.lower_subgraph(
                    body,
                    [*(k.offset_view(s, 0, t) for s in seqs), h, *invariants],
                    [k.offset_view(out, 0, t)],
                )
        finally:
            ctx.reverse_k = outer_reverse

    k.loop(steps, step, "t")


def _loop_plan(node, args, steps: int) -> tuple:
    """How the loop prepares each invariant before its steps: 'panels' (a B its body's products
    read as it is), 'kept' (a parameter's W.T, kept between calls), 'copy' (W.T copied) or None."""
    sequences = node.params.get("sequences", 1)
    h0, invariants = args[sequences], args[sequences + 1 :]
    rows = h0.shape[0] if h0.shape else 1
    body = node.params["body"]
    plan = []
    for w, inp in zip(invariants, body.inputs[sequences + 1 :], strict=True):
        if len(w.shape) != 2:
            plan.append(None)
        elif (
            steps > 1
            and w.strides[1] == 1
            and any(
                u.op == "matmul" and u.inputs[1] is inp and u.inputs[0] is not inp
                for u in inp.users
            )
        ):
            plan.append("panels")
        elif not gemm.prefers_packing(
            rows, w.transpose((1, 0)), reuse=steps, kept=_keep(w.transpose((1, 0)))
        ):
            plan.append(None)
        else:
            plan.append("kept" if _keep(w.transpose((1, 0))) else "copy")
    return tuple(plan)


@scaled("loop")
def _loop_scaled(node, views):
    """A loop takes its number of steps at run time; the key keeps how it packs its weights."""
    sequences = node.params.get("sequences", 1)
    steps = views[0].shape[0]
    dims = tuple((v, 0) for v in range(sequences + 1))  # its value and its sequences
    return Scaled(steps, 1, dims, _loop_plan(node, views[1:], steps))
