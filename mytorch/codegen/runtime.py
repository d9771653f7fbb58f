"""Native code at run time: LLVM initialization, O3 optimization for the host CPU, the JIT, and
the guarded call from Python into a compiled graph.

The entry function of every compiled graph is `void f(ptr* args)`: one array of buffer pointers
(inputs, then parameters, outputs, workspace). Every argument's type, dtype, shape, contiguity
and alignment is checked before the call, by the native binder (binder.py) or by
`Signature.check`, so native code never sees a buffer it did not expect.
"""

from __future__ import annotations

import ctypes
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..ops.registry import TensorType, fmt


@functools.cache
def llvm():
    """llvmlite's binding layer, initialized once (lazily, so `import mytorch` stays fast)."""
    import llvmlite.binding as binding

    binding.initialize_native_target()
    binding.initialize_native_asmprinter()
    return binding


def target_machine(opt: int = 3):
    """A target machine for the host CPU by name and features (so AVX-512 is used).

    NOTE: a new one per JIT engine: the engine takes ownership of its target machine.
    """
    binding = llvm()
    target = binding.Target.from_triple(binding.get_process_triple())
    features = binding.get_host_cpu_features().flatten()
    if "+avx512f" in features:
        # LLVM tunes recent Intel cores to split 512-bit vectors in two; our kernels are written
        # for full AVX-512 registers (measured ~25% faster here).
        features += ",-prefer-256-bit"
    return target.create_target_machine(
        cpu=binding.get_host_cpu_name(),
        features=features,
        opt=opt,
        jit=True,
    )


# LLVM's optimization pipeline for every module.
PIPELINE = {
    "speed_level": 3,
    "loop_vectorization": True,
    # Our kernels are vectorized as emitted: SLP changed no instruction of the bench's or the
    # names example's modules, and took ~13% of LLVM's time on them (callgrind).
    "slp_vectorization": False,
    # NOTE: LLVM's unroller multiplies code size (and compile time) by ~8 on our many short
    # loops; the kernels that need unrolling (the GEMM micro-kernel) unroll explicitly.
    "loop_unrolling": False,
}


@functools.cache
def host_features() -> frozenset[str]:
    """The host CPU's enabled features: {'avx2', 'avx512f', 'fma', ...}."""
    flat = llvm().get_host_cpu_features().flatten()
    return frozenset(f[1:] for f in flat.split(",") if f.startswith("+"))


@dataclass
class Artifacts:
    """What the build produced, kept for teaching and dumps (assembly made on first request).
    A graph's entry module comes first, then the shared kernel modules it calls (`parts`)."""

    llvm_ir_raw: str
    llvm_ir: str
    parts: tuple[Artifacts, ...] = ()

    @classmethod
    def joined(cls, parts: list[Artifacts]) -> Artifacts:
        raw = "\n".join(p.llvm_ir_raw for p in parts)
        return cls(raw, "\n".join(p.llvm_ir for p in parts), tuple(parts))

    @functools.cached_property
    def asm(self) -> str:
        if self.parts:
            return "\n".join(p.asm for p in self.parts)
        module = llvm().parse_assembly(self.llvm_ir)
        return target_machine().emit_assembly(module)


class NativeCode:
    """One LLVM module, optimized and JIT-compiled: an entry function and the new kernels it calls.

    A build's kernel modules (`kernels`: symbol -> IR whose function `kernel` is renamed to the
    symbol) are linked into its entry module, so that LLVM's fixed costs per module (pipeline,
    engine, code emission) are paid once per build, and a helper several of them define (a
    packing or activation function: the same name, the same text) is optimized and emitted once.
    Keeps its engine alive as long as it lives.
    """

    def __init__(self, llvm_ir: str, kernels: Mapping[str, str] | None = None):
        binding = llvm()
        module = binding.parse_assembly(llvm_ir)
        helpers: dict[str, str] = {}
        _share_helpers(module, llvm_ir, helpers)
        raw = [llvm_ir]
        for symbol, text in (kernels or {}).items():
            text = _KERNEL.sub(f'@"{symbol}"(', text)
            part = binding.parse_assembly(text)
            # Optimized on its own, as every caller sees it (not inlined into this entry).
            part.get_function(symbol).add_function_attribute("noinline")
            _share_helpers(part, text, helpers)
            module.link_in(part)
            raw.append(text)
        for fn in module.functions:
            if fn.linkage == binding.Linkage.linkonce_odr:
                fn.linkage = binding.Linkage.internal  # one copy left: a module's own again
        module.verify()
        tm = target_machine()
        options = binding.create_pipeline_tuning_options(speed_level=PIPELINE["speed_level"])
        for name, value in PIPELINE.items():
            setattr(options, name, value)
        builder = binding.create_pass_builder(tm, options)
        builder.getModulePassManager().run(module, builder)
        self.engine = binding.create_mcjit_compiler(module, tm)
        self.engine.finalize_object()
        self.artifacts = Artifacts("\n".join(raw), str(module))

    def address(self, name: str) -> int:
        address = self.engine.get_function_address(name)
        if not address:
            raise AssertionError(f"JIT gave no address for {name}")
        return address


# A kernel module's function, as emitted (see `NativeCode`).
_KERNEL = re.compile(r'@"?kernel"?\(')
# An internal function's definition in llvmlite's text: its name, then its whole text.
_DEFINE = re.compile(r'^define internal [^\n]*?@"?([^"(\s]+)"?\(.*?^\}$', re.M | re.S)


# A global used as a value (not called): what a function's text does not show.
_GLOBAL_VALUE = re.compile(r'@"?[^"(\s]+"?(?!\()(?:[\s,)\]]|$)')


def _share_helpers(module, text: str, helpers: dict[str, str]) -> None:
    """Give `module`'s internal functions linkonce_odr linkage, so that linking keeps one copy of
    each, unless a function of the same name seen before (`helpers`: name -> text) differs or it
    reads a global (whose contents its text does not show)."""
    linkonce = llvm().Linkage.linkonce_odr
    for found in _DEFINE.finditer(text):
        name, body = found.group(1), found.group(0)
        if _GLOBAL_VALUE.search(body.split("\n", 1)[1]):
            continue
        if helpers.setdefault(name, body) == body:
            module.get_function(name).linkage = linkonce


class NativeFunction:
    """A JIT-compiled `void f(ptr* args)`: `name` in `code`, or in a module of its own made from
    `llvm_ir`; keeps its code alive, and `keep`: what its code calls into (shared kernels)."""

    def __init__(self, llvm_ir: str | None, name: str, keep=(), code: NativeCode | None = None):
        self.keep = keep
        self.code = code or NativeCode(llvm_ir)
        self.address = self.code.address(name)
        self.call = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self.address)
        self.artifacts = self.code.artifacts


class Signature:
    """The buffers a native function expects, checked before every call."""

    def __init__(self, names: list[str], types: list[TensorType]):
        self.names = names
        self.types = types
        self.dtypes = [np.dtype(t.dtype) for t in types]
        self.shapes = [tuple(t.shape) for t in types]

    def check(self, arrays) -> list[np.ndarray]:
        """The arrays, as C-contiguous aligned ones (copies where needed); a clear error for a
        wrong count, type, dtype or shape."""
        arrays = list(arrays)
        if len(arrays) != len(self.types):
            raise TypeError(f"expected {len(self.types)} arrays, got {len(arrays)}")
        out = []
        for name, dtype, shape, a in zip(self.names, self.dtypes, self.shapes, arrays, strict=True):
            if type(a) is not np.ndarray:
                raise TypeError(f"argument {name!r} must be a numpy array, got {type(a).__name__}")
            if a.dtype != dtype:
                raise TypeError(f"argument {name!r} must have dtype {dtype}, got {a.dtype}")
            if a.shape != shape:
                raise ValueError(
                    f"argument {name!r} must have shape {fmt(shape)}, got {fmt(a.shape)}"
                )
            # Kernels load whole elements: an unaligned array is copied like a strided one.
            odd = not (a.flags.c_contiguous and a.flags.aligned)
            out.append(np.array(a, order="C") if odd else a)
        return out
