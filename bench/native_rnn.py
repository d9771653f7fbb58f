"""The compiled RNN's native code alone: its entry function called in a loop, no Python call path.

    python bench/native_rnn.py                  # W1, W2, W3
    python bench/native_rnn.py --workloads W1 --repeat 50
    python bench/native_rnn.py --workloads W1 --spin 10    # call it for 10 s (for perf record)

Builds `mytorch.compile(seq)` for the tutorial RNN (bench/rnn.py's workloads and weights), calls it
once through Python and checks it against eager, then times `native.call(pointers)` with the
pointers of that call. An empty native function, called the same way, gives the ctypes overhead,
shown apart. Alongside it, numpy's sgemm at 4096^3 for W3's GFLOP/s ratio.
"""

from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np
from rnn import WORKLOADS, make_case

import mytorch
from mytorch.codegen.runtime import NativeFunction

EMPTY_IR = "define void @entry(ptr %args) {\n  ret void\n}\n"


def compiled_runner(case, check=True):
    compiled = mytorch.compile(case.seq)
    with mytorch.no_grad():
        outs, h = compiled(case.xs_tensor)
        ref_outs, ref_h = case.seq(case.xs_tensor)
    for got, want in ((outs.data, ref_outs.data), (h.data, ref_h.data)) if check else ():
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    runner = compiled._last.runner
    return runner, (outs, h)  # the outputs keep the buffers the pointers name alive


def per_call(fn, arg, seconds: float, repeat: int) -> float:
    """Median over `repeat` rounds of the mean time of one call, each round about `seconds`."""
    n, t0 = 1, time.perf_counter()
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(arg)
        if time.perf_counter() - t0 > 0.01:
            break
        n *= 2
    n = max(1, int(n * seconds / max(time.perf_counter() - t0, 1e-9)))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(arg)
        times.append((time.perf_counter() - t0) / n)
    return float(np.median(times)), float(np.min(times))


def sgemm_gflops(repeat: int = 3) -> float:
    a = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeat))
    return 2 * 4096**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--seconds", type=float, default=0.02, help="per round")
    parser.add_argument("--spin", type=float, default=0.0, help="then call W for this long")
    args = parser.parse_args()
    empty = NativeFunction(EMPTY_IR, "entry")
    dummy = (ctypes.c_void_p * 1)()
    overhead, _ = per_call(empty.call, dummy, args.seconds, args.repeat)
    print(f"ctypes call of an empty native function: {overhead * 1e6:.2f} us (included below)")
    peak = None
    for name in args.workloads.split(","):
        w = WORKLOADS[name]
        case = make_case(w)
        runner, keep = compiled_runner(case)
        call, p = runner.native.call, runner.pointers
        seconds = args.seconds if w.flops < 1e8 else max(args.seconds, 0.2)
        repeat = args.repeat if w.flops < 1e9 else min(args.repeat, 5)
        med, best = per_call(call, p, seconds, repeat)
        gflops = w.flops / med / 1e9
        line = f"{name}: native median {med * 1e6:10.2f} us  min {best * 1e6:10.2f} us  "
        line += f"{gflops:6.1f} GFLOP/s"
        if name == "W3":
            peak = peak or sgemm_gflops()
            line += f"  ({gflops / peak:.0%} of sgemm 4096^3 at {peak:.1f} GFLOP/s)"
        print(line, flush=True)
        if args.spin:
            end = time.perf_counter() + args.spin
            while time.perf_counter() < end:
                for _ in range(100):
                    call(p)
        del keep


if __name__ == "__main__":
    main()
