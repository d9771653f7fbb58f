"""The compiled RNN's native code alone: its entry function called in a loop, no Python call path.

    python -m bench.native_rnn                  # W1, W2, W3
    python -m bench.native_rnn --workloads W1 --rounds 200
    python -m bench.native_rnn --workloads W1 --spin 10    # then call it for 10 s (perf record)

Builds `mytorch.compile(seq)` for the tutorial RNN (bench/rnn.py's workloads and weights) from
this checkout, calls it once through Python and checks it against eager, then times
`native.call(pointers)` with the pointers of that call: the min and median over rounds of the
mean time per call. An empty native function called the same way gives the ctypes overhead
(included in the times). For W3, numpy's sgemm at 4096^3 is timed in the same rounds,
alternating with the RNN, so the GFLOP/s ratio compares like with like on a busy machine.
"""

from __future__ import annotations

import argparse
import ctypes
import time
from pathlib import Path

import numpy as np

import mytorch
from bench.common import WORKLOADS
from bench.rnn import make_case
from mytorch.codegen.runtime import NativeFunction

EMPTY_IR = "define void @entry(ptr %args) {\n  ret void\n}\n"
SGEMM_N = 4096


def compiled_runner(case):
    """The llvm runner of the case's sequence function, checked against eager; and the outputs
    of that call, which keep alive the buffers its pointers name."""
    compiled = mytorch.compile(case.seq)
    with mytorch.no_grad():
        outs, h = compiled(case.xs_tensor)
        ref_outs, ref_h = case.seq(case.xs_tensor)
    for got, want in ((outs.data, ref_outs.data), (h.data, ref_h.data)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return compiled._last.runner, (outs, h)


def calls_per_round(fn, seconds: float) -> int:
    n, elapsed = 1, 0.0
    while elapsed < seconds / 4:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t0
        n *= 2
    return max(1, int(n / 2 * seconds / max(elapsed, 1e-9)))


def timed_rounds(fns: dict, rounds: int, seconds: float) -> dict:
    """{name: [seconds per call, one per round]}, the functions alternating within each round."""
    counts = {name: calls_per_round(fn, seconds) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(counts[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / counts[name])
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument("--rounds", type=int, default=0, help="default: 100, 20, 5 by size")
    parser.add_argument("--spin", type=float, default=0.0, help="then call the last one this long")
    args = parser.parse_args()
    empty = NativeFunction(EMPTY_IR, "entry")
    dummy = (ctypes.c_void_p * 1)()
    overhead = min(timed_rounds({"empty": lambda: empty.call(dummy)}, 20, 0.01)["empty"])
    print(f"mytorch from {Path(mytorch.__file__).parent}")
    print(f"ctypes call of an empty native function: {overhead * 1e6:.2f} us (included below)")
    for name in args.workloads.split(","):
        w = WORKLOADS[name]
        runner, keep = compiled_runner(make_case(w))
        call, pointers = runner.native.call, runner.pointers
        fns = {name: lambda call=call, pointers=pointers: call(pointers)}
        if name == "W3":
            a = np.random.default_rng(0).standard_normal((SGEMM_N, SGEMM_N), dtype=np.float32)
            fns["sgemm"] = lambda a=a: a @ a
        big = w.flops > 1e9
        rounds = args.rounds or (5 if big else 20 if w.flops > 1e8 else 100)
        times = timed_rounds(fns, rounds, 0.3 if big else 0.02)
        best, median = min(times[name]), float(np.median(times[name]))
        line = f"{name}: native min {best * 1e6:10.2f} us  median {median * 1e6:10.2f} us  "
        line += f"{w.flops / best / 1e9:6.1f} GFLOP/s"
        if "sgemm" in times:
            peak = 2 * SGEMM_N**3 / min(times["sgemm"]) / 1e9
            ratio = w.flops / best / 1e9 / peak
            line += f"  ({ratio:.0%} of sgemm {SGEMM_N}^3: {peak:.1f} GFLOP/s)"
        print(line, flush=True)
        if args.spin:
            end = time.perf_counter() + args.spin
            while time.perf_counter() < end:
                call(pointers)
        del keep


if __name__ == "__main__":
    main()
