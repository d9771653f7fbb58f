"""Bad input to Tensor ops raises a clear Python exception naming the shapes or values involved.

Besides the type and the message, each case checks that the error is mytorch's own: not a
numpy exception class, not a numpy message passed through, and not raised from numpy's code.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import mytorch
from mytorch import Tensor

# How numpy's own messages for these mistakes begin. A message that starts like one of these is
# numpy's error passed through unchanged (wrapping it after mytorch's own context is fine).
NUMPY_MESSAGES = [
    r"operands could not be broadcast together",
    r"could not broadcast",
    r"could not convert string to float",
    r"all the input array dimensions",
    r"all input arrays must have the same shape",
    r"matmul: Input operand",
    r"cannot reshape array",
    r"index -?\d+ is out of bounds",
    r"axis -?\d+ is out of bounds",
    r"only integers, slices",
    r"too many indices for array",
    r"can only convert an array of size 1",
    r"need at least one array",
    r"setting an array element with a sequence",
    r"negative dimensions are not allowed",
    r"can only specify one unknown dimension",
    r"tuple index out of range",
]


def shape(*dims: int) -> str:
    """A regex for a shape written as (2, 3), [2, 3], (2,3) or 2x3."""
    if not dims:
        return r"\(\)|\[\]|scalar|0-d"
    inner = r"\s*,\s*".join(str(d) for d in dims)
    crossed = "x".join(str(d) for d in dims)
    return rf"[(\[]\s*{inner}\s*,?\s*[)\]]|\b{crossed}\b"


def value(v) -> str:
    """A regex for a number standing on its own (not part of a longer number)."""
    return rf"(?<![\d.]){re.escape(str(v))}(?![\d.])"


def all_of(*patterns: str) -> str:
    """A regex that matches when every pattern occurs somewhere in the message."""
    return "(?s)" + "".join(f"(?=.*(?:{p}))" for p in patterns)


def ones(*dims: int) -> Tensor:
    return Tensor(np.ones(dims, dtype=np.float32))


def arange(*dims: int) -> Tensor:
    return Tensor(np.arange(int(np.prod(dims)), dtype=np.float32).reshape(dims))


SHAPE_ERRORS = [
    (
        "cat-dim0-(1,3)+(2,4)",
        lambda: mytorch.cat([ones(1, 3), ones(2, 4)], 0),
        [shape(1, 3), shape(2, 4)],
    ),
    (
        "Tensor.cat-dim0-(1,3)+(2,4)",
        lambda: Tensor.cat((ones(1, 3), ones(2, 4)), 0),
        [shape(1, 3), shape(2, 4)],
    ),
    ("cat-dim1", lambda: mytorch.cat([ones(2, 3), ones(3, 3)], dim=1), [shape(2, 3), shape(3, 3)]),
    ("cat-rank-mismatch", lambda: mytorch.cat([ones(2, 3), ones(3)], 0), [shape(2, 3), shape(3)]),
    ("stack-mismatch", lambda: mytorch.stack([ones(2, 3), ones(3, 2)]), [shape(2, 3), shape(3, 2)]),
    (
        "Tensor.stack-mismatch",
        lambda: Tensor.stack([ones(2, 3), ones(2, 4)], 1),
        [shape(2, 3), shape(2, 4)],
    ),
    ("matmul-2d", lambda: ones(2, 3) @ ones(4, 5), [shape(2, 3), shape(4, 5)]),
    ("matmul-fn", lambda: mytorch.matmul(ones(2, 3), ones(4, 5)), [shape(2, 3), shape(4, 5)]),
    ("matmul-1d", lambda: ones(3) @ ones(4), [shape(3), shape(4)]),
    ("matmul-matrix-vector", lambda: ones(2, 3) @ ones(4), [shape(2, 3), shape(4)]),
    ("matmul-batch", lambda: ones(2, 3, 4) @ ones(3, 4, 5), [shape(2, 3, 4), shape(3, 4, 5)]),
    ("add-broadcast", lambda: ones(2, 3) + ones(4), [shape(2, 3), shape(4)]),
    ("sub-broadcast", lambda: ones(2, 3) - ones(4), [shape(2, 3), shape(4)]),
    ("mul-broadcast", lambda: ones(2, 3) * ones(3, 2), [shape(2, 3), shape(3, 2)]),
    ("div-broadcast", lambda: ones(2, 3) / ones(2, 2), [shape(2, 3), shape(2, 2)]),
    ("pow-broadcast", lambda: ones(2, 3) ** ones(4), [shape(2, 3), shape(4)]),
    ("add-numpy-array", lambda: ones(2, 3) + np.ones(4), [shape(2, 3), shape(4)]),
    (
        "reshape-size",
        lambda: ones(2, 3).reshape(4, 2),
        [shape(2, 3) + r"|(?<!\d)6(?!\d)", shape(4, 2)],
    ),
    (
        "reshape-tuple-size",
        lambda: ones(2, 3).reshape((5,)),
        [shape(2, 3) + r"|(?<!\d)6(?!\d)", shape(5)],
    ),
    ("view-size", lambda: ones(2, 3).view(7), [shape(2, 3) + r"|(?<!\d)6(?!\d)", shape(7)]),
    ("reshape-two-unknown", lambda: ones(2, 3).reshape(-1, -1), [r"-1"]),
    ("backward-non-scalar", lambda: (ones(2, 3) * 2).backward(), [shape(2, 3)]),
    (
        "backward-grad-shape",
        lambda: (ones(2, 3) * 2).backward(np.ones((3, 3))),
        [shape(2, 3), shape(3, 3)],
    ),
    ("item-of-many", lambda: ones(2, 3).item(), [shape(2, 3) + r"|(?<!\d)6(?!\d)"]),
    ("zeros-negative", lambda: mytorch.zeros(2, -1), [value(-1)]),
]


@pytest.mark.parametrize("make, patterns", [pytest.param(m, p, id=i) for i, m, p in SHAPE_ERRORS])
def test_shape_mismatch_is_a_clear_value_error(make, patterns):
    with pytest.raises(ValueError, match=all_of(*patterns)) as excinfo:
        make()
    assert_not_a_numpy_error(excinfo)


DIM_ERRORS = [
    ("sum", lambda: arange(2, 3).sum(5), 5),
    ("sum-keyword", lambda: arange(2, 3).sum(dim=-3), -3),
    ("mean", lambda: arange(2, 3).mean(dim=2), 2),
    ("max", lambda: arange(2, 3).max(5), 5),
    ("min", lambda: arange(2, 3).min(dim=-4), -4),
    ("argmax", lambda: arange(2, 3).argmax(5), 5),
    ("softmax", lambda: arange(2, 3).softmax(5), 5),
    ("softmax-fn", lambda: mytorch.softmax(arange(2, 3), -5), -5),
    ("log_softmax", lambda: arange(2, 3).log_softmax(4), 4),
    ("transpose", lambda: arange(2, 3).transpose(0, 5), 5),
    ("cat", lambda: mytorch.cat([arange(2, 3), arange(2, 3)], 5), 5),
    ("cat-negative", lambda: mytorch.cat([arange(2, 3), arange(2, 3)], -3), -3),
    ("stack", lambda: mytorch.stack([arange(2, 3), arange(2, 3)], 4), 4),
    ("unsqueeze", lambda: arange(2, 3).unsqueeze(5), 5),
    ("unsqueeze-negative", lambda: arange(2, 3).unsqueeze(-4), -4),
    ("squeeze", lambda: arange(2, 1).squeeze(5), 5),
    ("permute", lambda: arange(2, 3).permute(0, 5), 5),
    ("size", lambda: arange(2, 3).size(7), 7),
]


@pytest.mark.parametrize("make, bad_dim", [pytest.param(m, d, id=i) for i, m, d in DIM_ERRORS])
def test_dim_out_of_range_names_the_dim(make, bad_dim):
    with pytest.raises((IndexError, ValueError), match=value(bad_dim)) as excinfo:
        make()
    assert_not_a_numpy_error(excinfo)


def test_permute_with_wrong_number_of_dims():
    with pytest.raises((ValueError, IndexError), match=shape(2, 3) + r"|\b2\b") as excinfo:
        arange(2, 3).permute(0)
    assert_not_a_numpy_error(excinfo)


INDEX_ERRORS = [
    ("row", lambda: arange(3, 4)[5], [value(5)]),
    ("negative-row", lambda: arange(3, 4)[-4], [value(-4)]),
    ("column", lambda: arange(3, 4)[:, 7], [value(7)]),
    ("int-array", lambda: arange(3, 4)[np.array([0, 9])], [value(9)]),
    ("list", lambda: arange(3, 4)[[1, 3]], [value(3)]),
    (
        "too-many-indices",
        lambda: arange(3, 4)[0, 0, 0],
        [r"(?i:too many|dimension|dim)|" + shape(3, 4)],
    ),
    ("0d", lambda: Tensor(1.0)[0], [r"(?i:scalar|0-d|dimension|dim)|\(\)"]),
]


@pytest.mark.parametrize("make, patterns", [pytest.param(m, p, id=i) for i, m, p in INDEX_ERRORS])
def test_index_out_of_range_is_an_index_error(make, patterns):
    with pytest.raises(IndexError, match=all_of(*patterns)) as excinfo:
        make()
    assert_not_a_numpy_error(excinfo)


def test_float_index_is_rejected():
    with pytest.raises((IndexError, TypeError), match=r"1\.5|float") as excinfo:
        arange(3, 4)[1.5]
    assert_not_a_numpy_error(excinfo)


BAD_DATA = [
    ("string", lambda: Tensor("abc"), r"(?i)str"),
    ("string-list", lambda: Tensor(["a", "b"]), r"(?i)str|<U"),
    ("string-array", lambda: Tensor(np.array(["a", "b"])), r"(?i)str|<U"),
    ("tensor-fn-strings", lambda: mytorch.tensor([["x"]]), r"(?i)str|<U"),
    ("dict", lambda: Tensor({"a": 1}), r"dict"),
    ("none", lambda: Tensor(None), r"None"),
    ("ragged", lambda: Tensor([[1.0, 2.0], [3.0]]), r"(?i)ragged|inhomogeneous|length|shape"),
    ("cat-of-non-tensor", lambda: mytorch.cat([ones(2), "x"]), r"(?i)str"),
    ("add-string", lambda: ones(2) + "x", r"(?i)str"),
    ("default-dtype-int", lambda: mytorch.set_default_dtype(np.int32), r"int32"),
]


@pytest.mark.parametrize("make, pattern", [pytest.param(m, p, id=i) for i, m, p in BAD_DATA])
def test_bad_data_is_a_clear_type_or_value_error(make, pattern):
    try:
        with pytest.raises((TypeError, ValueError), match=pattern) as excinfo:
            make()
        assert_not_a_numpy_error(excinfo)
    finally:
        mytorch.set_default_dtype(np.float32)


def test_cat_of_nothing():
    with pytest.raises(ValueError, match=r"(?i)empty|at least one|no tensor|0 tensors") as excinfo:
        mytorch.cat([])
    assert_not_a_numpy_error(excinfo)


def test_failed_op_does_not_change_its_inputs():
    a, b = arange(2, 3), arange(4)
    with pytest.raises(ValueError):
        a + b
    np.testing.assert_array_equal(a.data, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(a.grad, np.zeros((2, 3)))


def assert_not_a_numpy_error(excinfo: pytest.ExceptionInfo) -> None:
    """The exception is mytorch's own, not numpy's passed through."""
    exc = excinfo.value
    assert not type(exc).__module__.startswith("numpy"), f"numpy exception class: {type(exc)}"
    message = str(exc)
    for numpy_message in NUMPY_MESSAGES:
        assert not re.match(numpy_message, message), f"numpy's message passed through: {message!r}"
    raised_in = str(excinfo.traceback[-1].path)
    assert "numpy" not in raised_in.replace("\\", "/").split("/"), f"raised inside {raised_in}"
