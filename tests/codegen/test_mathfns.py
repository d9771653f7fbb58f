"""float32 exp/tanh/log/sigmoid from mytorch.codegen.mathfns: JIT-compiled loops vs float64 numpy.

A million inputs per function (random bit patterns over every exponent plus dense samples of the
tricky regions), special values, NaN propagation, and a check that the loop really vectorized.
`bench/math_accuracy.py` runs the exhaustive 2^32 scan.
"""

from __future__ import annotations

import ctypes
import faulthandler
import sys
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

# NOTE: make the sibling helper importable however pytest names this module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from jit_harness import UnaryKernel, jit, ulp_distance  # noqa: E402

from mytorch.codegen import mathfns  # noqa: E402

faulthandler.enable()

MAX_ULP = {"exp": 4, "tanh": 2, "log": 4, "sigmoid": 4}
FUNCTIONS = ("exp", "tanh", "log", "sigmoid")
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal
F32_SUB = float(np.finfo(np.float32).smallest_subnormal)


def sigmoid64(x: np.ndarray) -> np.ndarray:
    """Sigmoid in float64 without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e, 1.0) / (1.0 + e)


REFERENCES = {"exp": np.exp, "tanh": np.tanh, "log": np.log, "sigmoid": sigmoid64}


def reference(name: str, x: np.ndarray) -> np.ndarray:
    """float64 numpy rounded to float32."""
    with np.errstate(all="ignore"):
        return REFERENCES[name](x.astype(np.float64)).astype(np.float32)


@pytest.fixture(scope="module")
def kernels() -> dict[str, UnaryKernel]:
    """One compiled float32 loop per function (compiling takes ~0.1 s each)."""
    return {name: UnaryKernel(getattr(mathfns, name)) for name in FUNCTIONS}


def uniform(rng, lo: float, hi: float, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float32)


def sample_inputs(name: str, n: int = 1_000_000, seed: int = 0) -> np.ndarray:
    """~n float32 inputs: random bit patterns (every exponent, both signs, NaNs, infs,
    subnormals) plus dense samples around the regions where `name` is hard."""
    rng = np.random.default_rng(seed)
    quarter = n // 4
    random_bits = rng.integers(0, 2**32, 2 * quarter, dtype=np.uint64).astype(np.uint32)
    parts = [
        random_bits.view(np.float32),
        uniform(rng, -1, 1, quarter // 4),
        # every subnormal magnitude class, both signs
        (
            rng.integers(1, 2**23, quarter // 8, dtype=np.uint32)
            | rng.choice(np.array([0, 2**31], dtype=np.uint32), quarter // 8)
        ).view(np.float32),
    ]
    rest = quarter - quarter // 4 - quarter // 8
    regions = {
        # tanh: expm1's n = 0 range (|x| < ln2/4, the least accurate) and the approach to 1
        "tanh": [(-0.2, 0.2), (8.0, 9.5), (-9.5, -8.0), (-20, 20)],
        # exp: overflow at ~88.72, the subnormal range and underflow at ~-87.34 / -103.97
        "exp": [(88, 89), (-88, -86.5), (-105, -87), (-5, 5)],
        # log: near 1, tiny normals, huge values
        "log": [(0.9, 1.1), (0.999, 1.001), (0, 4 * F32_TINY), (1e30, F32_MAX)],
        # sigmoid: the subnormal tail for very negative x, and its switch at 0
        "sigmoid": [(-105, -86), (-20, 20), (-1e-3, 1e-3), (15, 20)],
    }[name]
    parts += [uniform(rng, lo, hi, rest // len(regions)) for lo, hi in regions]
    parts.append(np.exp(rng.uniform(-20, 20, n - sum(p.size for p in parts))).astype(np.float32))
    return np.concatenate(parts)


SPECIALS = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0]
    + [F32_MAX, -F32_MAX, F32_TINY, -F32_TINY, F32_SUB, -F32_SUB]
    + [88.72283, 88.72284, -87.33655, -103.97208, -103.97209]  # exp overflow/underflow edges
    + [9.010913, -9.010913, 9.02, 0.17328680, -0.17328681],  # tanh: rounds to 1, clamp, n = -1
    dtype=np.float32,
)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_max_ulp_error_on_a_million_samples(kernels, name):
    x = sample_inputs(name)
    got = kernels[name](x)
    want = reference(name, x)
    dist = ulp_distance(got, want)
    worst = int(np.argmax(dist))
    assert dist[worst] <= MAX_ULP[name], (
        f"{name}({x[worst]!r}) = {got[worst]!r}, reference {want[worst]!r}: "
        f"{dist[worst]} ulp > {MAX_ULP[name]}"
    )


@pytest.mark.parametrize("name", FUNCTIONS)
def test_special_values_match_reference_including_zero_signs(kernels, name):
    got = kernels[name](SPECIALS)
    want = reference(name, SPECIALS)
    assert ulp_distance(got, want).max() <= MAX_ULP[name], list(
        zip(SPECIALS, got, want, strict=True)
    )
    exact_zero = want == 0
    np.testing.assert_array_equal(np.signbit(got[exact_zero]), np.signbit(want[exact_zero]))


def test_documented_special_cases(kernels):
    x = np.array([-np.inf, np.inf, -0.0, 0.0, -1.0, -F32_SUB], dtype=np.float32)
    exp, tanh, log = (kernels[n](x) for n in ("exp", "tanh", "log"))
    np.testing.assert_array_equal(exp[:4], [0.0, np.inf, 1.0, 1.0])
    np.testing.assert_array_equal(tanh[:3], [-1.0, 1.0, -0.0])
    assert np.signbit(tanh[2]) and not np.signbit(tanh[3])
    np.testing.assert_array_equal(log[1:4], [np.inf, -np.inf, -np.inf])
    assert np.isnan(log[0]) and np.isnan(log[4]) and np.isnan(log[5])
    np.testing.assert_array_equal(kernels["sigmoid"](x[:3]), [0.0, 1.0, 0.5])


def test_overflow_underflow_and_subnormal_results(kernels):
    x = np.array([88.72283, 88.72284, -87.0, -100.0, -103.972, -104.0], dtype=np.float32)
    got = kernels["exp"](x)
    assert np.isfinite(got[0]) and got[1] == np.inf
    assert 0 < got[3] < F32_TINY and 0 < got[4] < F32_TINY  # subnormal, not flushed
    assert got[5] == 0.0
    assert 0 < kernels["sigmoid"](np.array([-100.0], dtype=np.float32))[0] < F32_TINY


@pytest.mark.parametrize("name", FUNCTIONS)
def test_nan_in_nan_out(kernels, name):
    rng = np.random.default_rng(1)
    # every NaN payload class: quiet and signalling, both signs
    payload = rng.integers(1, 2**23, 1000, dtype=np.uint32)
    sign = rng.choice(np.array([0, 2**31], dtype=np.uint32), 1000)
    nans = (np.uint32(0x7F800000) | payload | sign).view(np.float32)
    assert np.isnan(kernels[name](nans)).all()


def test_vector_operands_match_the_scalar_loop(kernels):
    """The API accepts <n x float> directly; lanes must equal the scalar (loop) results."""
    lanes = 8
    vec = ir.VectorType(ir.FloatType(), lanes)
    module = ir.Module()
    module.triple = llvm.get_process_triple()
    for name in FUNCTIONS:
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * 2), name)
        builder = ir.IRBuilder(fn.append_basic_block())
        value = builder.load(fn.args[0], typ=vec, align=4)
        builder.store(getattr(mathfns, name)(builder, value), fn.args[1], align=4)
        builder.ret_void()
    compiled = jit(module)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
    x = np.array([-100.0, -9.5, -0.3, -0.0, 1e-40, 0.7, 20.0, np.nan], dtype=np.float32)
    for name in FUNCTIONS:
        out = np.empty_like(x)
        proto(compiled.address(name))(x.ctypes.data, out.ctypes.data)
        np.testing.assert_array_equal(out, kernels[name](x), err_msg=name)


def vector_loop(emit, lanes: int):
    """`f(x)`: emit applied to <lanes x float> vectors of a float32 array (a multiple of lanes)."""
    f32, i64 = ir.FloatType(), ir.IntType(64)
    vec = ir.VectorType(f32, lanes)
    module = ir.Module()
    module.triple = llvm.get_process_triple()
    fn_type = ir.FunctionType(ir.VoidType(), [ir.PointerType(), ir.PointerType(), i64])
    fn = ir.Function(module, fn_type, name="f")
    src, dst, n = fn.args
    entry, loop, done = (fn.append_basic_block(name) for name in ("entry", "loop", "done"))
    builder = ir.IRBuilder(entry)
    builder.branch(loop)
    builder.position_at_end(loop)
    i = builder.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    value = builder.load(builder.gep(src, [i], source_etype=f32), typ=vec, align=4)
    builder.store(emit(builder, value), builder.gep(dst, [i], source_etype=f32), align=4)
    i_next = builder.add(i, ir.Constant(i64, lanes))
    i.add_incoming(i_next, loop)
    builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
    builder.position_at_end(done)
    builder.ret_void()
    compiled = jit(module, prefer_512bit=True)
    call = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        compiled.address("f")
    )

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x[: x.size // lanes * lanes])
        out = np.empty_like(x)
        call(x.ctypes.data, out.ctypes.data, x.size)
        return out

    run.compiled = compiled
    return run


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_tanh_on_vectors_within_max_ulp(lanes):
    """The kernels call tanh on whole vectors (a fused activation): every width within the
    bound, bit for bit the scalar loop the vectorizer widens."""
    run = vector_loop(mathfns.tanh, lanes)
    x = np.concatenate([sample_inputs("tanh"), SPECIALS, np.zeros(lanes, np.float32)])
    got = run(x)
    want = reference("tanh", x[: got.size])
    dist = ulp_distance(got, want)
    worst = int(np.argmax(dist))
    assert dist[worst] <= MAX_ULP["tanh"], (
        f"tanh({x[worst]!r}) = {got[worst]!r}, want {want[worst]!r}"
    )
    zero = want == 0
    np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]))
    np.testing.assert_array_equal(got, UnaryKernel(mathfns.tanh)(x[: got.size]))


def test_tanh_dense_scan_is_odd_monotone_and_within_2_ulp(kernels):
    """Every 251st float32 from the smallest subnormal to past where tanh rounds to 1 (~2^22
    inputs, every low-bit pattern; `bench/math_accuracy.py` scans all of them)."""
    stop = int(np.array(9.1, np.float32).view(np.uint32))
    x = np.arange(1, stop, 251, dtype=np.uint32).view(np.float32)
    got = kernels["tanh"](x)
    dist = ulp_distance(got, reference("tanh", x))
    worst = int(np.argmax(dist))
    assert dist[worst] <= 2, f"tanh({x[worst]!r}) = {got[worst]!r}: {dist[worst]} ulp"
    assert (np.diff(got) >= 0).all() and got[-1] == 1.0
    np.testing.assert_array_equal(kernels["tanh"](-x), -got)


def test_tanh_returns_tiny_inputs_unchanged_and_saturates_exactly(kernels):
    """Below 2^-25 (subnormals too) -m / (m + 2) is exactly x; up to ~2^-12 tanh(x) rounds to x
    but the three roundings may leave it an ulp away (within the bound)."""
    rng = np.random.default_rng(2)
    subnormal = rng.integers(1, 2**23, 1000, dtype=np.uint32).view(np.float32)
    tiny = np.concatenate([subnormal, rng.uniform(-(2.0**-25), 2.0**-25, 1000).astype(np.float32)])
    np.testing.assert_array_equal(kernels["tanh"](tiny), tiny)
    np.testing.assert_array_equal(kernels["tanh"](-tiny), -tiny)
    big = np.array([9.02, 10.0, 88.0, 1e10, F32_MAX, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(kernels["tanh"](big), np.ones_like(big))
    np.testing.assert_array_equal(kernels["tanh"](-big), -np.ones_like(big))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_double_inputs_use_libm_intrinsics(name):
    kernel = UnaryKernel(getattr(mathfns, name), dtype=np.float64)
    intrinsic = {"exp": "llvm.exp.f64", "tanh": "llvm.tanh.f64", "log": "llvm.log.f64"}
    assert intrinsic.get(name, "llvm.exp.f64") in kernel.jit.llvm_ir
    x = np.linspace(-30, 30, 1001) if name != "log" else np.geomspace(1e-300, 1e300, 1001)
    with np.errstate(all="ignore"):
        want = REFERENCES[name](x)
    np.testing.assert_allclose(kernel(x), want, rtol=1e-14, atol=0)


def test_rejects_non_float_values():
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]), "g")
    builder = ir.IRBuilder(fn.append_basic_block())
    with pytest.raises(TypeError, match="i32"):
        mathfns.exp(builder, fn.args[0])


def _host_has(feature: str) -> bool:
    return f"+{feature}" in llvm.get_host_cpu_features().flatten().split(",")


@pytest.mark.skipif(not _host_has("avx2"), reason="host has no AVX2")
@pytest.mark.parametrize("name", FUNCTIONS)
def test_loop_vectorizes_without_calls(kernels, name):
    compiled = kernels[name].jit
    assert "<8 x float>" in compiled.optimized_ir or "<16 x float>" in compiled.optimized_ir
    assert "call" not in compiled.asm, "the loop must not call out (libm or otherwise)"


@pytest.mark.skipif(not _host_has("avx512f"), reason="host has no AVX-512")
def test_loop_uses_512_bit_vectors_when_asked():
    compiled = UnaryKernel(mathfns.tanh, prefer_512bit=True).jit
    assert "<16 x float>" in compiled.optimized_ir
    assert "zmm" in compiled.asm
