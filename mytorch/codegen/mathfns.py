"""Vectorizable float32 exp, tanh, log and sigmoid, emitted as plain LLVM IR arithmetic.

Each function takes an `ir.IRBuilder` and a `float` or `<n x float>` value and returns a value of
the same type. The code is straight-line: fadd/fmul/fdiv, `llvm.fma`, bitcasts, integer ops,
fcmp/select and intrinsics that lower to single instructions (`llvm.fabs`, `llvm.copysign`,
`llvm.minnum`, `llvm.maxnum`, `llvm.rint`). No calls and no branches, so LLVM's loop vectorizer
turns a loop over these into AVX-512/AVX2 code.
`double` values instead call `llvm.exp.f64`, `llvm.log.f64` and `llvm.tanh.f64` (libm); the
accuracy target below is for float32.

Method (float32 target: within 4 ulp, tanh 2 ulp, of float64 numpy rounded to float32 over every
input; `bench/math_accuracy.py` scans all 2^32 inputs):

- exp: clamp x to [-104, 89] (beyond that the result is 0 or inf anyway), n = rint(x/ln2),
  r = x - n*ln2 with ln2 split in two float32 halves and fma (|r| <= ln2/2), then
  exp(r) = 1 + r + r^2 * Q(r). The result is p * 2^n1 * 2^n2 with n1 + n2 = n: the first product
  is exact and the second rounds once, so overflow gives inf and underflow gives correctly
  scaled subnormals and 0. NaN is selected back at the end.
- tanh: odd, so work on a = |x| and copysign at the end (keeps -0). With m = expm1(-2a) in
  (-1, 0], tanh(a) = -m / (m + 2): one formula for every a, no cancellation (m + 2 is in
  [1, 2]). expm1(z) = 2^n (expm1(r) + 1) - 1 with z = n ln2 + r: m = 2^n em1 + (2^n - 1) and
  m + 2 = 2^n em1 + (2^n + 1) are each one fma from em1 = r + r^2 Q(r), so each rounds once
  (2^n -+ 1 are exact for n >= -24; below, tanh is within 2^-24 of 1) and em1's error is
  damped by 2^n. a is clamped at 9.02 (tanh rounds to 1 from ~9.011 on), so n is in [-26, 0]
  and r = z - n ln2 with ln2 rounded to float32 is exact by fma (the rest of ln2 only moves em1
  where 2^n damps it). n is the float32 rounding of z/ln2 + 1.5 * 2^23 + 128, whose low
  mantissa bits are n + 128: shifted left 23 they are 2^(n+1) (no float-int conversion; a NaN
  stays a NaN throughout). Subnormal inputs come back unchanged (r^2 underflows and -2a / 2 is
  exact). Three roundings (em1, m + 2, the quotient) make it 2 ulp at most, 1 ulp for all but
  0.006% of inputs (bench/math_accuracy.py).
- log: subnormal inputs are scaled by 2^23 first. The bits split x into 2^e * m with m in
  [sqrt(1/2), sqrt(2)). With f = m - 1 and s = f / (2 + f), log(m) = 2 atanh(s) =
  2s + s * R(s^2), R(z) = z * Q(z), rearranged as f - (f^2/2 - s * (f^2/2 + R)) so the large
  terms are exact and rounding only touches small corrections (the classic fdlibm arrangement).
  Then e * ln2 is added with fma. x = 0 -> -inf, x < 0 -> NaN, +inf -> inf, NaN -> NaN are
  selects.
- sigmoid: e = exp(-|x|) never overflows; sigmoid = 1 / (1 + e) for x >= 0 and e / (1 + e) for
  x < 0, so tiny (and subnormal) results for very negative x keep their relative accuracy.

Coefficients: Q polynomials are weighted minimax fits (relative error of the whole function) by
a discrete Remez exchange in numpy float64 over the reduced ranges, rounded to float32:
`python bench/math_accuracy.py --fit` re-derives and prints them. Fit errors (relative):
exp 3.3e-9 and expm1 1.4e-8 on |r| <= 0.35, log 8.7e-10 on s^2 <= 0.030, all well
under float32's 6e-8 ulp so the float32 rounding of the evaluation dominates.
"""

from __future__ import annotations

import math

from llvmlite import ir

F32 = ir.FloatType()
I32 = ir.IntType(32)

# exp(r) = 1 + r + r^2 * Q(r), |r| <= 0.35 (bench/math_accuracy.py --fit).
EXP_Q = (0.49999994, 0.16666515, 0.041668456, 0.008369419, 0.0013813145)
# expm1(r) = r + r^2 * Q(r), |r| <= 0.35 (tanh's).
EXPM1_Q = (0.49999997, 0.16666539, 0.041667223, 0.008367181, 0.0013882396)
# tanh rounds to 1 in float32 from ~9.0109 on.
TANH_CLAMP = 9.02
# Rounding z/ln2 + ROUND_SHIFT to float32 leaves n + 128 in the low mantissa bits (n = rint(z/ln2)):
# shifted into the exponent field, 2^(n+1).
ROUND_SHIFT = 1.5 * 2**23 + 128
# 2 atanh(s) = 2s + s * z * Q(z), z = s^2 <= 0.030.
LOG_Q = (0.6666678, 0.39976647, 0.2989783)

LOG2E = 1.0 / math.log(2.0)
# ln2 = LN2_HI + LN2_LO: LN2_HI is ln2 rounded to float32, LN2_LO the float32 remainder.
LN2_HI = 0.6931471824645996
LN2_LO = -1.9046542121259336e-09
# exp(x) is inf above ~88.72 and rounds to 0 below ~-103.97; clamping keeps n in [-150, 128].
EXP_CLAMP_LO = -104.0
EXP_CLAMP_HI = 89.0
# Bits of float32(sqrt(1/2)): subtracting them puts the mantissa in [sqrt(1/2), sqrt(2)).
SQRT_HALF_BITS = 0x3F3504F3
FLOAT32_MIN_NORMAL = 2.0**-126


def _check_float(x: ir.Value, fn: str) -> ir.Type:
    """The scalar element type of x (float or double); TypeError for anything else."""
    ty = x.type.element if isinstance(x.type, ir.VectorType) else x.type
    if not isinstance(ty, (ir.FloatType, ir.DoubleType)):
        raise TypeError(f"mathfns.{fn}: expected float, double or a vector of them, got {x.type}")
    return ty


def _like(x: ir.Value, scalar: ir.Type) -> ir.Type:
    """`scalar`, or a vector of it with as many lanes as x."""
    if isinstance(x.type, ir.VectorType):
        return ir.VectorType(scalar, x.type.count)
    return scalar


def _const(ty: ir.Type, value) -> ir.Constant:
    """A scalar constant, or a splat of it when ty is a vector type."""
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [value] * ty.count)
    return ir.Constant(ty, value)


def _intrinsic(builder: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """Call the overloaded intrinsic `name` on args of one type (declared on first use)."""
    ty = args[0].type
    # NOTE: Module.declare_intrinsic cannot name vector overloads, so build the suffix here.
    if isinstance(ty, ir.VectorType):
        suffix = f"v{ty.count}{ty.element.intrinsic_name}"
    else:
        suffix = ty.intrinsic_name
    full_name = f"{name}.{suffix}"
    module = builder.module
    fn = module.globals.get(full_name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ty, [ty] * len(args)), name=full_name)
    return builder.call(fn, args)


def _fma(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
    """a * b + c with one rounding."""
    return _intrinsic(builder, "llvm.fma", a, b, c)


def _poly(builder: ir.IRBuilder, t: ir.Value, coeffs: tuple[float, ...]) -> ir.Value:
    """sum(coeffs[k] * t^k) by Horner's rule with fma."""
    acc = _const(t.type, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = _fma(builder, acc, t, _const(t.type, c))
    return acc


def _select_nan(builder: ir.IRBuilder, x: ir.Value, result: ir.Value) -> ir.Value:
    """x where x is NaN (so NaN propagates), else result."""
    return builder.select(builder.fcmp_unordered("uno", x, x), x, result)


def _pow2(builder: ir.IRBuilder, n: ir.Value) -> ir.Value:
    """2^n as float32 for i32 n in [-126, 127], built directly from the exponent bits."""
    biased = builder.add(n, _const(n.type, 127))
    return builder.bitcast(builder.shl(biased, _const(n.type, 23)), _like(n, F32))


def exp(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x for a float (or vector) value; doubles call llvm.exp."""
    if isinstance(_check_float(x, "exp"), ir.DoubleType):
        return _intrinsic(builder, "llvm.exp", x)
    ty = x.type
    # minnum/maxnum turn NaN into a bound, so no NaN reaches fptosi (poison); it is restored below.
    xc = _intrinsic(builder, "llvm.maxnum", x, _const(ty, EXP_CLAMP_LO))
    xc = _intrinsic(builder, "llvm.minnum", xc, _const(ty, EXP_CLAMP_HI))
    n = _intrinsic(builder, "llvm.rint", builder.fmul(xc, _const(ty, LOG2E)))
    # For n != 0, |x| >= ln2/2, so x - n*LN2_HI is exact; only the LN2_LO step rounds.
    r = _fma(builder, builder.fneg(n), _const(ty, LN2_HI), xc)
    r = _fma(builder, builder.fneg(n), _const(ty, LN2_LO), r)
    q = _poly(builder, r, EXP_Q)
    p = builder.fadd(_fma(builder, builder.fmul(r, r), q, r), _const(ty, 1.0))
    # 2^n can leave the float32 exponent range (n in [-150, 128]); two halves cannot.
    k = builder.fptosi(n, _like(x, I32))
    k1 = builder.ashr(k, _const(k.type, 1))
    k2 = builder.sub(k, k1)
    y = builder.fmul(builder.fmul(p, _pow2(builder, k1)), _pow2(builder, k2))
    return _select_nan(builder, x, y)


def tanh(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """tanh(x) for a float (or vector) value; doubles call llvm.tanh."""
    if isinstance(_check_float(x, "tanh"), ir.DoubleType):
        return _intrinsic(builder, "llvm.tanh", x)
    ty = x.type
    # In terms of h = -em1/2 and rho = -r/2 (exact scalings): a clamped (an ordered compare: NaN
    # keeps going and comes out, inf becomes the bound), then rho = a + n ln2/2 with n <= 0, h =
    # rho + rho^2 Q'(rho), Q'(rho) = -2 Q(-2 rho), and 2^n em1 = -2^(n+1) h. Same roundings as
    # the formulas above, one multiply fewer.
    a = _intrinsic(builder, "llvm.fabs", x)
    highest = _const(ty, TANH_CLAMP)
    a = builder.select(builder.fcmp_ordered(">", a, highest), highest, a)
    shifted = _fma(builder, a, _const(ty, -2 * LOG2E), _const(ty, ROUND_SHIFT))
    n = builder.fsub(shifted, _const(ty, ROUND_SHIFT))
    rho = _fma(builder, n, _const(ty, LN2_HI / 2), a)  # exact
    coeffs = tuple(c * (-2) ** (k + 1) for k, c in enumerate(EXPM1_Q))
    h = _fma(builder, builder.fmul(rho, rho), _poly(builder, rho, coeffs), rho)
    ity = _like(x, I32)
    two_scale = builder.bitcast(builder.shl(builder.bitcast(shifted, ity), _const(ity, 23)), ty)
    half = _const(ty, 0.5)
    scale_m1 = _fma(builder, two_scale, half, _const(ty, -1.0))
    scale_p1 = _fma(builder, two_scale, half, _const(ty, 1.0))
    minus_two_scale = builder.fneg(two_scale)
    m = _fma(builder, minus_two_scale, h, scale_m1)
    m_plus_2 = _fma(builder, minus_two_scale, h, scale_p1)
    # A divide, not a reciprocal estimate and a correction: fewer uops, and the divider is
    # not the bottleneck of this loop (measured: as fast or faster).
    return _intrinsic(builder, "llvm.copysign", builder.fdiv(m, m_plus_2), x)


def log(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Natural log for a float (or vector) value; doubles call llvm.log."""
    if isinstance(_check_float(x, "log"), ir.DoubleType):
        return _intrinsic(builder, "llvm.log", x)
    ty = x.type
    ity = _like(x, I32)
    # Subnormals have no implicit leading 1; scaling by 2^23 makes them normal.
    is_sub = builder.fcmp_ordered("<", x, _const(ty, FLOAT32_MIN_NORMAL))
    xs = builder.select(is_sub, builder.fmul(x, _const(ty, 2.0**23)), x)
    bias = builder.select(is_sub, _const(ity, 23), _const(ity, 0))
    bits = builder.bitcast(xs, ity)
    e = builder.ashr(builder.sub(bits, _const(ity, SQRT_HALF_BITS)), _const(ity, 23))
    m = builder.bitcast(builder.sub(bits, builder.shl(e, _const(ity, 23))), ty)
    ef = builder.sitofp(builder.sub(e, bias), ty)
    f = builder.fsub(m, _const(ty, 1.0))  # exact: m is within a factor 2 of 1
    s = builder.fdiv(f, builder.fadd(f, _const(ty, 2.0)))
    z = builder.fmul(s, s)
    big_r = builder.fmul(z, _poly(builder, z, LOG_Q))
    half_f2 = builder.fmul(builder.fmul(f, f), _const(ty, 0.5))
    # log1p(f) + e*LN2_LO = f - (f^2/2 - (s*(f^2/2 + R) + e*LN2_LO))
    correction = _fma(
        builder, s, builder.fadd(half_f2, big_r), builder.fmul(ef, _const(ty, LN2_LO))
    )
    log1p_f = builder.fsub(f, builder.fsub(half_f2, correction))
    y = _fma(builder, ef, _const(ty, LN2_HI), log1p_f)
    # Special inputs: the bit manipulation above is meaningless for them.
    y = builder.select(builder.fcmp_ordered("==", x, _const(ty, math.inf)), x, y)
    y = builder.select(builder.fcmp_ordered("==", x, _const(ty, 0.0)), _const(ty, -math.inf), y)
    y = builder.select(builder.fcmp_ordered("<", x, _const(ty, 0.0)), _const(ty, math.nan), y)
    return _select_nan(builder, x, y)


def sigmoid(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1 / (1 + e^-x) for a float or double (or vector) value, without overflow."""
    _check_float(x, "sigmoid")
    ty = x.type
    # e = exp(-|x|) <= 1: no overflow, and e / (1 + e) keeps tiny results for negative x accurate.
    e = exp(builder, builder.fneg(_intrinsic(builder, "llvm.fabs", x)))
    is_negative = builder.fcmp_ordered("<", x, _const(ty, 0.0))
    numerator = builder.select(is_negative, e, _const(ty, 1.0))
    return builder.fdiv(numerator, builder.fadd(e, _const(ty, 1.0)))
