"""One native call for a parameter group's SGD update (plain, or with a momentum buffer).

numpy needs two passes and two calls per parameter for `data -= lr * grad` (a product, then a
subtraction), four with momentum; a small W1 step spent ~1 µs per call and as much again per
pass over its largest weight. Here one loop per parameter reads each array once, in one call
for the whole group, through the native binder (`codegen/binder.py`), which checks every
array's type, dtype, shape and layout (and that it is writeable) before the call. Products and
sums are rounded one at a time, in numpy's order (no fused multiply-add): the result is the
numpy path's to the bit. Whatever the binder does not take, the caller does with numpy.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ..codegen import binder
from ..codegen.kernel import KernelBuilder
from ..codegen.runtime import NativeFunction
from ..ops.registry import TensorType

I64, PTR = ir.IntType(64), ir.PointerType()
NAME = "mytorch_sgd"


class FusedSGD:
    """The update of one group's arrays: `bound(coefficients, sizes, *per_parameter)` where
    each parameter gives (data, grad) or (data, grad, momentum buffer)."""

    def __init__(self, arrays: list[np.ndarray], with_buffer: bool):
        dtype = arrays[0].dtype
        if dtype not in (np.float32, np.float64) or any(a.dtype != dtype for a in arrays):
            raise TypeError("fused SGD takes float32 or float64 arrays of one dtype")
        per = 3 if with_buffer else 2
        self.coefficients = np.zeros(2, dtype)  # -lr, momentum
        self.sizes = np.array([len(arrays) // per, *(a.size for a in arrays[::per])], np.int64)
        native = _kernel(dtype, with_buffer)
        self.state = np.zeros(3, np.int64)
        types = [TensorType(a.shape, a.dtype) for a in [self.coefficients, self.sizes, *arrays]]
        self.bound = binder.bind(
            native.address,
            types,
            [],
            (0, self.state.ctypes.data + 8 * binder.STATUS),
            self.state,
            n_args=len(types),
            release_gil=False,
            writeable=True,
            keep=(native,),
        )

    def __call__(self, lr: float, momentum: float, arrays: list) -> bool:
        """Update in place; False (nothing done) when the arrays are not the ones planned."""
        coefficients = self.coefficients
        coefficients[0], coefficients[1] = -lr, momentum
        return type(self.bound(coefficients, self.sizes, *arrays)) is tuple


def plan(arrays: list[np.ndarray], with_buffer: bool) -> FusedSGD | None:
    """The fused update of these arrays, or None where there is none (no binder, odd dtypes)."""
    if not binder.available() or not arrays:
        return None
    try:
        fused = FusedSGD(arrays, with_buffer)
    except TypeError:
        return None
    return fused if fused.bound is not None else None


@functools.cache
def _kernel(dtype: np.dtype, with_buffer: bool) -> NativeFunction:
    return NativeFunction(_emit(dtype, with_buffer), NAME)


def _emit(dtype: np.dtype, with_buffer: bool) -> str:
    """`void mytorch_sgd(ptr* args)`: args = coefficients (-lr, momentum), sizes (the number of
    parameters, then each one's size), then per parameter its data, grad (and buffer)."""
    real = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    module = ir.Module(name=NAME)
    module.triple = ""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), name=NAME)
    (args,) = fn.args
    k = KernelBuilder(module, fn)
    b = k.builder

    def const(value: int) -> ir.Constant:
        return ir.Constant(I64, value)

    def load(base: ir.Value, index: ir.Value, typ) -> ir.Value:
        return b.load(b.gep(base, [index], source_etype=typ), typ=typ)

    def store(value: ir.Value, base: ir.Value, index: ir.Value) -> None:
        b.store(value, b.gep(base, [index], source_etype=value.type))

    coefficients, sizes = load(args, const(0), PTR), load(args, const(1), PTR)
    neg_lr, momentum = load(coefficients, const(0), real), load(coefficients, const(1), real)
    per = 3 if with_buffer else 2

    def parameter(p: ir.Value) -> None:
        first = b.add(const(2), b.mul(p, const(per)))
        data, grad = load(args, first, PTR), load(args, b.add(first, const(1)), PTR)
        buffer = load(args, b.add(first, const(2)), PTR) if with_buffer else None

        def element(i: ir.Value) -> None:
            step = load(grad, i, real)
            if with_buffer:  # buf = buf * momentum + grad, as `buf *= momentum; buf += grad`
                step = b.fadd(b.fmul(load(buffer, i, real), momentum), step)
                store(step, buffer, i)
            # data + (-lr * step): `data -= lr * step` to the bit
            store(b.fadd(load(data, i, real), b.fmul(step, neg_lr)), data, i)

        k.loop(load(sizes, b.add(p, const(1)), I64), element, "element")

    k.loop(load(sizes, const(0), I64), parameter, "param")
    b.ret_void()
    return str(module)
