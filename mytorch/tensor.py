"""The eager Tensor: numpy data, a gradient, and the autograd tape (`_prev`, `_op`, `_backward`).

Every operation goes through `apply(op_name, *inputs, **params)`, which looks the op up in the
registry (`mytorch.ops`), checks its shape rule, runs its reference kernel and, when a gradient is
needed, records a `_backward` closure built from the op's gradient rule. The methods below only
translate PyTorch's calling conventions (dims, shapes, indices) into canonical op params.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import namedtuple

import numpy as np

from .ops import OPS
from .ops.reduce import canonical_dims
from .ops.registry import DTYPES, as_dtype, fmt, is_float, normalize_dim
from .ops.shape import encode_index, resolve_shape

_default_dtype = np.dtype(np.float32)
_grad_enabled = True
# While a function is traced for the compiler, `apply` hands every op to this tracer instead of
# computing it, and tensors made meanwhile are reported to it (they become constants).
_tracer = None

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def set_default_dtype(dtype) -> None:
    """Set the dtype that non-float data and factory functions get (float32 or float64)."""
    global _default_dtype
    dt = as_dtype(dtype)
    if not is_float(dt):
        raise TypeError(f"the default dtype must be float32 or float64, got {dt}")
    _default_dtype = dt


def get_default_dtype() -> np.dtype:
    """The current default dtype (float32 unless changed)."""
    return _default_dtype


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) in which operations record no autograd tape."""

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev
        return False


def is_grad_enabled() -> bool:
    """True unless inside `no_grad`."""
    return _grad_enabled


def _to_array(data, dtype) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        dtype = as_dtype(dtype)
    try:
        arr = np.asarray(data)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"Tensor data must be a rectangular nest of numbers: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"Tensor data must be numbers, got {type(data).__name__} with dtype {arr.dtype}"
        )
    if dtype is None:
        # Float arrays keep float32/float64; lists, Python numbers and the rest take the default.
        keep = isinstance(data, (np.ndarray, np.floating)) and arr.dtype.kind == "f"
        dtype = arr.dtype if keep and arr.dtype.name in DTYPES else _default_dtype
    return arr if arr.dtype == dtype else arr.astype(dtype)


def _noop() -> None:
    pass


class _LazyGrad:
    """`Tensor.grad` of a tensor made by `wrap`, or after `zero_grad()` or `backward()` reset it:
    zeros like its data, made on first read.

    A non-data descriptor, so a `.grad` stored on the instance (every other tensor's, and this
    one's after the first read or an assignment) is found first. NOTE: CPython 3.11 does not
    specialize loads of an attribute that a class attribute shadows, so every `t.grad` costs
    ~200 instructions more (+0.5% on an eager RNN step's forward and backward), against ~2 us
    of zeros_like saved per compiled output.
    """

    def __get__(self, t, owner=None):
        if t is None:
            return self
        data = t.data
        grad = t.__dict__["grad"] = np.zeros(data.shape, data.dtype)
        return grad


def _operator(op_name: str):
    """The method `self <op> other`: a Tensor `other` goes straight to `apply` (the common case,
    and once per traced op: a frame less to walk for the source line); numbers and arrays are
    made tensors of `self`'s dtype first (`_binary`)."""

    def operator(self, other):
        if isinstance(other, Tensor):
            return apply(op_name, self, other)
        return _binary(op_name, self, other)

    return operator


class Tensor:
    """An n-dimensional array with reverse-mode automatic differentiation."""

    __array_ufunc__ = None  # numpy defers to our reflected operators: array + Tensor -> Tensor
    _abstract = False  # True for the shape-only stand-ins used while tracing
    grad = _LazyGrad()

    def __init__(
        self,
        data,
        _prev=(),
        trainable=True,
        _op="",
        label="",
        *,
        dtype=None,
        requires_grad=None,
    ):
        self.data = _to_array(data, dtype)
        self.grad = np.zeros_like(self.data)
        self.trainable = bool(trainable if requires_grad is None else requires_grad)
        self._prev = tuple(_prev)
        self._op = _op
        self.label = label
        self._backward = _noop
        if _tracer is not None:
            _tracer.note_created(self)

    @classmethod
    def _from_op(cls, data: np.ndarray, prev: tuple, op: str) -> Tensor:
        """A result of `apply`: trainable exactly when it has a tape."""
        t = object.__new__(Tensor)
        t.data = data
        t.grad = np.zeros_like(data)
        t.trainable = bool(prev)
        t._prev = prev
        t._op = op
        t.label = ""
        t._backward = _noop
        return t

    # ---- basic properties ---------------------------------------------------------------------

    @property
    def requires_grad(self) -> bool:
        return self.trainable

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.trainable = bool(value)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape  # (an ndarray's shape is a tuple)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def size(self, dim=None):
        """The shape, or the size of one dim."""
        if dim is None:
            return self.shape
        return self.shape[normalize_dim(dim, self.ndim)]

    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Tensor(data={self.data}, grad={self.grad}, trainable={self.trainable})"

    __hash__ = object.__hash__  # comparisons are elementwise, so identity hashing

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        data = self.data
        if data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {fmt(data.shape)}")
        return data.item()

    def __bool__(self) -> bool:
        data = self.data
        if data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {fmt(data.shape)} is ambiguous")
        return bool(data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def detach(self) -> Tensor:
        """The same data, cut from the tape."""
        return Tensor(self.data, trainable=False)

    def zero_grad(self) -> None:
        """Reset `.grad` to zeros: the instance's array is dropped, and the class's lazy `.grad`
        makes fresh zeros when next read, so a backward that comes first can take its gradient
        as is (`accumulate_grad`) instead of adding it to zeros."""
        self.__dict__.pop("grad", None)

    # ---- autograd -------------------------------------------------------------------------------

    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) into every trainable leaf's `.grad`."""
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() without a gradient needs a scalar, got shape {fmt(self.shape)}; "
                    "pass grad= of the same shape"
                )
            data = self.data  # (np.array of a number costs a third of np.ones)
            seed = np.array(1, data.dtype) if data.ndim == 0 else np.ones(data.shape, data.dtype)
        else:
            seed = np.array(grad.data if isinstance(grad, Tensor) else grad, self.data.dtype)
            if seed.shape != self.data.shape:
                raise ValueError(
                    f"backward: grad of shape {fmt(seed.shape)} does not match the tensor's "
                    f"shape {fmt(self.shape)}"
                )
        prev = self._prev
        if not any([p._prev for p in prev]):
            # Only leaves below (a compiled loss): they are in order, and their grads are kept.
            order = [*dict.fromkeys(prev), self]
        else:
            order = _topological_order(self)
        # Intermediate gradients restart from zero, so repeated backward calls accumulate only
        # into the leaves, as in PyTorch.
        for t in order:
            if t._prev:
                t.__dict__.pop("grad", None)  # zeros, made if something reads them
        held = self.__dict__.get("grad")
        self.grad = seed if held is None else held + seed
        for t in reversed(order):
            t._backward()

    # ---- operators -------------------------------------------------------------------------------
    # (The reflected ones run only when the left operand is not a Tensor.)

    __add__ = _operator("add")

    def __radd__(self, other):
        return _binary("add", other, self)

    __sub__ = _operator("sub")

    def __rsub__(self, other):
        return _binary("sub", other, self)

    __mul__ = _operator("mul")

    def __rmul__(self, other):
        return _binary("mul", other, self)

    __truediv__ = _operator("div")

    def __rtruediv__(self, other):
        return _binary("div", other, self)

    __pow__ = _operator("pow")

    def __rpow__(self, other):
        return _binary("pow", other, self)

    __matmul__ = _operator("matmul")

    def __rmatmul__(self, other):
        return _binary("matmul", other, self)

    def __neg__(self):
        return apply("neg", self)

    __eq__ = _operator("eq")
    __ne__ = _operator("ne")
    __lt__ = _operator("lt")
    __le__ = _operator("le")
    __gt__ = _operator("gt")
    __ge__ = _operator("ge")

    # ---- elementwise -----------------------------------------------------------------------------

    def exp(self):
        return apply("exp", self)

    def log(self):
        return apply("log", self)

    def tanh(self):
        return apply("tanh", self)

    def sigmoid(self):
        return apply("sigmoid", self)

    def relu(self):
        return apply("relu", self)

    def abs(self):
        return apply("abs", self)

    def sqrt(self):
        return apply("sqrt", self)

    def clamp(self, min=None, max=None):
        return apply("clamp", self, min=min, max=max)

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def to(self, dtype):
        """This tensor converted to `dtype` (itself when it already has it)."""
        dtype = as_dtype(dtype)
        return self if self.dtype == dtype else apply("cast", self, dtype=dtype.name)

    # ---- reductions ------------------------------------------------------------------------------

    def sum(self, dim=None, keepdim=False):
        return apply("sum", self, dim=canonical_dims(dim, self.ndim), keepdim=bool(keepdim))

    def mean(self, dim=None, keepdim=False):
        return apply("mean", self, dim=canonical_dims(dim, self.ndim), keepdim=bool(keepdim))

    def max(self, dim=None, keepdim=False):
        """The maximum; with `dim`, a (values, indices) pair as in PyTorch."""
        return self._extremum("max", "argmax", dim, keepdim)

    def min(self, dim=None, keepdim=False):
        """The minimum; with `dim`, a (values, indices) pair as in PyTorch."""
        return self._extremum("min", "argmin", dim, keepdim)

    def _extremum(self, op, arg_op, dim, keepdim):
        if dim is None:
            return apply(op, self, dim=None, keepdim=False)
        dims = (normalize_dim(dim, self.ndim),)
        values = apply(op, self, dim=dims, keepdim=bool(keepdim))
        indices = apply(arg_op, self, dim=dims, keepdim=bool(keepdim))
        return ValuesIndices(values, indices)

    def argmax(self, dim=None, keepdim=False):
        dims = None if dim is None else (normalize_dim(dim, self.ndim),)
        return apply("argmax", self, dim=dims, keepdim=bool(keepdim))

    def argmin(self, dim=None, keepdim=False):
        dims = None if dim is None else (normalize_dim(dim, self.ndim),)
        return apply("argmin", self, dim=dims, keepdim=bool(keepdim))

    def softmax(self, dim):
        return apply("softmax", self, dim=normalize_dim(dim, self.ndim))

    def log_softmax(self, dim):
        return apply("log_softmax", self, dim=normalize_dim(dim, self.ndim))

    # ---- shape ------------------------------------------------------------------------------

    def reshape(self, *shape):
        shape = _shape_arg(shape)
        return apply("reshape", self, shape=resolve_shape(shape, self.numel(), self.shape))

    view = reshape

    def transpose(self, d0, d1):
        ndim = self.ndim
        d0, d1 = normalize_dim(d0, ndim), normalize_dim(d1, ndim)
        return apply("transpose", self, d0=min(d0, d1), d1=max(d0, d1))

    def permute(self, *dims):
        dims = _shape_arg(dims)
        return apply("permute", self, dims=tuple(normalize_dim(d, self.ndim) for d in dims))

    @property
    def T(self):
        ndim = len(self.shape)
        if ndim < 2:
            return self
        if ndim == 2:
            return apply("transpose", self, d0=0, d1=1)
        return self.permute(*reversed(range(ndim)))

    def unsqueeze(self, dim):
        d = normalize_dim(dim, self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(n for n in self.shape if n != 1)
        else:
            d = normalize_dim(dim, self.ndim)
            shape = self.shape[:d] + self.shape[d + 1 :] if self.shape[d] == 1 else self.shape
        return self.reshape(shape)

    def expand(self, *shape):
        """A broadcast view of this tensor at `shape` (-1 keeps a dim's size)."""
        shape = _shape_arg(shape)
        lead = len(shape) - self.ndim
        shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        return apply("broadcast_to", self, shape=shape)

    def __getitem__(self, index):
        if index.__class__ is int:  # xs[t]: encode_index's result for an int, made directly
            return apply("getitem", self, index=(index,))
        return apply("getitem", self, index=encode_index(_index_arrays(index)))

    @staticmethod
    def cat(tensors, dim=0):
        """Concatenate tensors along an existing dim."""
        return apply("cat", *_tensor_list(tensors, "cat"), dim=_cat_dim(tensors, dim, 0))

    @staticmethod
    def stack(tensors, dim=0):
        """Stack same-shaped tensors along a new dim."""
        return apply("stack", *_tensor_list(tensors, "stack"), dim=_cat_dim(tensors, dim, 1))


# ---- the one interception point ------------------------------------------------------------------


def apply(op_name: str, *inputs, **params) -> Tensor:
    """Run op `op_name` on tensors (or Python numbers) with static params, recording its tape."""
    if _tracer is not None:  # tracing: the tracer records a graph node instead
        return _tracer.record(op_name, inputs, params)
    op = OPS[op_name]
    tensors = tuple(_as_tensor(x) for x in inputs)
    arrays = tuple(t.data for t in tensors)
    op.shape(*arrays, **params)  # validates first, so errors name the shapes
    out = op.impl(*arrays, **params)
    if not isinstance(out, np.ndarray):
        out = np.asarray(out)
    needs_grad = _grad_enabled and op.differentiable and any(t.trainable for t in tensors)
    result = Tensor._from_op(out, tensors if needs_grad else (), op_name)
    if needs_grad:
        result._backward = _make_backward(op, weakref.ref(result), tensors, arrays, params)
    return result


def wrap(data: np.ndarray, op: str = "") -> Tensor:
    """A Tensor around the array `data` as it is (no copy, no conversion): not trainable, no
    tape, its `.grad` zeros made on first read. What a compiled call returns, made cheaply."""
    t = object.__new__(Tensor)
    t.data = data
    t.trainable = False
    t._prev = ()
    t._op = op
    t.label = ""
    t._backward = _noop
    return t


def accumulate_grad(t: Tensor, grad: np.ndarray) -> None:
    """Add `grad` into `t.grad`; while `t.grad` is the lazy zeros, `grad` itself becomes it.

    `grad` must be a fresh array of `t`'s shape and dtype that nothing else holds (a compiled
    backward's output): the pass making zeros and the pass adding into them are both saved.
    """
    if "grad" in t.__dict__ or grad.shape != t.data.shape or grad.dtype != t.data.dtype:
        t.grad += grad
    else:
        t.grad = grad


def wrap_fields(op: str = "") -> tuple[tuple[str, object], ...]:
    """The attributes `wrap` sets after `.data`, in order, for code that makes the same tensors
    another way (the llvm backend's native binder). Keep the two in step."""
    return (("trainable", False), ("_prev", ()), ("_op", op), ("label", ""), ("_backward", _noop))


def _make_backward(op, result_ref, tensors, arrays, params):
    def _backward():
        result = result_ref()
        grads = op.vjp(result.grad, result.data, *arrays, **params)
        for t, g in zip(tensors, grads, strict=True):
            if g is not None and t.trainable and t.grad.dtype.kind == "f":
                t.grad += g

    return _backward


@contextlib.contextmanager
def tracing(tracer, *, nested: bool = False):
    """Route every op to `tracer` (see `mytorch.ir.trace`) for the duration of the block.

    `nested=True` lets graph builders (autodiff building a loop body's backward) record into
    another graph for a while, then give the outer tracer back.
    """
    global _tracer
    outer = _tracer
    if outer is not None and not nested:
        raise RuntimeError("mytorch cannot trace two functions at once")
    _tracer = tracer
    try:
        yield tracer
    finally:
        _tracer = outer


def is_tracing() -> bool:
    """True while a function is being traced for the compiler."""
    return _tracer is not None


def is_concrete(t) -> bool:
    """True for tensors holding numbers (False for the stand-ins used while tracing)."""
    return not t._abstract


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from `root` through `_prev`, inputs before users (iterative DFS)."""
    order, visited = [], {id(root)}
    stack = [(root, iter(root._prev))]
    while stack:
        t, inputs = stack[-1]
        for p in inputs:
            if id(p) not in visited:
                visited.add(id(p))
                stack.append((p, iter(p._prev)))
                break
        else:  # every input of t is placed: t follows them
            stack.pop()
            order.append(t)
    return order


def _as_tensor(x, like: Tensor | None = None) -> Tensor:
    """An op input as a Tensor; numbers and arrays become constants (no gradient)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, int, float, np.number, np.bool_)) and like is not None:
        keep = is_float(like.dtype) or not isinstance(x, (float, np.floating))
        return Tensor(np.asarray(x, like.dtype if keep else _default_dtype), trainable=False)
    if isinstance(x, (bool, int, float, list, tuple, np.ndarray, np.number, np.bool_)):
        return Tensor(x, trainable=False)
    raise TypeError(f"expected a Tensor, a number or an array, got {type(x).__name__}")


def _binary(op_name: str, a, b):
    try:
        a = _as_tensor(a, b if isinstance(b, Tensor) else None)
        b = _as_tensor(b, a)
    except TypeError:
        return NotImplemented
    return apply(op_name, a, b)


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _index_arrays(index):
    """Tensors inside an index become integer arrays."""
    items = index if isinstance(index, tuple) else (index,)
    items = tuple(i.data if isinstance(i, Tensor) else i for i in items)
    return items if isinstance(index, tuple) else items[0]


def _tensor_list(tensors, what: str) -> list[Tensor]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{what} expects a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{what} expects a non-empty list of tensors")
    return [t if isinstance(t, Tensor) else _as_tensor(t) for t in tensors]


def _cat_dim(tensors, dim, extra: int) -> int:
    first = tensors[0] if len(tensors) else None
    ndim = len(first.shape) if isinstance(first, Tensor) else np.ndim(first)
    return normalize_dim(dim, ndim + extra)
