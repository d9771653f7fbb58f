"""Every op in the registry, compiled alone with the llvm backend, against the numpy interpreter
and against eager mode: shapes, dtypes, values (rtol 1e-4, atol 1e-5) and NaN/inf positions.

Each op has cases over odd and size-1 shapes, broadcasting, float32 and float64, integer and bool
inputs where the op takes them, and NaN/inf inputs for elementwise ops and reductions. The
registry completeness test fails when an op has no case, so a new op cannot slip through. The
random ops (`randn`, `rand`, `dropout_mask`) cannot be compiled: they raise CompileError with
`fullgraph=True` and run eagerly with a warning otherwise.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import mytorch
from mytorch import CompileError, Tensor
from mytorch.ir import Graph
from mytorch.ops import OPS, TensorType
from mytorch.ops.shape import encode_index
from mytorch.tensor import apply

RANDOM_OPS = {"randn", "rand", "dropout_mask"}
F32, F64, I64, I32, BOOL = (np.dtype(t) for t in (np.float32, np.float64, np.int64, np.int32, bool))
FLOATS = (F32, F64)
SPECIALS = (np.nan, np.inf, -np.inf, 0.0, -0.0, 100.0, -100.0)


@dataclass
class Case:
    """One op test: a function of Tensors that applies `op`, and its input arrays."""

    op: str
    label: str
    fn: Callable
    inputs: tuple[np.ndarray, ...]

    @property
    def id(self) -> str:
        return f"{self.op}-{self.label}"


CASES: dict[str, list[Case]] = {}


def case(op: str, label: str, fn: Callable, *inputs: np.ndarray) -> None:
    CASES.setdefault(op, []).append(Case(op, label, fn, tuple(inputs)))


def op_fn(op: str, **params) -> Callable:
    """A function of Tensors applying `op` with static `params` (through `apply`)."""

    def fn(*tensors):
        return apply(op, *tensors, **params)

    fn.__name__ = op
    return fn


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def values(shape, dtype, *, special: bool = False, low=-3, high=4, key=()) -> np.ndarray:
    """Seeded test values of `shape`/`dtype`; `special` puts NaN, inf, -0, +-100 at random spots."""
    rng = _rng(shape, str(dtype), special, low, high, key)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(low, high, shape).astype(dtype)
    out = (rng.standard_normal(shape) * 2).astype(dtype)
    if special and out.size:
        flat = out.reshape(-1)
        for k, pos in enumerate(rng.permutation(flat.size)[: len(SPECIALS)]):
            flat[pos] = SPECIALS[k]
    return out


def integer_valued(shape, dtype, *, special: bool = False, key=()) -> np.ndarray:
    """Floats in {-2, ..., 2} (so comparisons and ties really happen), maybe with NaN/inf."""
    out = values(shape, I64, low=-2, high=3, key=key).astype(dtype)
    if special and out.size:
        flat = out.reshape(-1)
        for k, pos in enumerate(_rng(shape, key).permutation(flat.size)[:3]):
            flat[pos] = (np.nan, np.inf, -np.inf)[k]
    return out


def sname(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def dname(*dtypes) -> str:
    return "-".join(np.dtype(d).name for d in dtypes)


# ---- elementwise -------------------------------------------------------------------------------

UNARY_SHAPES = [(), (1,), (17,), (3, 1, 7)]
BINARY_SHAPES = [((3, 7), (7,)), ((7, 1), (1, 17)), ((), (3, 1, 7)), ((17,), (17,)), ((1,), (1,))]
# Dtype pairs per binary shape pair: all three pairs on the first two shapes, float32 elsewhere.
BINARY_DTYPES = [((F32, F32), (F64, F64), (F32, F64))] * 2 + [((F32, F32),)] * 3
INT_UNARY = {"neg", "abs", "relu"}

for _op in ("neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs"):
    for _dtype in FLOATS:
        for _shape in UNARY_SHAPES:
            case(_op, f"{sname(_shape)}-{dname(_dtype)}", op_fn(_op),
                 values(_shape, _dtype))
        case(_op, f"special-{dname(_dtype)}", op_fn(_op),
             values((3, 7), _dtype, special=True))
    if _op in INT_UNARY:
        case(_op, "int64", op_fn(_op), values((3, 7), I64))
# Method spellings, as users write them.
case("neg", "operator", lambda x: -x, values((7,), F32))
case("exp", "method", lambda x: x.exp(), values((7,), F32, special=True))
case("tanh", "function", lambda x: mytorch.tanh(x), values((1, 17), F32))
case("sigmoid", "large", lambda x: x.sigmoid(), np.array([-200.0, -30.0, 0.0, 30.0, 200.0], F32))
case("exp", "overflow", lambda x: x.exp(), np.array([-200.0, -88.0, 88.0, 89.0, 710.0], F32))
case("log", "edges", lambda x: x.log(), np.array([0.0, -0.0, -1.0, 1e-38, 1e-45, np.inf], F32))

_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": None}
for _op in _BINARY:
    for (_sa, _sb), _pairs in zip(BINARY_SHAPES, BINARY_DTYPES, strict=True):
        for _da, _db in _pairs:
            case(_op, f"{sname(_sa)}-{sname(_sb)}-{dname(_da, _db)}",
                 op_fn(_op),
                 values(_sa, _da, key=0), values(_sb, _db, key=1))
    for _dtype in FLOATS:
        case(_op, f"special-{dname(_dtype)}", op_fn(_op),
             values((3, 7), _dtype, special=True, key=0), values((3, 7), _dtype, special=True))
    # Integer operands: int64 op int64, and int64 promoted with float32 to float64.
    case(_op, "int64", op_fn(_op),
         values((3, 7), I64, low=1, high=5), values((7,), I64, low=0, high=3))
    case(_op, "int64-float32", op_fn(_op),
         values((3, 7), I64, low=1, high=5), values((7,), F32))
case("add", "operator-scalar", lambda x: x + 1.5, values((3, 7), F32))
case("add", "0d-plus-python-number", lambda s: s + 0.5, values((), F32))  # a 0-d constant
case("mul", "0d-sum-times-python-number", lambda x: x.sum() * 2.0, values((3, 7), F64))
case("sub", "reflected-scalar", lambda x: 2.0 - x, values((3, 7), F64))
case("mul", "operator-int-scalar", lambda x: x * 3, values((3, 7), I64))
case("div", "reflected-scalar", lambda x: 1.0 / x, values((3, 7), F32, special=True))
case("pow", "square", lambda x: x**2, values((3, 7), F32, special=True))
case("pow", "reflected", lambda x: 2.0**x, values((3, 7), F32, special=True))
case("pow", "negative-base", lambda a, b: a**b,
     np.array([-2.0, -2.0, 0.0, 0.0, -0.0, -np.inf], F32),
     np.array([0.5, 3.0, -1.0, 0.0, -3.0, 3.0], F32))

for _op, _fn in {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}.items():
    for _sa, _sb in BINARY_SHAPES[:3]:
        for _dtype in FLOATS:
            case(_op, f"{sname(_sa)}-{sname(_sb)}-{dname(_dtype)}", _fn,
                 integer_valued(_sa, _dtype, key=0), integer_valued(_sb, _dtype, key=1))
    case(_op, "special", _fn, integer_valued((3, 7), F32, special=True, key=0),
         integer_valued((3, 7), F32, special=True, key=1))
    case(_op, "int64", _fn, values((3, 7), I64, low=-2, high=3), values((7,), I64, low=-2, high=3))
    case(_op, "int64-float32", _fn, values((3, 7), I64, low=-2, high=3),
         integer_valued((7,), F32, special=True))
    case(_op, "bool", _fn, values((3, 7), BOOL), values((7,), BOOL, key=1))
    case(_op, "scalar", lambda x, fn=_fn: fn(x, 1.0), integer_valued((3, 7), F32, special=True))

for _dtype in FLOATS:
    case("where", f"bool-input-{dname(_dtype)}", lambda c, a, b: apply("where", c, a, b),
         values((3, 1), BOOL), values((3, 7), _dtype, special=True), values((7,), _dtype))
case("where", "computed-cond", lambda a, b: apply("where", a > b, a, b),
     values((7, 1), F32, special=True, key=0), values((1, 17), F32, key=1))
case("where", "mixed-dtypes", lambda c, a, b: apply("where", c, a, b),
     values((3, 7), BOOL), values((3, 7), F32), values((3, 7), F64))
case("where", "int64", lambda c, a, b: apply("where", c, a, b),
     values((17,), BOOL), values((17,), I64), values((), I64))
case("where", "scalar-branch", lambda a: apply("where", a > 0, a, 0.0), values((3, 7), F32))

for _dtype in (F32, F64, I64):
    case("clamp", f"min-max-{dname(_dtype)}", lambda x: x.clamp(min=-1, max=2),
         values((3, 7), _dtype, special=_dtype.kind == "f"))
case("clamp", "min-only", lambda x: x.clamp(min=0.5), values((17,), F32, special=True))
case("clamp", "max-only", lambda x: x.clamp(max=-0.5), values((1, 7), F64, special=True))

for _src, _dst, _x in (
    (F32, F64, values((3, 7), F32, special=True)),
    (F64, F32, np.array([1e300, -1e300, 1e-300, np.nan, np.inf, 1.5, -2.25], F64)),
    (F32, I64, values((3, 7), F32) * 10),
    (F64, I32, values((17,), F64) * 10),
    (I64, F32, values((3, 7), I64, low=-1000, high=1000)),
    (I64, F64, values((17,), I64)),
    (I64, I32, values((17,), I64, low=-(2**40), high=2**40)),
    (I32, I64, values((7,), I32)),
    (BOOL, F32, values((3, 7), BOOL)),
    (BOOL, I64, values((3, 7), BOOL)),
    (F32, BOOL, values((3, 7), F32, special=True).round()),
    (I64, BOOL, values((3, 7), I64, low=-1, high=2)),
):
    case("cast", dname(_src, _dst), lambda x, d=_dst: apply("cast", x, dtype=d.name), _x)
case("cast", "float-method", lambda x: x.float(), values((7,), F64))
case("cast", "double-method", lambda x: x.double(), values((7,), F32))

# ---- reductions --------------------------------------------------------------------------------

REDUCE_SHAPES = [(1,), (3, 7), (7, 1, 3)]

for _op in ("sum", "mean"):
    for _dtype in FLOATS:
        for _shape in REDUCE_SHAPES:
            case(_op, f"all-{sname(_shape)}-{dname(_dtype)}", op_fn(_op),
                 values(_shape, _dtype))
        for _dim, _keep in (((0,), False), ((1,), True), ((0, 2), False)):
            case(_op, f"dim{_dim}-keep{_keep}-{dname(_dtype)}",
                 op_fn(_op, dim=_dim, keepdim=_keep),
                 values((7, 3, 17), _dtype))
        case(_op, f"special-{dname(_dtype)}", op_fn(_op, dim=(1,)),
             values((3, 7), _dtype, special=True))
    case(_op, "method", lambda x, op=_op: getattr(x, op)(dim=-1, keepdim=True), values((3, 7), F32))
case("sum", "int64", lambda x: x.sum(dim=0), values((7, 3), I64))
case("sum", "int32-to-int64", lambda x: x.sum(), values((7, 3), I32))
case("sum", "bool-count", lambda x: (x > 0).sum(dim=1), values((3, 7), F32))
case("sum", "inf-minus-inf", lambda x: x.sum(dim=1), np.array([[np.inf, -np.inf, 1.0]], F32))

for _op in ("max", "min", "argmax", "argmin"):
    for _dtype in FLOATS:
        for _shape in REDUCE_SHAPES:
            case(_op, f"all-{sname(_shape)}-{dname(_dtype)}", op_fn(_op),
                 integer_valued(_shape, _dtype))
        for _dim, _keep in ((0, False), (1, True), (2, False)):
            case(_op, f"dim{_dim}-keep{_keep}-{dname(_dtype)}",
                 op_fn(_op, dim=(_dim,), keepdim=_keep),
                 integer_valued((7, 3, 17), _dtype))
        case(_op, f"special-{dname(_dtype)}", op_fn(_op, dim=(1,)),
             integer_valued((5, 7), _dtype, special=True))
    case(_op, "int64", op_fn(_op, dim=(0,)), values((7, 3), I64))
    case(_op, "int64-all", op_fn(_op), values((7, 3), I64))
    case(_op, "nan-first", op_fn(_op, dim=(1,)),
         np.array([[1.0, np.nan, 3.0, np.nan], [np.inf, 2.0, -np.inf, np.inf]], F32))
    case(_op, "all-nan-full", op_fn(_op), np.array([2.0, np.nan, -1.0], F64))
for _op in ("max", "min"):
    case(_op, "multi-dim", op_fn(_op, dim=(0, 2), keepdim=True),
         values((7, 3, 17), F32, special=True))
    case(_op, "values-indices", lambda x, op=_op: tuple(getattr(x, op)(dim=1)),
         integer_valued((3, 7), F32, special=True))
case("argmax", "method-keepdim", lambda x: x.argmax(dim=-1, keepdim=True), values((3, 7), F32))
case("argmax", "used-as-index", lambda x, w: apply("embedding", w, x.argmax(dim=1)),
     values((5, 7), F32), values((7, 3), F32))

for _op in ("softmax", "log_softmax"):
    for _dtype in FLOATS:
        for _shape, _dim in (((1,), 0), ((3, 7), 1), ((3, 7), 0), ((7, 1, 3), 1), ((7, 3, 5), 2)):
            case(_op, f"{sname(_shape)}-dim{_dim}-{dname(_dtype)}",
                 op_fn(_op, dim=_dim), values(_shape, _dtype))
        case(_op, f"special-{dname(_dtype)}", op_fn(_op, dim=1),
             values((5, 7), _dtype, special=True))
    case(_op, "rows-with-inf", op_fn(_op, dim=1),
         np.array([[-np.inf, -np.inf, -np.inf], [1.0, -np.inf, 2.0], [np.inf, 1.0, 0.0],
                   [1e30, -1e30, 0.0]], F32))
    case(_op, "method", lambda x, op=_op: getattr(x, op)(-1), values((3, 7), F32))

# ---- shapes and data movement --------------------------------------------------------------

for _dtype in (F32, F64, I64, BOOL):
    case("broadcast_to", dname(_dtype), lambda x: x.expand(3, 7), values((1, 7), _dtype))
case("broadcast_to", "new-dims", lambda x: apply("broadcast_to", x, shape=(2, 3, 17)),
     values((3, 1), F32))
case("broadcast_to", "scalar", lambda x: apply("broadcast_to", x, shape=(3, 4)), values((), F64))
case("broadcast_to", "then-add", lambda x, y: x.expand(7, 3) + y, values((1, 3), F32),
     values((7, 3), F32))

for _dtype in (F32, F64, I64, BOOL):
    case("reshape", dname(_dtype), lambda x: x.reshape(7, 3), values((3, 7), _dtype))
case("reshape", "flatten-transposed", lambda x: x.T.reshape(-1), values((3, 7), F32))
case("reshape", "unsqueeze-squeeze", lambda x: x.unsqueeze(1).squeeze(0) * 2.0,
     values((1, 17), F32))
case("reshape", "to-scalar", lambda x: x.reshape(()), values((1, 1), F64))
case("reshape", "permuted-then-reshaped", lambda x: x.permute(2, 0, 1).reshape(17, 21) + 1.0,
     values((3, 7, 17), F32))

for _dtype in (F32, F64, I64):
    case("transpose", dname(_dtype), lambda x: x.transpose(0, 1), values((3, 7), _dtype))
case("transpose", "3d-outer", lambda x: x.transpose(0, 2), values((3, 1, 7), F32))
case("transpose", "T-matmul", lambda a, b: a.T @ b, values((7, 3), F32), values((7, 17), F32))
case("transpose", "T-add", lambda a: a.T + a.T * 2.0, values((7, 7), F64))

for _dims in ((2, 0, 1), (1, 2, 0), (0, 2, 1)):
    case("permute", "".join(map(str, _dims)), lambda x, d=_dims: x.permute(*d),
         values((3, 7, 17), F32))
case("permute", "4d", lambda x: x.permute(3, 1, 0, 2), values((2, 3, 1, 5), F64))
case("permute", "int64", lambda x: x.permute(1, 0), values((3, 7), I64))

case("cat", "dim0", lambda a, b: mytorch.cat([a, b], dim=0), values((3, 7), F32),
     values((1, 7), F32, key=1))
case("cat", "dim1-three", lambda a, b, c: mytorch.cat([a, b, c], dim=1), values((3, 7), F64),
     values((3, 1), F64, key=1), values((3, 17), F64, key=2))
case("cat", "dim-last-3d", lambda a, b: mytorch.cat([a, b], dim=-1), values((2, 3, 7), F32),
     values((2, 3, 1), F32, key=1))
case("cat", "mixed-dtypes", lambda a, b: mytorch.cat([a, b], dim=0), values((3, 7), F32),
     values((1, 7), F64, key=1))
case("cat", "int64", lambda a, b: Tensor.cat((a, b), 1), values((3, 7), I64),
     values((3, 1), I64, key=1))
case("cat", "transposed-input", lambda a, b: mytorch.cat([a.T, b], dim=0), values((7, 3), F32),
     values((1, 7), F32, key=1))
case("cat", "special", lambda a, b: mytorch.cat([a, b], dim=1), values((3, 7), F32, special=True),
     values((3, 7), F32, special=True, key=1))

case("stack", "dim0", lambda a, b: mytorch.stack([a, b]), values((3, 7), F32),
     values((3, 7), F32, key=1))
case("stack", "dim1", lambda a, b, c: mytorch.stack([a, b, c], dim=1), values((7,), F64),
     values((7,), F64, key=1), values((7,), F64, key=2))
case("stack", "dim-last", lambda a, b: Tensor.stack((a, b), dim=2), values((3, 7), F32),
     values((3, 7), F32, key=1))
case("stack", "mixed-dtypes", lambda a, b: mytorch.stack([a, b]), values((17,), F32),
     values((17,), F64, key=1))
case("stack", "int64-scalars", lambda a, b: mytorch.stack([a, b]), values((), I64),
     values((), I64, key=1))
case("stack", "transposed-input", lambda a, b: mytorch.stack([a.T, b]), values((7, 3), F32),
     values((3, 7), F32, key=1))

for _label, _index in (
    ("int", 1),
    ("negative-int", (-1, 2)),
    ("slice", (slice(1, None), slice(None, None, 2))),
    ("negative-step", (slice(None, None, -1),)),
    ("none-ellipsis", (None, Ellipsis, 0)),
    ("int-array", (np.array([0, 2, 0, 1]),)),
    ("int-array-dim1", (slice(None), np.array([[6, 0], [3, 3]]))),
    ("two-int-arrays", (np.array([0, 2]), np.array([1, 6]))),
):
    case("getitem", _label, lambda x, i=_index: x[i], values((3, 7), F32))
case("getitem", "float64-3d", lambda x: x[1:, None, ::-2], values((3, 7, 5), F64))
case("getitem", "int64", lambda x: x[np.array([2, 2])], values((3, 7), I64))
case("getitem", "of-transposed", lambda x: x.T[1:5:2, np.array([0, 2])], values((3, 7), F32))
case("getitem", "size-1", lambda x: x[0, 0], values((1, 1), F32))
case("getitem", "time-step", lambda xs: xs[2] * 1.0, values((5, 3, 7), F32))

for _label, _shape, _index, _g in (
    ("int-array-repeats", (5, 3), (np.array([0, 2, 0, 0]),), (4, 3)),
    ("slice", (7, 3), (slice(1, None, 2),), (3, 3)),
    ("int", (3, 7), (1,), (7,)),
    ("dim1-array", (3, 7), (slice(None), np.array([6, 6, 1])), (3, 3)),
):
    for _dtype in FLOATS:
        case("getitem_grad", f"{_label}-{dname(_dtype)}",
             op_fn("getitem_grad", shape=_shape, index=encode_index(_index)),
             values(_g, _dtype))

for _x, _shape in (((3, 7), (1, 7)), ((3, 7), (3, 1)), ((2, 3, 17), (3, 1)), ((17,), ()),
                   ((7, 1, 3), (7, 1, 3))):
    for _dtype in FLOATS:
        case("sum_to", f"{sname(_x)}-to-{sname(_shape)}-{dname(_dtype)}",
             lambda x, s=_shape: apply("sum_to", x, shape=s), values(_x, _dtype))

# ---- products ----------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((7,), (7,)),
    ((3, 7), (7,)),
    ((7,), (7, 17)),
    ((3, 7), (7, 17)),
    ((1, 1), (1, 1)),
    ((2, 3, 7), (7, 1)),
    ((1, 3, 7), (5, 7, 2)),
    ((3, 7), (2, 7, 17)),
]
for _sa, _sb in MATMUL_SHAPES:
    for _dtype in FLOATS:
        case("matmul", f"{sname(_sa)}-{sname(_sb)}-{dname(_dtype)}", lambda a, b: a @ b,
             values(_sa, _dtype), values(_sb, _dtype, key=1))
case("matmul", "mixed-dtypes", lambda a, b: a @ b, values((3, 7), F32), values((7, 5), F64))
case("matmul", "transposed-weight", lambda x, w: x @ w.T, values((3, 7), F32),
     values((17, 7), F32))
case("matmul", "special", lambda a, b: a @ b, values((3, 7), F32, special=True),
     values((7, 5), F32, special=True))
case("matmul", "int64", lambda a, b: a @ b, values((3, 7), I64), values((7, 5), I64))

RNN_CONFIGS = ((F32, 3, "tanh"), (F32, 1, "relu"), (F64, 1, "tanh"), (F64, 3, "relu"))
for _dtype, _batch, _act in RNN_CONFIGS:
    case("rnn_cell", f"b{_batch}-{_act}-{dname(_dtype)}",
         lambda x, h, wi, wh, b, a=_act: apply("rnn_cell", x, h, wi, wh, b, nonlinearity=a),
         values((_batch, 7), _dtype), values((_batch, 17), _dtype, key=1),
         values((17, 7), _dtype, key=2) * 0.3, values((17, 17), _dtype, key=3) * 0.3,
         values((17,), _dtype, key=4))
    case("rnn_step", f"b{_batch}-{_act}-{dname(_dtype)}",
         lambda xw, h, wh, a=_act: apply("rnn_step", xw, h, wh, nonlinearity=a),
         values((_batch, 17), _dtype), values((_batch, 17), _dtype, key=1),
         values((17, 17), _dtype, key=2) * 0.3)
case("rnn_cell", "transposed-weights",
     lambda x, h, wi, wh, b: apply("rnn_cell", x, h, wi.T, wh.T, b, nonlinearity="tanh"),
     values((3, 7), F32), values((3, 5), F32, key=1), values((7, 5), F32, key=2),
     values((5, 5), F32, key=3), values((5,), F32, key=4))

# ---- embedding and one-hot -------------------------------------------------------------------

for _dtype in FLOATS:
    for _shape in ((), (1,), (5,), (2, 3)):
        case("embedding", f"{sname(_shape)}-{dname(_dtype)}",
             lambda w, i: apply("embedding", w, i), values((7, 3), _dtype),
             values(_shape, I64, low=0, high=7))
case("embedding", "int32-indices", lambda w, i: apply("embedding", w, i), values((7, 17), F32),
     values((5,), I32, low=0, high=7))
case("embedding", "transposed-table", lambda w, i: apply("embedding", w.T[:5], i),
     values((17, 7), F32), values((2, 3), I64, low=0, high=5))
case("embedding", "then-linear", lambda w, i, lw: apply("embedding", w, i) @ lw.T,
     values((7, 3), F32), values((4,), I64, low=0, high=7), values((5, 3), F32, key=1))

for _dtype in FLOATS:
    case("embedding_grad", f"repeats-{dname(_dtype)}",
         lambda g, i: apply("embedding_grad", g, i, num=7), values((5, 3), _dtype),
         np.array([0, 6, 0, 0, 3]))
case("embedding_grad", "2d-indices", lambda g, i: apply("embedding_grad", g, i, num=4),
     values((2, 3, 17), F32), values((2, 3), I64, low=0, high=4))

for _dtype in ("float32", "float64", "int64"):
    case("one_hot", _dtype, lambda i, d=_dtype: apply("one_hot", i, num_classes=4, dtype=d),
         values((7,), I64, low=0, high=4))
case("one_hot", "2d", lambda i: apply("one_hot", i, num_classes=7, dtype="float32"),
     values((2, 3), I64, low=0, high=7))
case("one_hot", "scalar-int32", lambda i: apply("one_hot", i, num_classes=3, dtype="float32"),
     np.array(2, I32))

# ---- loop: a body graph built by hand, as the reroll pass builds it ------------------------------


def rnn_step_body(batch: int, hidden: int, dtype, nonlinearity: str) -> Graph:
    """(x_t, h, w_hh) -> rnn_step(x_t, h, w_hh)."""
    body = Graph("body")
    t = TensorType((batch, hidden), np.dtype(dtype))
    x, h = body.add_input("x", t), body.add_input("h", t)
    w = body.add_input("w_hh", TensorType((hidden, hidden), np.dtype(dtype)))
    body.set_outputs([body.add_node("rnn_step", [x, h, w], {"nonlinearity": nonlinearity})])
    return body


def leaky_body(batch: int, hidden: int, dtype) -> Graph:
    """(x_t, h, scale, bias) -> tanh(x_t * scale + h @ bias.T) * 0.5 + h * 0.5, any ops at all."""
    body = Graph("body")
    dt = np.dtype(dtype)
    x, h = (body.add_input(n, TensorType((batch, hidden), dt)) for n in ("x", "h"))
    scale = body.add_input("scale", TensorType((hidden,), dt))
    w = body.add_input("w", TensorType((hidden, hidden), dt))
    half = body.add_const(np.array(0.5, dt))
    wt = body.add_node("transpose", [w], {"d0": 0, "d1": 1})
    pre = body.add_node("add", [body.add_node("mul", [x, scale]), body.add_node("matmul", [h, wt])])
    new = body.add_node("mul", [body.add_node("tanh", [pre]), half])
    body.set_outputs([body.add_node("add", [new, body.add_node("mul", [h, half])])])
    return body


for _dtype in FLOATS:
    for _steps, _batch, _act in ((1, 1, "tanh"), (7, 3, "tanh"), (17, 1, "relu")):
        case("loop", f"rnn-T{_steps}-b{_batch}-{_act}-{dname(_dtype)}",
             op_fn("loop", body=rnn_step_body(_batch, 5, _dtype, _act)),
             values((_steps, _batch, 5), _dtype), values((_batch, 5), _dtype, key=1),
             values((5, 5), _dtype, key=2) * 0.4)
case("loop", "generic-body", op_fn("loop", body=leaky_body(3, 7, F32)), values((5, 3, 7), F32),
     values((3, 7), F32, key=1), values((7,), F32, key=2), values((7, 7), F32, key=3) * 0.3)
_BODY = rnn_step_body(3, 5, F32, "tanh")
case("loop", "transposed-h0-and-last-state",
     lambda xs, h0t, w: apply("loop", xs, h0t.T, w, body=_BODY)[-1],
     values((7, 3, 5), F32), values((5, 3), F32, key=1), values((5, 5), F32, key=2) * 0.4)


# ---- the tests ---------------------------------------------------------------------------------


def all_cases() -> list[Case]:
    return [c for cases in CASES.values() for c in cases]


def test_every_registry_op_has_a_case():
    missing = sorted(set(OPS) - set(CASES) - RANDOM_OPS)
    assert not missing, f"ops with no llvm differential case: {missing}"
    unknown = sorted(set(CASES) - set(OPS))
    assert not unknown, f"cases for ops the registry does not have: {unknown}"
    assert RANDOM_OPS <= set(OPS)
    assert all(not OPS[op].pure for op in RANDOM_OPS)
    impure = {name for name, op in OPS.items() if not op.pure}
    assert impure == RANDOM_OPS, f"new impure ops need a fallback test: {impure - RANDOM_OPS}"


def as_tensors(arrays) -> list[Tensor]:
    return [Tensor(a, dtype=a.dtype, trainable=False) for a in arrays]


def shuffled(arrays, seed: int) -> list[np.ndarray]:
    """New values for the same signature: each array's elements in another order."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(a.reshape(-1)).reshape(a.shape) for a in arrays]


@pytest.mark.parametrize("c", all_cases(), ids=lambda c: c.id)
def test_llvm_matches_numpy_and_eager(c: Case, assert_outputs_same):
    llvm = mytorch.compile(c.fn, backend="llvm", passes="none", fullgraph=True)
    reference = mytorch.compile(c.fn, backend="numpy", passes="none", fullgraph=True)
    for attempt, arrays in enumerate((c.inputs, shuffled(c.inputs, seed=1))):
        tensors = as_tensors(arrays)
        with np.errstate(all="ignore"):
            eager = c.fn(*tensors)
            interpreted = reference(*tensors)
        native = llvm(*tensors)
        assert c.op in llvm.graph.op_counts(), f"{c.op} is not in the graph:\n{llvm.graph}"
        assert_outputs_same(native, interpreted, what=f"llvm vs numpy (inputs {attempt})")
        assert_outputs_same(native, eager, what=f"llvm vs eager (inputs {attempt})")


def test_int64_division_result_type_matches_its_values():
    """The traced type of int64 / int64 must be what the op computes (numpy true division)."""
    a, b = as_tensors([np.array([1, 2, 3]), np.array([2, 2, 2])])
    eager = a / b
    graph = mytorch.trace(lambda a, b: a / b, a, b)
    (node,) = [n for n in graph.nodes if n.op == "div"]
    assert node.dtype == eager.dtype, f"graph says {node.type}, eager computes {eager.dtype}"


# ---- random ops: never compiled ------------------------------------------------------------------

RANDOM_FNS = {
    "randn": lambda x: x + mytorch.randn(3, 4),
    "rand": lambda x: x * mytorch.rand(3, 4),
    "dropout_mask": lambda x: x * apply("dropout_mask", shape=(3, 4), p=0.5, dtype="float32"),
}


@pytest.mark.parametrize("op", sorted(RANDOM_OPS))
def test_random_ops_raise_compile_error_with_fullgraph(op):
    x = as_tensors([values((3, 4), F32)])[0]
    compiled = mytorch.compile(RANDOM_FNS[op], backend="llvm", fullgraph=True)
    with pytest.raises(CompileError, match=op):
        compiled(x)


@pytest.mark.parametrize("op", sorted(RANDOM_OPS))
def test_random_ops_run_eagerly_with_one_warning(op):
    fn = RANDOM_FNS[op]
    x = as_tensors([values((3, 4), F32)])[0]
    compiled = mytorch.compile(fn, backend="llvm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mytorch.manual_seed(7)
        first = compiled(x)
        mytorch.manual_seed(7)
        expected = fn(x)
        second = compiled(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, f"expected one warning per reason, got {messages}"
    assert op in messages[0]
    # The user's source line: where the compiled function was called (this file).
    assert caught[0].filename == __file__, caught[0].filename
    np.testing.assert_array_equal(first.data, expected.data)  # eager, same seed, same draws
    assert second.shape == expected.shape
    assert compiled.graph is None  # nothing was compiled


@pytest.mark.parametrize("op", sorted(RANDOM_OPS))
def test_random_op_warning_names_the_line_that_calls_it(op):
    """API.md: the warning names the op and the user's source line (the line using the op)."""
    x = as_tensors([values((3, 4), F32)])[0]
    compiled = mytorch.compile(RANDOM_FNS[op], backend="llvm")
    with pytest.warns(RuntimeWarning) as caught:
        compiled(x)
    message = str(caught[0].message)
    assert "test_llvm_ops.py" in message, f"no source location in: {message}"


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_float32_sums_of_a_million_terms_keep_float32_precision(op):
    # A float32 running sum drifts by ~1e-2 over 8M terms; numpy sums pairwise (~1e-7).
    x = mytorch.Tensor(
        np.random.default_rng(0).uniform(0, 1, (2048, 512)).astype(np.float32), trainable=False
    )
    exact = getattr(x.data.astype(np.float64), op)()
    with mytorch.no_grad():
        got = mytorch.compile(lambda t: getattr(t, op)())(x).data
    assert got.dtype == np.float32
    assert abs(got - exact) <= 2e-7 * abs(exact), (got, exact)
