"""A build's entry and new kernels compiled as one LLVM module (`runtime.NativeCode`): each
kernel under its symbol, a helper that several kernels define kept once, and never merged when
the same name hides different code."""

from __future__ import annotations

import ctypes

import numpy as np

from mytorch.codegen import runtime

ENTRY = """
declare void @"test.a"(ptr %out)
declare void @"test.b"(ptr %out)

define void @"entry"(ptr %args) {
  call void @"test.a"(ptr %args)
  %second = getelementptr i64, ptr %args, i64 1
  call void @"test.b"(ptr %second)
  ret void
}
"""


def kernel(helper_body: str, globals_: str = "") -> str:
    """A kernel module in llvmlite's layout: `kernel(p)` stores h(*p), its helper's result."""
    return f"""{globals_}
define void @"kernel"(ptr %".1")
{{
entry:
  %".2" = load i64, ptr %".1"
  %".3" = call i64 @"h"(i64 %".2")
  store i64 %".3", ptr %".1"
  ret void
}}

define internal i64 @"h"(i64 %".1") noinline
{{
entry:
{helper_body}
}}
"""


def run(kernels: dict[str, str]) -> tuple[list[int], str]:
    code = runtime.NativeCode(ENTRY, kernels)
    out = np.array([5, 6], np.int64)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(code.address("entry"))(out.ctypes.data)
    return out.tolist(), code.artifacts.llvm_ir


def test_a_helper_two_kernels_define_alike_is_compiled_once():
    same = kernel('  %".2" = mul i64 %".1", %".1"\n  ret i64 %".2"')
    values, optimized = run({"test.a": same, "test.b": same})
    assert values == [25, 36]
    assert optimized.count("define internal") == 1


def test_helpers_of_one_name_and_different_code_both_stay():
    plus = kernel('  %".2" = add i64 %".1", 1\n  ret i64 %".2"')
    times = kernel('  %".2" = mul i64 %".1", 3\n  ret i64 %".2"')
    values, _ = run({"test.a": plus, "test.b": times})
    assert values == [6, 18]


def test_helpers_reading_globals_are_never_merged():
    """The same text, reading a global of the same name with other contents."""
    body = '  %".2" = load i64, ptr @"const"\n  %".3" = add i64 %".1", %".2"\n  ret i64 %".3"'

    def constant(value):
        return f'@"const" = internal constant i64 {value}\n'

    values, _ = run({"test.a": kernel(body, constant(3)), "test.b": kernel(body, constant(4))})
    assert values == [8, 10]
