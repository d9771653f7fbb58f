"""Memory over many calls of compiled code: the process must not grow call after call.

    python -m bench.memory [--steps 12] [--warmup 200] [--calls 1000 10000] [--no-grad]

Compiles the tutorial's RNN (cell In [7]) in a Python loop over `--steps` steps with the llvm
backend, calls it `--warmup` times, then reads the resident set size (RSS, /proc/self/statm)
after each checkpoint in `--calls` (counted from the end of the warm-up). Prints every figure and
the growth from the first checkpoint to the last, which must stay under 2 MiB; the exit status
is 1 when it does not.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import resource
import sys

import numpy as np

import mytorch
from bench.common import RNN
from mytorch import Tensor

LIMIT_BYTES = 2 * 2**20


def rss_bytes() -> int:
    """The current resident set size; the peak (ru_maxrss) where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def measure(steps: int = 12, warmup: int = 200, checkpoints=(1_000, 10_000), grad=True) -> dict:
    """RSS after warm-up and at each checkpoint (calls after warm-up); growth first -> last."""
    mytorch.manual_seed(0)
    rnn = RNN(12, 4, 3)

    def run_sequence(xs, hidden):
        output = None
        for t in range(steps):
            output, hidden = rnn(xs[t], hidden)
        return output, hidden

    rng = np.random.default_rng(1)
    xs = Tensor(rng.standard_normal((steps, 1, 12)).astype(np.float32), trainable=False)
    h0 = Tensor(np.zeros((1, 4), np.float32), trainable=False)
    compiled = mytorch.compile(run_sequence, backend="llvm", fullgraph=True)
    with contextlib.nullcontext() if grad else mytorch.no_grad():
        for _ in range(warmup):
            out, _ = compiled(xs, h0)
        gc.collect()
        figures = {"warmup": rss_bytes(), "checkpoints": {}}
        done = 0
        for target in sorted(checkpoints):
            for _ in range(target - done):
                out, _ = compiled(xs, h0)
            done = target
            gc.collect()
            figures["checkpoints"][target] = rss_bytes()
    with mytorch.no_grad():
        expected, _ = run_sequence(xs, h0)
    np.testing.assert_allclose(out.data, expected.data, rtol=1e-4, atol=1e-5)
    values = list(figures["checkpoints"].values())
    figures["growth"] = values[-1] - values[0]
    return figures


def mib(n: int) -> str:
    return f"{n / 2**20:9.3f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--calls", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--no-grad", action="store_true", help="call under mytorch.no_grad()")
    args = parser.parse_args()
    print(f"{platform.node()}: Python {platform.python_version()}, numpy {np.__version__}")
    mode = "no_grad" if args.no_grad else "grad enabled (gradients attached to every output)"
    print(f"tutorial RNN loop, T={args.steps}, llvm backend, {mode}")
    figures = measure(args.steps, args.warmup, args.calls, grad=not args.no_grad)
    print(f"RSS after {args.warmup} warm-up calls:  {mib(figures['warmup'])}")
    for calls, rss in figures["checkpoints"].items():
        print(f"RSS after {calls:>6,} more calls:    {mib(rss)}")
    first, last = list(figures["checkpoints"])[0], list(figures["checkpoints"])[-1]
    growth = figures["growth"]
    per_call = growth / max(last - first, 1)
    verdict = "ok" if growth < LIMIT_BYTES else "TOO MUCH (limit 2 MiB)"
    print(f"growth from {first:,} to {last:,} calls: {growth / 2**20:+.3f} MiB "
          f"({per_call:+.1f} bytes per call): {verdict}")
    return 0 if growth < LIMIT_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
