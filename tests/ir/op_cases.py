"""Example applications of every registry op, keyed by op name, for the IR tests.

Each case is `apply(op, *inputs, **params)` on fixed arrays: the registry test checks the op's
shape and gradient rules on them, and the differential tests run them eagerly, through the
numpy interpreter and through `mytorch.compile(backend="numpy")`. A new op in `mytorch.ops.OPS`
without an entry here fails `test_every_op_has_a_case`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mytorch import Tensor
from mytorch.ir import Graph
from mytorch.ops import TensorType
from mytorch.ops.shape import Slice, encode_index
from mytorch.tensor import apply

_rng = np.random.default_rng(7)
F32 = np.float32


def normal(*shape: int) -> np.ndarray:
    return _rng.standard_normal(shape).astype(F32)


def positive(*shape: int) -> np.ndarray:
    """In [0.5, 2): safe for log, sqrt, division and fractional powers."""
    return _rng.uniform(0.5, 2.0, shape).astype(F32)


def nonzero(*shape: int) -> np.ndarray:
    """|x| in [0.3, 1.5): away from the kinks of abs, relu and clamp bounds at 0."""
    signs = np.where(_rng.random(shape) < 0.5, -1.0, 1.0)
    return (signs * _rng.uniform(0.3, 1.5, shape)).astype(F32)


def distinct(*shape: int) -> np.ndarray:
    """Values 0.25 apart: no ties for max/min/argmax."""
    size = int(np.prod(shape))
    return ((_rng.permutation(size) - size / 2) * 0.25 + 0.01).reshape(shape).astype(F32)


def small_ints(*shape: int) -> np.ndarray:
    """Whole numbers in [-2, 2] as floats: comparisons see ties."""
    return _rng.integers(-2, 3, shape).astype(F32)


def indices(high: int, *shape: int) -> np.ndarray:
    return _rng.integers(0, high, shape).astype(np.int64)


@dataclass(frozen=True)
class IRCase:
    """`apply(op, *inputs, **params)`: one example application of a registry op."""

    op: str
    label: str
    inputs: tuple[np.ndarray, ...]
    params: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.op}-{self.label}"

    def tensors(self) -> list[Tensor]:
        """Fresh input tensors: float inputs trainable, integer and bool ones not."""
        return [Tensor(a.copy(), dtype=a.dtype, trainable=a.dtype.kind == "f") for a in self.inputs]

    def fn(self, *tensors):
        return apply(self.op, *tensors, **self.params)

    def __repr__(self) -> str:
        return self.id


CASES: list[IRCase] = []


def case(op: str, label: str, *inputs: np.ndarray, **params) -> None:
    CASES.append(IRCase(op, label, tuple(inputs), params))


# ---- elementwise ---------------------------------------------------------------------------------
for _op, _make in [("add", normal), ("sub", normal), ("mul", normal)]:
    case(_op, "same", _make(3, 4), _make(3, 4))
    case(_op, "row", _make(3, 4), _make(4))
    case(_op, "outer", _make(3, 1), _make(1, 4))
    case(_op, "scalar", _make(), _make(2, 3))
    case(_op, "rank3", _make(2, 3, 1), _make(3, 4))
case("div", "same", normal(3, 4), nonzero(3, 4))
case("div", "row", normal(3, 4), nonzero(4))
case("div", "scalar", nonzero(), nonzero(2, 3))
case("pow", "same", positive(3, 4), normal(3, 4))
case("pow", "scalar-exponent", positive(3, 4), np.array(2.0, F32))
case("pow", "broadcast", positive(3, 1), normal(4))
case("where", "same", small_ints(3, 4) > 0, normal(3, 4), normal(3, 4))
case("where", "broadcast", small_ints(3, 1) > 0, normal(4), normal(3, 4))
for _op in ["eq", "ne", "lt", "le", "gt", "ge"]:
    case(_op, "same", small_ints(3, 4), small_ints(3, 4))
    case(_op, "broadcast", small_ints(3, 4), small_ints(4))
case("neg", "2d", normal(3, 4))
case("exp", "2d", normal(3, 4))
case("log", "2d", positive(3, 4))
case("sqrt", "2d", positive(3, 4))
case("tanh", "2d", normal(3, 4))
case("tanh", "scalar", normal())
case("sigmoid", "2d", normal(3, 4))
case("relu", "2d", nonzero(3, 4))
case("abs", "2d", nonzero(3, 4))
case("clamp", "both", nonzero(3, 4), min=-0.2, max=0.25)
case("clamp", "min", nonzero(3, 4), min=0.1, max=None)
case("clamp", "max", nonzero(3, 4), min=None, max=-0.1)
case("cast", "to-f64", normal(3, 4), dtype="float64")
case("cast", "to-i64", normal(3, 4) * 3, dtype="int64")
case("cast", "from-i64", indices(5, 3, 4), dtype="float32")

# ---- linear algebra and nn -----------------------------------------------------------------------
case("matmul", "2d", normal(3, 4), normal(4, 5))
case("matmul", "vector-matrix", normal(4), normal(4, 5))
case("matmul", "matrix-vector", normal(3, 4), normal(4))
case("matmul", "batched", normal(2, 3, 4), normal(4, 5))
case("matmul", "batch-broadcast", normal(2, 1, 3, 4), normal(5, 4, 2))
for _op in ["softmax", "log_softmax"]:
    case(_op, "dim0", normal(3, 4), dim=0)
    case(_op, "dim1", normal(3, 4), dim=1)
    case(_op, "3d", normal(2, 3, 4), dim=2)
case("embedding", "2d-indices", normal(5, 3), indices(5, 2, 3))
case("embedding", "repeats", normal(4, 2), np.array([0, 3, 0, 0], np.int64))
case("embedding_grad", "2d-indices", normal(2, 3, 4), indices(5, 2, 3), num=5)
case("one_hot", "1d", indices(5, 4), num_classes=5, dtype="float32")
case("one_hot", "2d", indices(3, 2, 2), num_classes=3, dtype="float64")

# ---- fused recurrent ops (made by the RNN passes) ----------------------------------------------
for _act in ["tanh", "relu"]:
    case(
        "rnn_cell",
        _act,
        normal(2, 3),
        normal(2, 4),
        normal(4, 3),
        normal(4, 4),
        normal(4),
        nonlinearity=_act,
    )
    case("rnn_step", _act, normal(2, 4), normal(2, 4), normal(4, 4), nonlinearity=_act)


def rnn_step_body(batch: int, hidden: int) -> Graph:
    """A loop body: (x_t, h, w_hh) -> rnn_step(x_t, h, w_hh), as the reroll pass builds it."""
    body = Graph("body")
    f32 = np.dtype(F32)
    x = body.add_input("x", TensorType((batch, hidden), f32))
    h = body.add_input("h", TensorType((batch, hidden), f32))
    w = body.add_input("w_hh", TensorType((hidden, hidden), f32))
    body.set_outputs([body.add_node("rnn_step", [x, h, w], {"nonlinearity": "tanh"})])
    return body


case("loop", "rnn_step", normal(5, 2, 4), normal(2, 4), normal(4, 4), body=rnn_step_body(2, 4))

# ---- random (impure): compared under one manual_seed ---------------------------------------------
case("randn", "2d", shape=(2, 3), dtype="float32")
case("rand", "2d", shape=(3, 2), dtype="float64")
case("dropout_mask", "2d", shape=(3, 4), p=0.3, dtype="float32")

# ---- reductions ----------------------------------------------------------------------------------
for _op, _make in [("sum", normal), ("mean", normal), ("max", distinct), ("min", distinct)]:
    case(_op, "all", _make(2, 3, 4), dim=None, keepdim=False)
    case(_op, "dim1", _make(2, 3, 4), dim=(1,), keepdim=False)
    case(_op, "dim2-keep", _make(2, 3, 4), dim=(2,), keepdim=True)
    if _op in ("sum", "mean"):
        case(_op, "dims02-keep", _make(2, 3, 4), dim=(0, 2), keepdim=True)
        case(_op, "all-keep", _make(2, 3), dim=None, keepdim=True)
for _op in ["argmax", "argmin"]:
    case(_op, "all", distinct(3, 4), dim=None, keepdim=False)
    case(_op, "dim1", distinct(3, 4), dim=(1,), keepdim=False)
    case(_op, "dim0-keep", distinct(3, 4), dim=(0,), keepdim=True)

# ---- shape ops -----------------------------------------------------------------------------------
case("reshape", "2d", normal(3, 4), shape=(4, 3))
case("reshape", "flatten", normal(2, 3, 4), shape=(24,))
case("reshape", "to-scalar", normal(1, 1), shape=())
case("transpose", "2d", normal(3, 4), d0=0, d1=1)
case("transpose", "3d", normal(2, 3, 4), d0=0, d1=2)
case("permute", "3d", normal(2, 3, 4), dims=(2, 0, 1))
case("broadcast_to", "expand", normal(3, 1), shape=(2, 3, 4))
case("sum_to", "reduce", normal(2, 3, 4), shape=(3, 1))
case("sum_to", "identity", normal(3, 4), shape=(3, 4))
case("cat", "dim0", normal(2, 3), normal(1, 3), normal(3, 3), dim=0)
case("cat", "dim1", normal(1, 12), normal(1, 4), dim=1)
case("cat", "3d", normal(2, 2, 1), normal(2, 2, 3), dim=2)
case("stack", "dim0", normal(2, 3), normal(2, 3), dim=0)
case("stack", "dim2", normal(2, 3), normal(2, 3), normal(2, 3), dim=2)
case("getitem", "int", normal(3, 4), index=encode_index(1))
case("getitem", "slices", normal(3, 4), index=encode_index((slice(1, 3), slice(None, None, 2))))
case("getitem", "negative", normal(2, 3, 4), index=encode_index((-1, slice(-2, None))))
case("getitem", "none-ellipsis", normal(2, 3, 4), index=encode_index((None, Ellipsis, 1)))
case("getitem", "reverse", normal(3, 4), index=encode_index((slice(None, None, -1),)))
case("getitem", "int-array", normal(3, 4), index=encode_index(np.array([0, 2, 0])))
case(
    "getitem",
    "int-array-pair",
    normal(3, 4),
    index=encode_index((np.array([0, 1, 1]), np.array([3, 3, 0]))),
)
case(
    "getitem_grad",
    "slices",
    normal(2, 2),
    shape=(3, 4),
    index=(Slice(1, 3, None), Slice(0, 2, None)),
)
case("getitem_grad", "repeats", normal(3, 4), shape=(3, 4), index=encode_index(np.array([0, 2, 0])))

CASES_BY_OP: dict[str, list[IRCase]] = {}
for _case in CASES:
    CASES_BY_OP.setdefault(_case.op, []).append(_case)
assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"
