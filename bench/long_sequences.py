"""Compile time of long recurrences with the llvm backend, and the graph size after the passes.

    python -m bench.long_sequences [--steps 5000] [--loop-steps 12 1000] [--repeat 1]

Reports, for `nn.RNN` over `--steps` steps, for the tutorial's RNN (cell In [7]) in a Python
loop over each of `--loop-steps` steps, and for `nn.LSTM` (which stays unrolled: compare how its
compile time grows with `--lstm-steps`):
- compile time: the first call (trace, passes, LLVM, JIT) minus a warm call with the same inputs;
- the warm call's time; the node count traced and after the default pipeline;
- where the compile time goes, each stage run again on its own: tracing (with verification),
  the passes (the slowest three named) and the backend (LLVM IR, O3, machine code); the sum
  may differ from the compile time a little (garbage collection, caches);
- the largest difference from eager (must stay within rtol 1e-4 / atol 1e-5).
Medians over `--repeat` fresh compilations.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import llvmlite
import numpy as np

import mytorch
from bench.common import RNN, cpu_model
from mytorch import Tensor, nn
from mytorch.codegen import BACKENDS
from mytorch.passes import PassManager, resolve_pipeline


def tutorial_loop(steps: int):
    """The tutorial RNN over `steps` steps in a Python loop, and its inputs."""
    mytorch.manual_seed(0)
    rnn = RNN(12, 4, 3)

    def run_sequence(xs, hidden):
        output = None
        for t in range(steps):
            output, hidden = rnn(xs[t], hidden)
        return output, hidden

    rng = np.random.default_rng(1)
    xs = Tensor(rng.standard_normal((steps, 1, 12)).astype(np.float32), trainable=False)
    return run_sequence, (xs, Tensor(np.zeros((1, 4), np.float32), trainable=False))


def torch_style_rnn(steps: int):
    """nn.RNN(8, 16) over (steps, batch 2, 8)."""
    mytorch.manual_seed(2)
    rnn = nn.RNN(8, 16)
    x = np.random.default_rng(3).standard_normal((steps, 2, 8)).astype(np.float32)
    return rnn, (Tensor(x, trainable=False),)


def lstm(steps: int):
    """nn.LSTM(5, 6) over (steps, batch 2, 5): no pass re-rolls it, so it stays unrolled."""
    mytorch.manual_seed(4)
    module = nn.LSTM(5, 6)
    x = np.random.default_rng(5).standard_normal((steps, 2, 5)).astype(np.float32)
    return module, (Tensor(x, trainable=False),)


def max_error(actual, expected) -> float:
    """max |a - e| / (atol + rtol |e|) over all (nested) outputs: <= 1 is within tolerance."""
    if isinstance(expected, (tuple, list)):
        return max(max_error(a, e) for a, e in zip(actual, expected, strict=True))
    ratio = np.abs(actual.data - expected.data) / (1e-5 + 1e-4 * np.abs(expected.data))
    return float(ratio.max())


def measure(make, steps: int, repeat: int) -> dict:
    compile_s, warm_s = [], []
    for _ in range(repeat):
        fn, inputs = make(steps)
        compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
        with mytorch.no_grad():
            start = time.perf_counter()
            out = compiled(*inputs)
            first = time.perf_counter() - start
            start = time.perf_counter()
            compiled(*inputs)
            warm = time.perf_counter() - start
        compile_s.append(first - warm)
        warm_s.append(warm)
    with mytorch.no_grad():
        expected = fn(*inputs)
    # The same stages again, one at a time, to see where the time goes.
    start = time.perf_counter()
    graph = mytorch.trace(fn, *inputs)
    trace_s = time.perf_counter() - start
    traced = len(graph)
    manager = PassManager(resolve_pipeline("default"))
    graph = manager.run(graph)
    passes = sorted(manager.records, key=lambda r: -r.seconds)
    start = time.perf_counter()
    BACKENDS["llvm"](graph)
    backend = time.perf_counter() - start
    return {
        "compile": statistics.median(compile_s),
        "warm": statistics.median(warm_s),
        "traced": traced,
        "optimized": len(compiled.graph),
        "ops": ", ".join(f"{op} x{n}" for op, n in sorted(compiled.graph.op_counts().items())),
        "trace": trace_s,
        "passes": sum(r.seconds for r in passes),
        "slowest": ", ".join(f"{r.name} {r.seconds:.2f} s" for r in passes[:3]),
        "backend": backend,
        "error": max_error(out, expected),
    }


def print_row(name: str, steps: int, m: dict) -> None:
    print(f"{name}, T={steps:,}:")
    print(f"  compile time      {m['compile']:8.3f} s   (first call minus warm call)")
    print(f"  warm call         {m['warm'] * 1e3:8.3f} ms")
    print(f"  nodes             {m['traced']:,} traced -> {m['optimized']} after passes")
    print(f"  optimized graph   {m['ops']}")
    print(
        f"  compile breakdown trace {m['trace']:.2f} s, passes {m['passes']:.2f} s "
        f"(slowest: {m['slowest']}), backend {m['backend']:.2f} s"
    )
    status = "ok" if m["error"] <= 1 else "OUTSIDE rtol 1e-4/atol 1e-5"
    print(f"  vs eager          worst error/tolerance {m['error']:.3f} ({status})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="nn.RNN sequence length")
    parser.add_argument("--loop-steps", type=int, nargs="+", default=[12, 1000])
    parser.add_argument(
        "--lstm-steps", type=int, nargs="*", default=[7, 14], help="unrolled nn.LSTM lengths"
    )
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}; Python {platform.python_version()}, numpy {np.__version__}, "
          f"llvmlite {llvmlite.__version__}")
    print(f"median of {args.repeat} compilation(s) each\n")
    # LLVM's one-time initialization is not part of any graph's compile time.
    mytorch.compile(lambda x: x * 2.0, fullgraph=True)(Tensor(np.ones(3, np.float32)))
    for steps in args.loop_steps:
        result = measure(tutorial_loop, steps, args.repeat)
        print_row("tutorial RNN loop (cell In [7])", steps, result)
    result = measure(torch_style_rnn, args.steps, args.repeat)
    print_row("nn.RNN(8, 16), batch 2", args.steps, result)
    for steps in args.lstm_steps:
        print_row("nn.LSTM(5, 6), batch 2 (unrolled)", steps, measure(lstm, steps, args.repeat))


if __name__ == "__main__":
    main()
