"""A tiny llvmlite JIT for tests and benches: `void f(ptr in, ptr out, i64 n)` elementwise loops.

Stands in for mytorch's runtime (not written yet): build the loop with an emitter from
`mytorch.codegen.mathfns`, optimize at O3 for the host CPU, JIT with MCJIT, call through ctypes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

_IR_TYPES = {np.dtype(np.float32): ir.FloatType(), np.dtype(np.float64): ir.DoubleType()}
_initialized = False


def _target_machine(prefer_512bit: bool = False) -> llvm.TargetMachine:
    """The host CPU's target machine (native target initialized once, lazily).

    LLVM tunes AVX-512 server CPUs (e.g. emeraldrapids) to prefer 256-bit vectors; with
    `prefer_512bit` the "-prefer-256-bit" feature lets the vectorizer use zmm registers.
    """
    global _initialized
    if not _initialized:
        # NOTE: llvm.initialize() raises on llvmlite >= 0.45; these two are all MCJIT needs.
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _initialized = True
    target = llvm.Target.from_triple(llvm.get_process_triple())
    features = llvm.get_host_cpu_features().flatten()
    if prefer_512bit:
        features += ",-prefer-256-bit"
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, opt=3, jit=True
    )


def build_unary_loop(emit: Callable, dtype=np.float32, name: str = "f") -> ir.Module:
    """A module with `void name(ptr noalias in, ptr noalias out, i64 n)`: out[i] = emit(in[i])."""
    elem = _IR_TYPES[np.dtype(dtype)]
    i64 = ir.IntType(64)
    module = ir.Module(name="unary_loop")
    module.triple = llvm.get_process_triple()
    fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(), ir.PointerType(), i64])
    fn = ir.Function(module, fnty, name=name)
    src, dst, n = fn.args
    src.add_attribute("noalias")
    dst.add_attribute("noalias")
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    builder = ir.IRBuilder(entry)
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(i64, 0)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(i64, name="i")
    i.add_incoming(ir.Constant(i64, 0), entry)
    value = builder.load(builder.gep(src, [i], source_etype=elem), typ=elem)
    builder.store(emit(builder, value), builder.gep(dst, [i], source_etype=elem))
    i_next = builder.add(i, ir.Constant(i64, 1))
    i.add_incoming(i_next, loop)
    builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
    builder.position_at_end(done)
    builder.ret_void()
    return module


@dataclass
class JitModule:
    """A JIT-compiled module: keeps the engine alive and the IR/assembly for inspection."""

    engine: llvm.ExecutionEngine
    llvm_ir: str
    optimized_ir: str
    asm: str
    _keep: list = field(default_factory=list)

    def address(self, name: str) -> int:
        """The native address of function `name` (nonzero, or AssertionError)."""
        addr = self.engine.get_function_address(name)
        assert addr, f"JIT: no address for function {name!r}"
        return addr


def jit(module: ir.Module, prefer_512bit: bool = False) -> JitModule:
    """Verify, optimize at O3 for the host CPU, and JIT-compile an llvmlite IR module."""
    tm = _target_machine(prefer_512bit)
    text = str(module)
    mod = llvm.parse_assembly(text)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pass_builder = llvm.create_pass_builder(tm, pto)
    pass_builder.getModulePassManager().run(mod, pass_builder)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    return JitModule(engine, text, str(mod), tm.emit_assembly(mod), [mod, tm])


class UnaryKernel:
    """`kernel(array) -> array`: a JIT-compiled elementwise loop over a 1-D contiguous array."""

    def __init__(self, emit: Callable, dtype=np.float32, prefer_512bit: bool = False):
        self.dtype = np.dtype(dtype)
        self.jit = jit(build_unary_loop(emit, self.dtype), prefer_512bit)
        proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
        self._fn = proto(self.jit.address("f"))

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if x.dtype != self.dtype:
            raise TypeError(f"UnaryKernel: expected {self.dtype} input, got {x.dtype}")
        x = np.ascontiguousarray(x).reshape(-1)
        if out is None:
            out = np.empty_like(x)
        elif out.shape != x.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(
                f"UnaryKernel: out must be contiguous {self.dtype}{x.shape}, "
                f"got {out.dtype}{out.shape}"
            )
        self._fn(x.ctypes.data, out.ctypes.data, x.size)
        return out


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in float32 ulps (int64), counting along the ordered float32 bit patterns.

    +0 and -0 are 0 apart; two NaNs are 0 apart; NaN vs a number is 2^32 (always an error).
    """

    def ordered(v):
        bits = np.ascontiguousarray(v, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(2**31) - bits, bits)

    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    dist = np.abs(ordered(a) - ordered(b))
    a_nan, b_nan = np.isnan(a), np.isnan(b)
    dist[a_nan & b_nan] = 0
    dist[a_nan ^ b_nan] = 2**32
    return dist
