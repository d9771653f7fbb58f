"""Hypothesis strategies for small random valid IR graphs, and matching random inputs.

Use them in any IR or pass test::

    from hypothesis import given
    from tests.graphs import graphs_with_inputs, random_graphs

    @given(random_graphs())
    def test_round_trip(graph):
        assert str(parse(str(graph))) == str(graph)

    @given(graphs_with_inputs())
    def test_pass_keeps_values(case):
        graph, arrays = case
        expected = run(graph, arrays)
        ...

What a drawn graph is like:
- it is built only through the public Graph API (`add_input`, `add_const`, `add_node`,
  `set_outputs`), every node's type comes from its op's own shape rule, so it passes `verify`;
- graph inputs (`x0`, `x1`, ...) come first, then parameters (`w0`, ...; parameters may also be
  added while ops are drawn, as broadcasting or matmul partners), then constants and op nodes;
- everything is float32; comparisons appear only as the condition of a `where`;
- 1 to 15 random ops (`min_ops`/`max_ops`) from a broad subset of the registry: elementwise binary
  ops with broadcasting (add, sub, mul, div, pow), unary ops (neg, exp, log, sqrt, tanh, sigmoid,
  relu, abs, clamp), reductions with dim/keepdim (sum, mean, max, min), matmul, reshape,
  transpose, permute, broadcast_to, cat, stack, getitem with ints and slices, softmax,
  log_softmax and where; `families=` restricts or extends the set (`ALL_FAMILIES` adds an
  impure `dropout` family: x * dropout_mask, which must be compared under one `manual_seed`);
- params are canonical, as eager mode records them (sorted dim tuples, non-negative dims);
- values stay finite and NaN-free for inputs in [-2, 2] (what `random_inputs` draws): log and
  sqrt see abs(x) + 1, div divides by abs(y) + 1, pow sees a base in (0.5, 1.5) and an exponent
  in [-1, 3], exp sees clamp(x, -5, 5), and a value whose magnitude bound exceeds 1e4 is squashed
  by tanh before anything reuses it;
- some op nodes may be dead (reach no output), so DCE has work to do; outputs are op nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from mytorch.ir import Graph, Node
from mytorch.ops import TensorType
from mytorch.ops.shape import encode_index

F32 = np.dtype(np.float32)
INPUT_RANGE = 2.0  # |x| <= INPUT_RANGE for every input, parameter and constant
SQUASH_ABOVE = 1e4  # values whose magnitude bound exceeds this are passed through tanh
GROW_LIMIT = 64  # ops that enlarge a value (cat, stack, matmul, broadcast_to) need numel <= this
MAX_RANK = 4

DEFAULT_FAMILIES = (
    "binary",
    "pow",
    "unary",
    "exp",
    "log",
    "sqrt",
    "clamp",
    "reduce",
    "matmul",
    "reshape",
    "transpose",
    "permute",
    "broadcast_to",
    "cat",
    "stack",
    "getitem",
    "softmax",
    "where",
)
ALL_FAMILIES = DEFAULT_FAMILIES + ("dropout",)


@dataclass
class _Value:
    """A pool entry: a graph value and an upper bound on the magnitude of its elements."""

    node: Node
    bound: float

    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.type.shape


class _Builder:
    """Draws ops onto a graph, keeping a pool of values that later ops may use."""

    def __init__(self, draw, graph: Graph):
        self.draw = draw
        self.graph = graph
        self.pool: list[_Value] = []
        self.op_nodes: list[Node] = []
        self.params = 0

    # ---- leaves ----------------------------------------------------------------------------------

    def leaf(self, shape: tuple[int, ...]) -> _Value:
        """A new parameter input or constant of `shape`, added to the pool."""
        if self.draw(st.booleans()):
            node = self.graph.add_input(f"w{self.params}", TensorType(shape, F32), param=True)
            self.params += 1
        else:
            node = self.graph.add_const(self.const_array(shape))
        value = _Value(node, INPUT_RANGE)
        self.pool.append(value)
        return value

    def const_array(self, shape: tuple[int, ...]) -> np.ndarray:
        # A constant is either one repeated value (printed as fill=...) or random values.
        if self.draw(st.booleans()):
            fill = self.draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0]))
            return np.full(shape, fill, F32)
        seed = self.draw(st.integers(0, 2**16))
        rng = np.random.default_rng(seed)
        return rng.uniform(-INPUT_RANGE, INPUT_RANGE, shape).astype(F32)

    def scalar_const(self, value: float) -> Node:
        return self.graph.add_const(np.array(value, F32))

    # ---- choosing operands -------------------------------------------------------------------

    def pick(self, accept=lambda v: True) -> _Value | None:
        candidates = [v for v in self.pool if accept(v)]
        return self.draw(st.sampled_from(candidates)) if candidates else None

    def partner(self, x: _Value, accept, make_shape) -> _Value:
        """An operand that fits `x`: from the pool, or a new leaf of a drawn shape."""
        found = self.pick(accept)
        if found is None or self.draw(st.booleans()):
            return self.leaf(make_shape())
        return found

    def broadcast_partner(self, x: _Value) -> _Value:
        def shape():
            dims = list(x.shape)
            keep = self.draw(st.integers(0, len(dims)))  # drop leading dims
            dims = dims[len(dims) - keep :]
            return tuple(1 if self.draw(st.booleans()) else d for d in dims)

        return self.partner(x, lambda v: _broadcastable(v.shape, x.shape), shape)

    # ---- adding nodes ---------------------------------------------------------------------------

    def node(self, op: str, inputs, **params) -> Node:
        return self.graph.add_node(
            op, [i.node if isinstance(i, _Value) else i for i in inputs], params
        )

    def push(self, node: Node, bound: float) -> None:
        if not math.isfinite(bound) or bound > SQUASH_ABOVE:
            node, bound = self.node("tanh", [node]), 1.0
        self.op_nodes.append(node)
        self.pool.append(_Value(node, bound))

    def shifted_abs(self, x: _Value) -> Node:
        """abs(x) + 1: at least 1, so log, sqrt and division are safe."""
        return self.node("add", [self.node("abs", [x]), self.scalar_const(1.0)])


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """True when `a` broadcasts to exactly `b`."""
    if len(a) > len(b):
        return False
    return all(m in (1, n) for m, n in zip(a[::-1], b[::-1], strict=False))


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


# ---- one builder per op family; each returns False when it does not apply to x ------------------


def _binary(b: _Builder, x: _Value) -> bool:
    op = b.draw(st.sampled_from(["add", "sub", "mul", "div"]))
    y = b.broadcast_partner(x)
    left, right = (x, y) if b.draw(st.booleans()) else (y, x)
    if op == "div":
        b.push(b.node("div", [left, b.shifted_abs(right)]), left.bound)
    elif op == "mul":
        b.push(b.node("mul", [left, right]), left.bound * right.bound)
    else:
        b.push(b.node(op, [left, right]), left.bound + right.bound)
    return True


def _pow(b: _Builder, x: _Value) -> bool:
    base = b.node("add", [b.node("sigmoid", [x]), b.scalar_const(0.5)])  # in (0.5, 1.5)
    if b.draw(st.booleans()):
        exponent = b.scalar_const(b.draw(st.sampled_from([2.0, 3.0, 0.5, -1.0])))
    else:
        exponent = b.node("tanh", [b.broadcast_partner(x)])  # in (-1, 1), broadcast
    b.push(b.node("pow", [base, exponent]), 1.5**3)
    return True


def _unary(b: _Builder, x: _Value) -> bool:
    op = b.draw(st.sampled_from(["neg", "tanh", "sigmoid", "relu", "abs"]))
    b.push(b.node(op, [x]), 1.0 if op in ("tanh", "sigmoid") else x.bound)
    return True


def _exp(b: _Builder, x: _Value) -> bool:
    clamped = b.node("clamp", [x], min=-5.0, max=5.0)
    b.push(b.node("exp", [clamped]), math.exp(5.0))
    return True


def _log(b: _Builder, x: _Value) -> bool:
    b.push(b.node("log", [b.shifted_abs(x)]), math.log1p(x.bound))
    return True


def _sqrt(b: _Builder, x: _Value) -> bool:
    b.push(b.node("sqrt", [b.shifted_abs(x)]), math.sqrt(1.0 + x.bound))
    return True


def _clamp(b: _Builder, x: _Value) -> bool:
    lo = b.draw(st.sampled_from([None, -1.0, -0.5, 0.0]))
    hi = b.draw(st.sampled_from([None, 1.0, 0.5] if lo is not None else [1.0, 0.5, 0.0]))
    b.push(b.node("clamp", [x], min=lo, max=hi), x.bound)
    return True


def _dims(b: _Builder, rank: int, single: bool):
    """None, or a sorted tuple of distinct dims (one dim when `single`)."""
    if rank == 0 or b.draw(st.booleans()):
        return None
    if single:
        return (b.draw(st.integers(0, rank - 1)),)
    dims = b.draw(st.sets(st.integers(0, rank - 1), min_size=1, max_size=rank))
    return tuple(sorted(dims))


def _reduce(b: _Builder, x: _Value) -> bool:
    op = b.draw(st.sampled_from(["sum", "mean", "max", "min"]))
    dim = _dims(b, len(x.shape), single=op in ("max", "min"))
    # Eager max/min over all dims never keep them; sum and mean may.
    keepdim = False if dim is None and op in ("max", "min") else b.draw(st.booleans())
    bound = x.bound * _numel(x.shape) if op == "sum" else x.bound
    b.push(b.node(op, [x], dim=dim, keepdim=keepdim), bound)
    return True


def _matmul(b: _Builder, x: _Value) -> bool:
    if not x.shape or _numel(x.shape) > GROW_LIMIT:
        return False
    k = x.shape[-1]

    def fits(v: _Value) -> bool:
        s = v.shape
        if len(s) == 1:
            return s[0] == k
        return len(s) == 2 and s[0] == k

    def shape():
        if b.draw(st.booleans()):
            return (k,)
        return (k, b.draw(st.integers(1, 4)))

    y = b.partner(x, fits, shape)
    b.push(b.node("matmul", [x, y]), x.bound * y.bound * k)
    return True


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def _reshape(b: _Builder, x: _Value) -> bool:
    factors = b.draw(st.permutations(_prime_factors(_numel(x.shape))))
    rank = b.draw(st.integers(1, 3))
    dims = [1] * rank
    for f in factors:
        dims[b.draw(st.integers(0, rank - 1))] *= f
    b.push(b.node("reshape", [x], shape=tuple(dims)), x.bound)
    return True


def _transpose(b: _Builder, x: _Value) -> bool:
    rank = len(x.shape)
    if rank < 2:
        return False
    d0 = b.draw(st.integers(0, rank - 2))
    d1 = b.draw(st.integers(d0 + 1, rank - 1))
    b.push(b.node("transpose", [x], d0=d0, d1=d1), x.bound)
    return True


def _permute(b: _Builder, x: _Value) -> bool:
    rank = len(x.shape)
    if rank < 2:
        return False
    dims = tuple(b.draw(st.permutations(range(rank))))
    b.push(b.node("permute", [x], dims=dims), x.bound)
    return True


def _broadcast_to(b: _Builder, x: _Value) -> bool:
    if _numel(x.shape) > GROW_LIMIT:
        return False
    lead = tuple(b.draw(st.lists(st.integers(1, 3), max_size=max(0, 3 - len(x.shape)))))
    dims = tuple(b.draw(st.integers(1, 3)) if d == 1 else d for d in x.shape)
    b.push(b.node("broadcast_to", [x], shape=lead + dims), x.bound)
    return True


def _cat(b: _Builder, x: _Value) -> bool:
    rank = len(x.shape)
    if rank == 0 or _numel(x.shape) > GROW_LIMIT:
        return False
    dim = b.draw(st.integers(0, rank - 1))

    def fits(v: _Value) -> bool:
        s = v.shape
        return len(s) == rank and all(s[i] == x.shape[i] for i in range(rank) if i != dim)

    def shape():
        return tuple(b.draw(st.integers(1, 3)) if i == dim else n for i, n in enumerate(x.shape))

    others = [b.partner(x, fits, shape) for _ in range(b.draw(st.integers(1, 2)))]
    parts = [x, *others]
    b.push(b.node("cat", parts, dim=dim), max(p.bound for p in parts))
    return True


def _stack(b: _Builder, x: _Value) -> bool:
    if len(x.shape) >= MAX_RANK or _numel(x.shape) > GROW_LIMIT:
        return False
    dim = b.draw(st.integers(0, len(x.shape)))
    others = [
        b.partner(x, lambda v: v.shape == x.shape, lambda: x.shape)
        for _ in range(b.draw(st.integers(1, 2)))
    ]
    parts = [x, *others]
    b.push(b.node("stack", parts, dim=dim), max(p.bound for p in parts))
    return True


def _index_item(b: _Builder, n: int):
    kind = b.draw(st.sampled_from(["all", "range", "int", "negative", "step"]))
    if kind == "all":
        return slice(None)
    if kind == "int":
        return b.draw(st.integers(0, n - 1))
    if kind == "negative":
        return -b.draw(st.integers(1, n))
    if kind == "step":
        return slice(None, None, 2)
    start = b.draw(st.integers(0, n - 1))
    stop = b.draw(st.integers(start + 1, n))
    return slice(start, stop)


def _getitem(b: _Builder, x: _Value) -> bool:
    if not x.shape:
        return False
    count = b.draw(st.integers(1, len(x.shape)))  # index a prefix of the dims
    items = [_index_item(b, n) for n in x.shape[:count]]
    if len(x.shape) < MAX_RANK and b.draw(st.booleans()):
        items.insert(b.draw(st.integers(0, len(items))), None)
    index = encode_index(tuple(items))
    b.push(b.node("getitem", [x], index=index), x.bound)
    return True


def _softmax(b: _Builder, x: _Value) -> bool:
    if not x.shape:
        return False
    op = b.draw(st.sampled_from(["softmax", "log_softmax"]))
    dim = b.draw(st.integers(0, len(x.shape) - 1))
    bound = 1.0 if op == "softmax" else 2 * x.bound + math.log(x.shape[dim]) + 1
    b.push(b.node(op, [x], dim=dim), bound)
    return True


def _where(b: _Builder, x: _Value) -> bool:
    compare = b.draw(st.sampled_from(["gt", "lt", "ge", "le", "eq", "ne"]))
    cond = b.node(compare, [x, b.broadcast_partner(x)])
    other = b.broadcast_partner(x)
    left, right = (x, other) if b.draw(st.booleans()) else (other, x)
    b.push(b.node("where", [cond, left, right]), max(x.bound, other.bound))
    return True


def _dropout(b: _Builder, x: _Value) -> bool:
    p = b.draw(st.sampled_from([0.25, 0.5]))
    mask = b.node("dropout_mask", [], shape=x.shape, p=p, dtype="float32")
    b.push(b.node("mul", [x, mask]), x.bound / (1 - p))
    return True


FAMILIES = {
    "binary": _binary,
    "pow": _pow,
    "unary": _unary,
    "exp": _exp,
    "log": _log,
    "sqrt": _sqrt,
    "clamp": _clamp,
    "reduce": _reduce,
    "matmul": _matmul,
    "reshape": _reshape,
    "transpose": _transpose,
    "permute": _permute,
    "broadcast_to": _broadcast_to,
    "cat": _cat,
    "stack": _stack,
    "getitem": _getitem,
    "softmax": _softmax,
    "where": _where,
    "dropout": _dropout,
}

_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def random_graphs(draw, min_ops: int = 1, max_ops: int = 15, families=DEFAULT_FAMILIES) -> Graph:
    """A small random valid Graph (see the module docstring for what it contains)."""
    families = tuple(families)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown op families {sorted(unknown)}; known: {sorted(FAMILIES)}")
    graph = Graph("random")
    b = _Builder(draw, graph)
    for k in range(draw(st.integers(1, 3))):
        b.pool.append(_Value(graph.add_input(f"x{k}", TensorType(draw(_shapes), F32)), 2.0))
    for _ in range(draw(st.integers(0, 2))):
        b.leaf(draw(_shapes))
    for _ in range(draw(st.integers(min_ops, max_ops))):
        x = b.pick()
        # A drawn family; when it does not apply to x (say, matmul on a scalar), the next ones.
        start = draw(st.integers(0, len(families) - 1))
        order = list(families[start:]) + list(families[:start])
        if not any(FAMILIES[name](b, x) for name in order):
            b.push(b.node("tanh", [x]), 1.0)
    last = b.op_nodes[-1]
    extra = draw(st.lists(st.sampled_from(b.op_nodes), max_size=2, unique_by=id))
    graph.set_outputs([last] + [n for n in extra if n is not last])
    return graph


def random_inputs(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Arrays for every graph input (in order): floats uniform in [-2, 2], ints in [0, 3)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for node in graph.inputs:
        shape, dtype = node.type.shape, node.type.dtype
        if dtype.kind == "f":
            arrays.append(rng.uniform(-INPUT_RANGE, INPUT_RANGE, shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.random(shape) < 0.5)
        else:
            arrays.append(rng.integers(0, 3, shape).astype(dtype))
    return arrays


def graph_inputs(graph: Graph) -> st.SearchStrategy[list[np.ndarray]]:
    """A strategy of input arrays for `graph` (see `random_inputs`)."""
    return st.integers(0, 2**32 - 1).map(lambda seed: random_inputs(graph, seed))


@st.composite
def graphs_with_inputs(draw, **graph_options) -> tuple[Graph, list[np.ndarray]]:
    """A `(graph, input_arrays)` pair; options as for `random_graphs`."""
    graph = draw(random_graphs(**graph_options))
    return graph, draw(graph_inputs(graph))
