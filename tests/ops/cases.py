"""One table of differentiable op cases, checked by three oracles.

Each case's `fn(lib, *tensors)` is written once against the PyTorch-style API, so the same
function runs with `lib=mytorch` (forward vs NumPy, gradients vs finite differences) and with
`lib=torch` (values and gradients vs PyTorch). `ref(*arrays)` is the NumPy reference.
Inputs are fixed arrays chosen away from kinks (relu, abs, clamp) and ties (max, min).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_rng = np.random.default_rng(20240611)


def normal(*shape: int) -> np.ndarray:
    """Standard normal values."""
    return np.asarray(_rng.standard_normal(shape))


def positive(*shape: int) -> np.ndarray:
    """Values in [0.5, 2): safe for log, sqrt, division and fractional powers."""
    return np.asarray(_rng.uniform(0.5, 2.0, shape))


def nonzero(*shape: int) -> np.ndarray:
    """Values with |x| in [0.3, 1.5): away from the kinks of abs and relu at 0."""
    signs = np.where(_rng.random(shape) < 0.5, -1.0, 1.0)
    return np.asarray(signs * _rng.uniform(0.3, 1.5, shape))


def distinct(*shape: int) -> np.ndarray:
    """Values at least 0.25 apart, so max/min have no ties even after a finite-difference step."""
    size = int(np.prod(shape))
    values = (_rng.permutation(size) - size / 2) * 0.25 + 0.01
    return values.reshape(shape)


def clamp_grid(*shape: int) -> np.ndarray:
    """Values in [-1.3, 1.3] that stay at least 0.09 away from +-0.5, 0.1 and 0.2."""
    size = int(np.prod(shape))
    values = np.linspace(-1.3, 1.3, size) + 0.013
    return _rng.permutation(values).reshape(shape)


def np_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    """Numerically stable softmax."""
    shifted = np.exp(x - x.max(axis=dim, keepdims=True))
    return shifted / shifted.sum(axis=dim, keepdims=True)


def np_log_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    """Numerically stable log-softmax."""
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class OpCase:
    """One op application: `fn(lib, *tensors)`, its NumPy reference, and its inputs."""

    id: str
    fn: Callable
    ref: Callable
    inputs: tuple[np.ndarray, ...]
    torch: bool = True  # False when the expression has no PyTorch spelling

    def __repr__(self) -> str:
        return self.id


def _shape_id(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(str(n) for n in shape) + ")"


CASES: list[OpCase] = []


def case(id: str, fn: Callable, ref: Callable, *inputs: np.ndarray, torch: bool = True) -> None:
    """Add a case to the table."""
    CASES.append(OpCase(id, fn, ref, tuple(inputs), torch))


# --- binary operators with broadcasting -------------------------------------------------------
BROADCAST_SHAPES = [
    ((3, 4), (3, 4)),
    ((3, 1), (1, 4)),
    ((4,), (3, 4)),
    ((3, 4), (4,)),
    ((), (3, 4)),
    ((3, 4), ()),
    ((2, 3, 1), (3, 4)),
]
for left, right in BROADCAST_SHAPES:
    pair = f"{_shape_id(left)}x{_shape_id(right)}"
    case(f"add-{pair}", lambda m, a, b: a + b, np.add, normal(*left), normal(*right))
    case(f"sub-{pair}", lambda m, a, b: a - b, np.subtract, normal(*left), normal(*right))
    case(f"mul-{pair}", lambda m, a, b: a * b, np.multiply, normal(*left), normal(*right))
    case(f"div-{pair}", lambda m, a, b: a / b, np.divide, normal(*left), nonzero(*right))
    case(f"pow-{pair}", lambda m, a, b: a**b, np.power, positive(*left), normal(*right))

# --- Python numbers on either side, and unary minus --------------------------------------------
case("add-number", lambda m, a: a + 2.5, lambda a: a + 2.5, normal(3, 4))
case("radd-number", lambda m, a: 2.5 + a, lambda a: 2.5 + a, normal(3, 4))
case("sub-number", lambda m, a: a - 2.5, lambda a: a - 2.5, normal(3, 4))
case("rsub-number", lambda m, a: 2.5 - a, lambda a: 2.5 - a, normal(3, 4))
case("mul-number", lambda m, a: a * 2.5, lambda a: a * 2.5, normal(3, 4))
case("rmul-number", lambda m, a: 2.5 * a, lambda a: 2.5 * a, normal(3, 4))
case("mul-int", lambda m, a: a * 3, lambda a: a * 3, normal(3, 4))
case("div-number", lambda m, a: a / 2.5, lambda a: a / 2.5, normal(3, 4))
case("rdiv-number", lambda m, a: 2.5 / a, lambda a: 2.5 / a, nonzero(3, 4))
case("pow-2", lambda m, a: a**2, lambda a: a**2, normal(3, 4))
case("pow-3", lambda m, a: a**3, lambda a: a**3, normal(3, 4))
case("pow-half", lambda m, a: a**0.5, lambda a: a**0.5, positive(3, 4))
case("pow-negative", lambda m, a: a**-1.5, lambda a: a**-1.5, positive(3, 4))
case("rpow-number", lambda m, a: 2.0**a, lambda a: 2.0**a, normal(3, 4))
case("neg", lambda m, a: -a, np.negative, normal(3, 4))
case("used-twice", lambda m, a: a * a + a, lambda a: a * a + a, normal(3, 4))
case("used-in-both-operands", lambda m, a: a @ a, lambda a: a @ a, normal(3, 3))

# --- matmul: 1-D, 2-D and batched operands ------------------------------------------------------
MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((4,), (2, 4, 5)),
    ((2, 3, 4), (4,)),
    ((2, 1, 3, 4), (5, 4, 2)),
]
for left, right in MATMUL_SHAPES:
    pair = f"{_shape_id(left)}@{_shape_id(right)}"
    case(f"matmul-op-{pair}", lambda m, a, b: a @ b, np.matmul, normal(*left), normal(*right))
    case(
        f"matmul-fn-{pair}",
        lambda m, a, b: m.matmul(a, b),
        np.matmul,
        normal(*left),
        normal(*right),
    )

# --- reductions -------------------------------------------------------------------------------
for dim in [None, 0, 1, 2, -1, -3]:
    for keepdim in [False, True]:
        if dim is None and keepdim:
            continue
        kw = {} if dim is None else {"dim": dim, "keepdim": keepdim}
        suffix = f"dim={dim}-keepdim={keepdim}"
        np_kw = {} if dim is None else {"axis": dim, "keepdims": keepdim}
        case(
            f"sum-{suffix}",
            lambda m, a, kw=kw: a.sum(**kw),
            lambda a, np_kw=np_kw: np.sum(a, **np_kw),
            normal(2, 3, 4),
        )
        case(
            f"mean-{suffix}",
            lambda m, a, kw=kw: a.mean(**kw),
            lambda a, np_kw=np_kw: np.mean(a, **np_kw),
            normal(2, 3, 4),
        )
case("sum-positional-dim", lambda m, a: a.sum(1), lambda a: a.sum(1), normal(3, 4))
case(
    "sum-positional-keepdim",
    lambda m, a: a.sum(0, True),
    lambda a: a.sum(0, keepdims=True),
    normal(3, 4),
)
case("mean-positional-dim", lambda m, a: a.mean(-1), lambda a: a.mean(-1), normal(3, 4))
case("sum-1d", lambda m, a: a.sum(), np.sum, normal(5))
case("sum-0d", lambda m, a: a.sum(), np.sum, normal())
case("max-all", lambda m, a: a.max(), np.max, distinct(3, 4))
case("min-all", lambda m, a: a.min(), np.min, distinct(3, 4))
for dim in [0, 1, 2, -1]:
    for keepdim in [False, True]:
        suffix = f"dim={dim}-keepdim={keepdim}"
        case(
            f"max-values-{suffix}",
            lambda m, a, d=dim, k=keepdim: a.max(d, keepdim=k)[0],
            lambda a, d=dim, k=keepdim: np.max(a, axis=d, keepdims=k),
            distinct(2, 3, 4),
        )
        case(
            f"min-values-{suffix}",
            lambda m, a, d=dim, k=keepdim: a.min(dim=d, keepdim=k)[0],
            lambda a, d=dim, k=keepdim: np.min(a, axis=d, keepdims=k),
            distinct(2, 3, 4),
        )

# --- elementwise functions --------------------------------------------------------------------
case("exp", lambda m, a: a.exp(), np.exp, normal(3, 4))
case("log", lambda m, a: a.log(), np.log, positive(3, 4))
case("sqrt", lambda m, a: a.sqrt(), np.sqrt, positive(3, 4))
case("abs", lambda m, a: a.abs(), np.abs, nonzero(3, 4))
case("tanh", lambda m, a: a.tanh(), np.tanh, normal(3, 4))
case("sigmoid", lambda m, a: a.sigmoid(), np_sigmoid, normal(3, 4))
case("relu", lambda m, a: a.relu(), lambda a: np.maximum(a, 0), nonzero(3, 4))
case("fn-exp", lambda m, a: m.exp(a), np.exp, normal(3, 4))
case("fn-log", lambda m, a: m.log(a), np.log, positive(3, 4))
case("fn-tanh", lambda m, a: m.tanh(a), np.tanh, normal(3, 4))
case("fn-sigmoid", lambda m, a: m.sigmoid(a), np_sigmoid, normal(3, 4))
case("fn-relu", lambda m, a: m.relu(a), lambda a: np.maximum(a, 0), nonzero(3, 4))
case(
    "clamp-both",
    lambda m, a: a.clamp(min=-0.5, max=0.5),
    lambda a: np.clip(a, -0.5, 0.5),
    clamp_grid(3, 5),
)
case(
    "clamp-positional",
    lambda m, a: a.clamp(-0.5, 0.5),
    lambda a: np.clip(a, -0.5, 0.5),
    clamp_grid(3, 5),
)
case("clamp-min", lambda m, a: a.clamp(min=0.1), lambda a: np.maximum(a, 0.1), clamp_grid(3, 5))
case("clamp-max", lambda m, a: a.clamp(max=0.2), lambda a: np.minimum(a, 0.2), clamp_grid(3, 5))

# --- softmax / log_softmax on every dim ---------------------------------------------------------
for shape, dims in [((3, 4), [0, 1, -1, -2]), ((2, 3, 4), [0, 1, 2, -1])]:
    for dim in dims:
        suffix = f"{_shape_id(shape)}-dim={dim}"
        case(
            f"softmax-{suffix}",
            lambda m, a, d=dim: a.softmax(d),
            lambda a, d=dim: np_softmax(a, d),
            normal(*shape),
        )
        case(
            f"log_softmax-{suffix}",
            lambda m, a, d=dim: a.log_softmax(d),
            lambda a, d=dim: np_log_softmax(a, d),
            normal(*shape),
        )
        case(
            f"fn-softmax-{suffix}",
            lambda m, a, d=dim: m.softmax(a, d),
            lambda a, d=dim: np_softmax(a, d),
            normal(*shape),
        )
        case(
            f"fn-log_softmax-{suffix}",
            lambda m, a, d=dim: m.log_softmax(a, dim=d),
            lambda a, d=dim: np_log_softmax(a, d),
            normal(*shape),
        )
case(
    "softmax-large-values",
    lambda m, a: a.softmax(1),
    lambda a: np_softmax(a, 1),
    normal(2, 3) * 10 + 500,
)
case(
    "log_softmax-large-values",
    lambda m, a: a.log_softmax(1),
    lambda a: np_log_softmax(a, 1),
    normal(2, 3) * 10 - 500,
)

# --- shape ops -----------------------------------------------------------------------------------
case("reshape-varargs", lambda m, a: a.reshape(4, 3), lambda a: a.reshape(4, 3), normal(3, 4))
case("reshape-tuple", lambda m, a: a.reshape((2, 6)), lambda a: a.reshape(2, 6), normal(3, 4))
case("reshape-minus-one", lambda m, a: a.reshape(-1), lambda a: a.reshape(-1), normal(3, 4))
case(
    "reshape-infer-dim",
    lambda m, a: a.reshape(2, -1, 3),
    lambda a: a.reshape(2, -1, 3),
    normal(3, 4),
)
case("reshape-to-scalar", lambda m, a: a.reshape(()), lambda a: a.reshape(()), normal(1, 1))
case("view-varargs", lambda m, a: a.view(12), lambda a: a.reshape(12), normal(3, 4))
case("view-infer", lambda m, a: a.view(3, 2, -1), lambda a: a.reshape(3, 2, -1), normal(3, 4))
case("transpose-2d", lambda m, a: a.transpose(0, 1), lambda a: a.T, normal(3, 4))
case(
    "transpose-3d", lambda m, a: a.transpose(0, 2), lambda a: np.swapaxes(a, 0, 2), normal(2, 3, 4)
)
case(
    "transpose-negative",
    lambda m, a: a.transpose(-1, -2),
    lambda a: np.swapaxes(a, -1, -2),
    normal(2, 3, 4),
)
case("T-2d", lambda m, a: a.T, lambda a: a.T, normal(3, 4))
case(
    "permute-varargs",
    lambda m, a: a.permute(2, 0, 1),
    lambda a: a.transpose(2, 0, 1),
    normal(2, 3, 4),
)
case(
    "permute-tuple",
    lambda m, a: a.permute((1, 2, 0)),
    lambda a: a.transpose(1, 2, 0),
    normal(2, 3, 4),
)
case(
    "permute-negative",
    lambda m, a: a.permute(-1, 0, 1),
    lambda a: a.transpose(2, 0, 1),
    normal(2, 3, 4),
)
for dim in [0, 1, 2, -1, -3]:
    case(
        f"unsqueeze-{dim}",
        lambda m, a, d=dim: a.unsqueeze(d),
        lambda a, d=dim: np.expand_dims(a, d),
        normal(3, 4),
    )
case("squeeze-all", lambda m, a: a.squeeze(), np.squeeze, normal(3, 1, 4, 1))
case("squeeze-dim", lambda m, a: a.squeeze(1), lambda a: np.squeeze(a, 1), normal(3, 1, 4, 1))
case(
    "squeeze-negative-dim",
    lambda m, a: a.squeeze(-1),
    lambda a: np.squeeze(a, -1),
    normal(3, 1, 4, 1),
)
case("squeeze-non-unit-dim-is-noop", lambda m, a: a.squeeze(0), lambda a: a, normal(3, 1, 4))

# --- indexing -----------------------------------------------------------------------------------
INDEXES = [
    ("int", 1),
    ("negative-int", -1),
    ("slice", slice(1, 3)),
    ("step-slice", (slice(None), slice(None, None, 2))),
    ("column", (slice(None), 1)),
    ("int-pair", (2, -3)),
    ("none-first", None),
    ("none-middle", (slice(None), None)),
    ("ellipsis", (Ellipsis, 1)),
    ("ellipsis-after-int", (1, Ellipsis)),
    ("int-array-repeats", np.array([0, 2, 0])),
    ("list-repeats", [2, 0, 2, 2]),
    ("int-array-pair", (np.array([0, 1, 1]), np.array([3, 3, 0]))),
    ("slice-and-int-array", (slice(1, None), np.array([0, 0, 3]))),
    ("2d-int-array", np.array([[0, 1], [1, 1]])),
]
for name, index in INDEXES:
    case(f"getitem-{name}", lambda m, a, i=index: a[i], lambda a, i=index: a[i], normal(3, 4))
case("getitem-3d-mixed", lambda m, a: a[0, :, 1:3], lambda a: a[0, :, 1:3], normal(2, 3, 4))
case(
    "getitem-3d-none-ellipsis",
    lambda m, a: a[None, ..., 1],
    lambda a: a[None, ..., 1],
    normal(2, 3, 4),
)
case("getitem-3d-negative-slice", lambda m, a: a[-1, -2:], lambda a: a[-1, -2:], normal(2, 3, 4))

# --- cat / stack on every dim ------------------------------------------------------------------
CAT_CASES = [
    (0, [(2, 3), (1, 3), (3, 3)]),
    (1, [(2, 3), (2, 1), (2, 2)]),
    (-1, [(2, 3), (2, 2)]),
    (-2, [(1, 3), (2, 3)]),
    (0, [(1, 2, 3), (2, 2, 3)]),
    (1, [(2, 1, 3), (2, 2, 3)]),
    (2, [(2, 2, 1), (2, 2, 3)]),
    (-3, [(1, 2, 3), (1, 2, 3)]),
]
for dim, shapes in CAT_CASES:
    suffix = f"dim={dim}-" + "+".join(_shape_id(s) for s in shapes)
    arrays = [normal(*s) for s in shapes]
    case(
        f"cat-{suffix}",
        lambda m, *ts, d=dim: m.cat(list(ts), dim=d),
        lambda *xs, d=dim: np.concatenate(xs, axis=d),
        *arrays,
    )
case(
    "cat-positional-dim",
    lambda m, a, b: m.cat((a, b), 1),
    lambda a, b: np.concatenate((a, b), 1),
    normal(1, 2),
    normal(1, 3),
)
case(
    "cat-default-dim",
    lambda m, a, b: m.cat([a, b]),
    lambda a, b: np.concatenate((a, b)),
    normal(1, 2),
    normal(2, 2),
)
case(
    "Tensor.cat-static",
    lambda m, a, b: type(a).cat((a, b), 1),
    lambda a, b: np.concatenate((a, b), 1),
    normal(1, 2),
    normal(1, 3),
    torch=False,
)
for dim in [0, 1, 2, -1, -3]:
    case(
        f"stack-dim={dim}",
        lambda m, a, b, c, d=dim: m.stack([a, b, c], dim=d),
        lambda a, b, c, d=dim: np.stack([a, b, c], axis=d),
        normal(2, 3),
        normal(2, 3),
        normal(2, 3),
    )
case(
    "stack-default-dim",
    lambda m, a, b: m.stack((a, b)),
    lambda a, b: np.stack((a, b)),
    normal(3),
    normal(3),
)
case(
    "Tensor.stack-static",
    lambda m, a, b: type(a).stack((a, b), 1),
    lambda a, b: np.stack((a, b), 1),
    normal(2, 3),
    normal(2, 3),
    torch=False,
)

# --- compositions ---------------------------------------------------------------------------------
case(
    "tutorial-rnn-step",
    lambda m, x, h, w, b: m.tanh(m.cat((x, h), 1) @ w.T + b),
    lambda x, h, w, b: np.tanh(np.concatenate((x, h), 1) @ w.T + b),
    normal(1, 3),
    normal(1, 2),
    normal(2, 5),
    normal(2),
)
case(
    "softmax-cross-entropy",
    lambda m, logits: -(logits.log_softmax(1)[np.arange(3), np.array([1, 0, 3])]).mean(),
    lambda z: -np_log_softmax(z, 1)[np.arange(3), np.array([1, 0, 3])].mean(),
    normal(3, 4),
)
case(
    "mse",
    lambda m, a, b: ((a - b) ** 2).mean(),
    lambda a, b: ((a - b) ** 2).mean(),
    normal(3, 4),
    normal(3, 4),
)
case(
    "chain-of-shapes",
    lambda m, a: (a.reshape(2, 6).T.unsqueeze(0).sum(-1) * a.sum()).exp().squeeze(0),
    lambda a: np.exp(a.reshape(2, 6).T[None].sum(-1) * a.sum())[0],
    normal(3, 4) * 0.1,
)

CASES_BY_ID = {c.id: c for c in CASES}
assert len(CASES_BY_ID) == len(CASES), "duplicate case ids"
TORCH_CASES = [c for c in CASES if c.torch]
