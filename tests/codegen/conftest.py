"""Setup for the llvm backend tests.

- faulthandler is on: a crash inside JIT-compiled code still prints a Python traceback.
- Fixtures shared by the test files: `assert_same` (values, dtypes, NaN and inf positions) and
  `compiled_pair` (the same function compiled with the llvm and numpy backends).
- Every shared kernel found in the cache is emitted again and checked to be the cached code
  (`llvm.CHECK_SHARED`): a kernel key that misses something fails a test, whichever test.
"""

from __future__ import annotations

import faulthandler

import numpy as np
import pytest

faulthandler.enable()


@pytest.fixture(autouse=True)
def check_shared_kernels(monkeypatch):
    from mytorch.codegen import llvm

    monkeypatch.setattr(llvm, "CHECK_SHARED", True)

RTOL, ATOL = 1e-4, 1e-5


def assert_same(actual, expected, *, rtol=RTOL, atol=ATOL, what: str = "") -> None:
    """Same shape and dtype; floats close, with NaN and +-inf at exactly the same places."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    where = f"{what}: " if what else ""
    assert actual.shape == expected.shape, f"{where}shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{where}dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype.kind != "f":
        np.testing.assert_array_equal(actual, expected, err_msg=f"{where}values")
        return
    np.testing.assert_array_equal(
        np.isnan(actual), np.isnan(expected), err_msg=f"{where}NaN positions differ"
    )
    signed_inf = [np.where(np.isinf(v), np.sign(v), 0) for v in (actual, expected)]
    np.testing.assert_array_equal(*signed_inf, err_msg=f"{where}inf positions or signs differ")
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{where}values"
    )


def assert_outputs_same(actual, expected, *, what: str = "", **tolerances) -> None:
    """`assert_same` over matching nests of Tensors (tuples, lists) or arrays."""
    from mytorch import Tensor

    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)), f"{what}: expected a sequence, got {actual!r}"
        assert len(actual) == len(expected), f"{what}: {len(actual)} outputs != {len(expected)}"
        for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_outputs_same(a, e, what=f"{what}[{k}]", **tolerances)
        return
    if isinstance(expected, Tensor):
        assert isinstance(actual, Tensor), f"{what}: expected a Tensor, got {type(actual)}"
        actual, expected = actual.data, expected.data
    assert_same(actual, expected, what=what, **tolerances)


@pytest.fixture(name="assert_same", scope="session")
def assert_same_fixture():
    """`assert_same(actual, expected, rtol=, atol=, what=)` on arrays."""
    return assert_same


@pytest.fixture(name="assert_outputs_same", scope="session")
def assert_outputs_same_fixture():
    """`assert_outputs_same(actual, expected, what=)` on nests of Tensors or arrays."""
    return assert_outputs_same
