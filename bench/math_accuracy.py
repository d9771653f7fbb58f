"""Exhaustive accuracy and throughput of mytorch.codegen.mathfns (float32 exp, tanh, log, sigmoid).

    python -m bench.math_accuracy                  # all 2^32 inputs per function, then timings
    python -m bench.math_accuracy --bits 28        # a strided 2^28 subset (quicker)
    python -m bench.math_accuracy --fit            # re-derive the polynomial coefficients

The reference is numpy in float64 rounded to float32. Errors are ulp distances along the ordered
float32 bit patterns (NaN vs number counts as 2^32). Timings are medians over repeats on 2^20
elements: the JIT-compiled loop (LLVM's default vector width, and 512-bit) vs numpy float32.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The JIT harness lives with the tests it serves; tests/ is not a package.
sys.path.insert(0, str(REPO / "tests" / "codegen"))

from jit_harness import UnaryKernel, ulp_distance  # noqa: E402

from mytorch.codegen import mathfns  # noqa: E402

FUNCTIONS = ("exp", "tanh", "log", "sigmoid")


def sigmoid64(x: np.ndarray) -> np.ndarray:
    """Sigmoid in float64 without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e, 1.0) / (1.0 + e)


REFERENCES = {"exp": np.exp, "tanh": np.tanh, "log": np.log, "sigmoid": sigmoid64}


def reference(name: str, x: np.ndarray) -> np.ndarray:
    """The float64 reference rounded to float32."""
    with np.errstate(all="ignore"):
        return REFERENCES[name](x.astype(np.float64)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Exhaustive scan


def scan_chunk(kernel: UnaryKernel, name: str, start: int, size: int, stride: int) -> dict:
    """Errors over the bit patterns start, start+stride, ... (size of them)."""
    bits = (np.arange(size, dtype=np.uint64) * stride + start).astype(np.uint32)
    x = bits.view(np.float32)
    got = kernel(x)
    want = reference(name, x)
    # Most results match bit for bit; measure distances only where they do not (much faster).
    differ = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    dist = ulp_distance(got[differ], want[differ])
    zeros = differ[want[differ] == 0]
    worst = differ[np.argmax(dist)] if dist.size else 0
    return {
        "max": int(dist.max(initial=0)),
        "x": x[worst],
        "got": got[worst],
        "want": want[worst],
        "above1": int(np.count_nonzero(dist > 1)),
        "above2": int(np.count_nonzero(dist > 2)),
        "sign": int(np.count_nonzero(np.signbit(got[zeros]) != np.signbit(want[zeros]))),
    }


def scan(name: str, bits: int, chunk_bits: int, workers: int) -> None:
    """Scan 2^bits evenly strided float32 patterns (all of them for bits=32) and print a line."""
    kernel = UnaryKernel(getattr(mathfns, name))
    stride = 2 ** (32 - bits)
    chunk = 2 ** min(chunk_bits, bits)
    starts = [k * chunk * stride for k in range(2**bits // chunk)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda s: scan_chunk(kernel, name, s, chunk, stride), starts))
    worst = max(results, key=lambda r: r["max"])
    above1 = sum(r["above1"] for r in results)
    above2 = sum(r["above2"] for r in results)
    sign = sum(r["sign"] for r in results)
    print(
        f"{name:8s} inputs=2^{bits} max_ulp={worst['max']} at x={worst['x']!r} "
        f"(got {worst['got']!r}, want {worst['want']!r}) >1ulp={above1} >2ulp={above2} "
        f"zero_sign_errors={sign} [{time.perf_counter() - t0:.0f} s]",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# Throughput


def median_ns_per_element(fn, x: np.ndarray, repeats: int = 50) -> float:
    """Median wall time of fn(x) per element, in ns."""
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / x.size * 1e9


def numpy_sigmoid32(x: np.ndarray) -> np.ndarray:
    """The usual numpy float32 expression."""
    return 1.0 / (1.0 + np.exp(-x))


def throughput() -> None:
    """Print ns/element for the native loops and numpy float32 on 2^20 typical inputs."""
    rng = np.random.default_rng(0)
    n = 2**20
    inputs = {
        "exp": rng.uniform(-80, 80, n).astype(np.float32),
        "tanh": rng.uniform(-10, 10, n).astype(np.float32),
        "log": np.exp(rng.uniform(-20, 20, n)).astype(np.float32),
        "sigmoid": rng.uniform(-20, 20, n).astype(np.float32),
    }
    numpy_fns = {"exp": np.exp, "tanh": np.tanh, "log": np.log, "sigmoid": numpy_sigmoid32}
    print(f"throughput, {n} float32 elements, median ns/element:")
    print(f"{'':8s} {'llvm default':>13s} {'llvm 512-bit':>13s} {'numpy f32':>10s}")
    for name in FUNCTIONS:
        x = inputs[name]
        out = np.empty_like(x)
        default = UnaryKernel(getattr(mathfns, name))
        wide = UnaryKernel(getattr(mathfns, name), prefer_512bit=True)
        row = [
            median_ns_per_element(lambda a, k=default, o=out: k(a, o), x),
            median_ns_per_element(lambda a, k=wide, o=out: k(a, o), x),
            median_ns_per_element(numpy_fns[name], x),
        ]
        print(f"{name:8s} {row[0]:13.3f} {row[1]:13.3f} {row[2]:10.3f}")


# ---------------------------------------------------------------------------------------------
# Coefficient fits


def remez(g, w, lo: float, hi: float, degree: int, grid: int = 40001, iters: int = 50):
    """Minimize max |w(t) (g(t) - P(t))| over polynomials P of `degree` on [lo, hi].

    Discrete Remez exchange on a Chebyshev-spaced grid: solve for P and the levelled error E on
    degree + 2 reference points with alternating signs, move the references to the extrema of
    the error (one per run of constant sign), repeat until the max error equals |E|.
    Returns (coefficients, lowest degree first; max weighted error).
    """
    t = lo + (hi - lo) * (1 - np.cos(np.linspace(0, np.pi, grid))) / 2
    target, weight = g(t), w(t)
    m = degree + 2
    ref = np.round((grid - 1) * (1 - np.cos(np.linspace(0, np.pi, m))) / 2).astype(int)
    powers = np.vander(t, degree + 1, increasing=True)
    signs = (-1.0) ** np.arange(m)
    for _ in range(iters):
        # Rows: w_i P(t_i) + (-1)^i E = w_i g(t_i); written this way a zero weight is harmless.
        system = np.hstack([weight[ref, None] * powers[ref], signs[:, None]])
        solution = np.linalg.solve(system, weight[ref] * target[ref])
        coeffs, level = solution[:-1], abs(solution[-1])
        err = weight * (target - powers @ coeffs)
        sign = np.where(err >= 0, 1, -1)
        runs = np.split(np.arange(grid), np.flatnonzero(np.diff(sign)) + 1)
        extrema = np.array([run[np.argmax(np.abs(err[run]))] for run in runs])
        while len(extrema) > m:  # drop the smaller end until m alternating points remain
            smaller_first = abs(err[extrema[0]]) < abs(err[extrema[-1]])
            extrema = extrema[1:] if smaller_first else extrema[:-1]
        if len(extrema) < m:
            break
        ref = extrema
        if np.max(np.abs(err)) <= level * (1 + 1e-9):
            break
    return coeffs, float(np.max(np.abs(err)))


def _series_or(t, small: float, series, exact):
    """series(t) where t < small (the exact form cancels there), else exact(t)."""
    out = np.empty_like(t)
    near = t < small
    out[near] = series(t[near])
    out[~near] = exact(t[~near])
    return out


def fit() -> None:
    """Re-derive EXP_Q, EXPM1_Q and LOG_Q and compare them with mathfns."""
    # exp(r) = 1 + r + r^2 Q(r) on |r| <= ln2/2 (+1% for the rounding of x/ln2); relative error.
    r_max = 1.01 * np.log(2.0) / 2

    def exp_target(r):
        # Q(r) = (e^r - 1 - r) / r^2; its series near 0, where the division cancels.
        out = 0.5 + r / 6 + r**2 / 24 + r**3 / 120
        far = np.abs(r) >= 1e-4
        out[far] = (np.expm1(r[far]) - r[far]) / r[far] ** 2
        return out

    fits = {
        "EXP_Q": remez(exp_target, lambda r: r * r / np.exp(r), -r_max, r_max, 4),
    }

    # expm1(r) = r + r^2 Q(r) on the same range (tanh's); relative error of expm1.
    def expm1_target(r):
        out = 0.5 + r / 6 + r**2 / 24 + r**3 / 120
        far = np.abs(r) >= 1e-4
        out[far] = (np.expm1(r[far]) - r[far]) / r[far] ** 2
        return out

    def expm1_weight(r):
        # r^2 / |expm1(r)|, which is |r| / (1 + r/2 + ...) near 0
        safe = np.where(r == 0, 1.0, r)
        return np.where(r == 0, 0.0, np.abs(safe**2 / np.expm1(safe)))

    fits["EXPM1_Q"] = remez(expm1_target, expm1_weight, -r_max, r_max, 4)

    # 2 atanh(s) = 2s + s z Q(z), z = s^2, |s| <= (sqrt2 - 1)/(sqrt2 + 1) (+2% margin).
    s_max = (np.sqrt(2) - 1) / (np.sqrt(2) + 1)

    def log_target(z):
        def exact(u):
            s = np.sqrt(u)
            return 2 * (np.arctanh(s) / s - 1) / u

        return _series_or(z, 1e-5, lambda u: 2 / 3 + 2 * u / 5 + 2 * u**2 / 7 + 2 * u**3 / 9, exact)

    def log_weight(z):
        s = np.sqrt(np.maximum(z, 1e-300))
        return np.where(z > 0, z / 2 / (np.arctanh(s) / s), 0.0)

    fits["LOG_Q"] = remez(log_target, log_weight, 0.0, 1.02 * s_max**2, 2)

    for const, (coeffs, err) in fits.items():
        rounded = tuple(float(np.float32(c)) for c in coeffs)
        current = tuple(float(np.float32(c)) for c in getattr(mathfns, const))
        text = ", ".join(str(np.float32(c)) for c in coeffs)
        status = "matches mathfns" if rounded == current else "DIFFERS from mathfns"
        print(f"{const} = ({text})  # max rel error {err:.2g}, {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="re-derive polynomial coefficients")
    parser.add_argument("--bits", type=int, default=32, help="scan 2^BITS strided inputs")
    parser.add_argument("--chunk-bits", type=int, default=20, help="2^CHUNK_BITS per chunk")
    parser.add_argument("--workers", type=int, default=2, help="threads for the scan")
    parser.add_argument("--functions", default=",".join(FUNCTIONS))
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    if args.fit:
        fit()
        return
    import llvmlite
    import llvmlite.binding as llvm

    print(
        f"{platform.processor() or platform.machine()}, host cpu {llvm.get_host_cpu_name()}, "
        f"llvmlite {llvmlite.__version__} (LLVM {'.'.join(map(str, llvm.llvm_version_info))}), "
        f"numpy {np.__version__}"
    )
    for name in args.functions.split(","):
        scan(name, args.bits, args.chunk_bits, args.workers)
    if not args.no_timing:
        throughput()


if __name__ == "__main__":
    main()
