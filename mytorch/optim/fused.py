"""One native call for a parameter group's SGD update (plain, or with a momentum buffer).

numpy needs two passes and two calls per parameter for `data -= lr * grad` (a product, then a
subtraction), four with momentum; a small W1 step spent ~1 µs per call and as much again per
pass over its largest weight. Here one loop per parameter reads each array once, in one call
for the whole group, through the native binder (`codegen/binder.py`), which checks every
array's type, dtype, shape and layout (and that it is writeable) before the call. Products and
sums are rounded one at a time, in numpy's order (no fused multiply-add): the result is the
numpy path's to the bit. Whatever the binder does not take, the caller does with numpy.

The loop asks for each parameter's cache lines ahead of its stores, for writing (`prefetchw`).
After a training step split over threads (`mytorch.parallel`), the other core holds copies of
every parameter it read; each store to such a line must first take it from there, and without
the prefetch the stores wait for that one line at a time: names' 677 KB weight took ~0.3 ms to
update instead of ~0.09 ms.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir

from ..codegen import binder
from ..codegen.kernel import KernelBuilder
from ..codegen.runtime import NativeFunction
from ..ops.registry import TensorType

I64, I32, PTR = ir.IntType(64), ir.IntType(32), ir.PointerType()
NAME = "mytorch_sgd"
LINE = 64  # bytes in a cache line
BLOCK_LINES = 4  # lines per block of the update loop: one write prefetch each
AHEAD_LINES = 16  # how far ahead of the stores the prefetches run
# llvm.prefetch's last arguments: for writing, kept in every cache level, of data
PREFETCH_WRITE = [ir.Constant(I32, 1), ir.Constant(I32, 3), ir.Constant(I32, 1)]


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
    per_line = LINE // np.dtype(dtype).itemsize
    block = BLOCK_LINES * per_line
    prefetch_type = ir.FunctionType(ir.VoidType(), [PTR, I32, I32, I32])
    prefetch = ir.Function(module, prefetch_type, name="llvm.prefetch.p0")

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

        size = load(sizes, b.add(p, const(1)), I64)
        blocks = b.udiv(size, const(block))

        def one_block(j: ir.Value) -> None:
            start = b.mul(j, const(block))
            for line in range(BLOCK_LINES):  # (a prefetch past the end is a no-op, not a fault)
                ahead = b.add(start, const((AHEAD_LINES + line) * per_line))
                b.call(prefetch, [b.gep(data, [ahead], source_etype=real), *PREFETCH_WRITE])
            k.loop(const(block), lambda i: element(b.add(start, i)), "element")

        k.loop(blocks, one_block, "block")
        done = b.mul(blocks, const(block))
        k.loop(b.sub(size, done), lambda i: element(b.add(done, i)), "tail")

    k.loop(load(sizes, const(0), I64), parameter, "param")
    b.ret_void()
    return str(module)
