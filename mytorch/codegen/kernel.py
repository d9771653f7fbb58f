"""The kernel builder: LLVM types, strided views of buffers, counted loops and constants.

A `View` is how generated code sees a value: a base pointer, an element offset and per-dim
strides (in elements). Transposes, slices, broadcasts and most reshapes are new views of the same
buffer, so they cost nothing at run time; ops read and write through views.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from llvmlite import ir

from ..errors import CompileError

I64 = ir.IntType(64)
I8 = ir.IntType(8)
PTR = ir.PointerType()

_LLVM_TYPES = {
    "float32": ir.FloatType(),
    "float64": ir.DoubleType(),
    "int64": I64,
    "int32": ir.IntType(32),
    "bool": I8,  # numpy stores bool as one byte, 0 or 1
}


def llvm_type(dtype) -> ir.Type:
    """The LLVM element type of a numpy dtype."""
    try:
        return _LLVM_TYPES[np.dtype(dtype).name]
    except KeyError:
        raise CompileError(f"the llvm backend has no element type for dtype {dtype}") from None


def type_suffix(ty: ir.Type) -> str:
    """LLVM's overload suffix for an intrinsic on `ty`: f32, f64, v16f32, ..."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{type_suffix(ty.element)}"
    if isinstance(ty, ir.FloatType):
        return "f32"
    if isinstance(ty, ir.DoubleType):
        return "f64"
    return f"i{ty.width}"


def intrinsic(module: ir.Module, name: str, ty: ir.Type, arity: int = 1) -> ir.Function:
    """The overloaded intrinsic `name` (llvm.fma, llvm.exp, ...) on type `ty`, declared once."""
    full = f"{name}.{type_suffix(ty)}"
    try:
        return module.get_global(full)
    except KeyError:
        return ir.Function(module, ir.FunctionType(ty, [ty] * arity), name=full)


def contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    """Elements `ptr[offset + sum(i_k * strides[k])]` for indices i within `shape`."""

    ptr: ir.Value
    offset: ir.Value  # i64, usually a constant; dynamic inside loops
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype
    # The graph input index of the parameter this views, if it views one: a parameter usually
    # keeps its bits from call to call, so a packed copy kept between calls (checked against a
    # snapshot of the parameter every call) pays.
    param: int | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_contiguous(self) -> bool:
        expected = contiguous_strides(self.shape)
        return all(
            s == c or n == 1 for n, s, c in zip(self.shape, self.strides, expected, strict=True)
        )

    def transpose(self, order) -> View:
        order = tuple(order)
        return replace(
            self,
            shape=tuple(self.shape[d] for d in order),
            strides=tuple(self.strides[d] for d in order),
        )

    def broadcast_to(self, shape) -> View:
        """The view seen with numpy broadcasting to `shape` (stride 0 on broadcast dims)."""
        lead = len(shape) - len(self.shape)
        strides = [0] * lead
        for n_old, s_old, n_new in zip(self.shape, self.strides, shape[lead:], strict=True):
            strides.append(s_old if n_old == n_new else 0)
        return replace(self, shape=tuple(shape), strides=tuple(strides))

    def reshape(self, shape) -> View | None:
        """The same elements with a new shape, or None when that needs a copy."""
        if self.is_contiguous:
            return replace(self, shape=tuple(shape), strides=contiguous_strides(shape))
        return None


class KernelBuilder:
    """Emits code into one function: loops, element access through views, constants."""

    def __init__(self, module: ir.Module, function: ir.Function):
        self.module = module
        self.function = function
        self.builder = ir.IRBuilder(function.append_basic_block("entry"))

    # ---- element access --------------------------------------------------------------------------

    def address(self, view: View, indices) -> ir.Value:
        """Pointer to the element of `view` at `indices` (i64 values or ints)."""
        b = self.builder
        linear = view.offset
        for index, stride in zip(indices, view.strides, strict=True):
            if stride == 0:
                continue
            index = ir.Constant(I64, index) if isinstance(index, int) else index
            term = index if stride == 1 else b.mul(index, ir.Constant(I64, stride))
            linear = b.add(linear, term)
        return b.gep(view.ptr, [linear], inbounds=True, source_etype=llvm_type(view.dtype))

    def load(self, view: View, indices) -> ir.Value:
        return self.builder.load(self.address(view, indices), typ=llvm_type(view.dtype))

    def store(self, value: ir.Value, view: View, indices) -> None:
        self.builder.store(value, self.address(view, indices))

    def offset_view(self, view: View, dim: int, index: ir.Value) -> View:
        """view[..., index, ...] on `dim` (a dynamic index), dropping that dim."""
        b = self.builder
        step = b.mul(index, ir.Constant(I64, view.strides[dim]))
        return replace(
            view,
            offset=b.add(view.offset, step),
            shape=view.shape[:dim] + view.shape[dim + 1 :],
            strides=view.strides[:dim] + view.strides[dim + 1 :],
        )

    # ---- loops -----------------------------------------------------------------------------------

    def loop(self, n, body, name: str = "i") -> None:
        """for i in range(n): body(i), with i an i64 value; n an int or an i64 value."""
        b = self.builder
        if isinstance(n, int):
            if n == 0:
                return
            n = ir.Constant(I64, n)
        pre = b.block
        header = self.function.append_basic_block(f"{name}.head")
        inner = self.function.append_basic_block(f"{name}.body")
        done = self.function.append_basic_block(f"{name}.done")
        b.branch(header)
        b.position_at_end(header)
        i = b.phi(I64, name=name)
        i.add_incoming(ir.Constant(I64, 0), pre)
        b.cbranch(b.icmp_signed("<", i, n), inner, done)
        b.position_at_end(inner)
        body(i)
        i.add_incoming(b.add(i, ir.Constant(I64, 1)), b.block)
        b.branch(header)
        b.position_at_end(done)

    def loop_carry(self, n, start: list, body, name: str = "k") -> list:
        """values = start; for i in range(n): values = body(i, values); return values (n an int
        or an i64 value).

        The values (vector accumulators, say) live in registers across iterations (phi nodes).
        """
        b = self.builder
        if isinstance(n, int):
            if n == 0:
                return list(start)
            n = ir.Constant(I64, n)
        pre = b.block
        header = self.function.append_basic_block(f"{name}.head")
        inner = self.function.append_basic_block(f"{name}.body")
        done = self.function.append_basic_block(f"{name}.done")
        b.branch(header)
        b.position_at_end(header)
        i = b.phi(I64, name=name)
        i.add_incoming(ir.Constant(I64, 0), pre)
        phis = []
        for v in start:
            phi = b.phi(v.type)
            phi.add_incoming(v, pre)
            phis.append(phi)
        b.cbranch(b.icmp_signed("<", i, n), inner, done)
        b.position_at_end(inner)
        new = body(i, phis)
        end = b.block
        i.add_incoming(b.add(i, ir.Constant(I64, 1)), end)
        for phi, v in zip(phis, new, strict=True):
            phi.add_incoming(v, end)
        b.branch(header)
        b.position_at_end(done)
        return phis

    def loop_nest(self, shape, body, name: str = "i") -> None:
        """for each index tuple over `shape`: body(indices)."""

        def level(k, indices):
            if k == len(shape):
                body(indices)
                return
            self.loop(shape[k], lambda i: level(k + 1, indices + [i]), f"{name}{k}")

        level(0, [])

    # ---- constants -------------------------------------------------------------------------------

    def constant(self, value, dtype) -> ir.Constant:
        """A scalar constant of `dtype`."""
        ty = llvm_type(dtype)
        if isinstance(ty, (ir.FloatType, ir.DoubleType)):
            return ir.Constant(ty, float(value))
        return ir.Constant(ty, int(value))

    def global_array(self, array: np.ndarray, name: str) -> View:
        """A read-only global holding `array` (C order), as a contiguous view."""
        array = np.array(array, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        llvm_type(array.dtype)  # a clear error for an unsupported dtype
        data = bytearray(array.tobytes()) or bytearray(array.dtype.itemsize)
        arr_ty = ir.ArrayType(I8, len(data))  # raw bytes: fast to build, read through typed GEPs
        # unique in the module: every kernel function has its own builder, but one module
        g = ir.GlobalVariable(self.module, arr_ty, name=self.module.get_unique_name(name))
        g.global_constant = True
        g.linkage = "internal"
        g.align = 64
        g.initializer = ir.Constant(arr_ty, data)
        return View(
            g, ir.Constant(I64, 0), array.shape, contiguous_strides(array.shape), array.dtype
        )
