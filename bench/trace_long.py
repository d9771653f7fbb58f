"""Trace a 5,000-step unrolled tutorial RNN loop and print the trace time and graph size.

    python -m bench.trace_long [--steps 5000] [--repeat 3]

The tutorial's RNN step (cell In [7]) runs inside `for t in range(steps)`, so tracing unrolls
it into one node chain `steps` long. Nothing in tracing, verifying, printing or running the
graph may recurse per step: the script keeps Python's default recursion limit (1000) and
would fail with RecursionError if anything did.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import numpy as np

import mytorch
from bench.common import RNN
from mytorch.ir import parse, verify
from mytorch.ir.interpreter import run


def timed(fn, repeat: int):
    """(median seconds, last result) over `repeat` calls."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    mytorch.manual_seed(0)
    rnn = RNN(12, 4, 3)
    xs = mytorch.randn(args.steps, 1, 12)
    h0 = mytorch.zeros(1, 4)

    def sequence(xs, hidden):
        output = None
        for t in range(args.steps):
            output, hidden = rnn(xs[t], hidden)
        return output, hidden

    print(f"machine: {platform.machine()} {platform.processor() or ''}".rstrip())
    print(f"python {platform.python_version()}, recursion limit {sys.getrecursionlimit()}")
    print(f"steps: {args.steps}, median of {args.repeat}")
    seconds, graph = timed(lambda: mytorch.trace(sequence, xs, h0), args.repeat)
    params = sum(i.is_param for i in graph.inputs)
    print(f"trace (incl. verify): {seconds:8.3f} s")
    print(
        f"graph: {len(graph)} nodes, {len(graph.inputs)} inputs ({params} params), "
        f"{len(graph.outputs)} outputs; {len(graph) / args.steps:.1f} nodes per step"
    )
    print("ops: " + ", ".join(f"{op}={n}" for op, n in sorted(graph.op_counts().items())))

    seconds, _ = timed(lambda: verify(graph), 1)
    print(f"verify:               {seconds:8.3f} s")
    seconds, text = timed(lambda: str(graph), 1)
    print(f"str(graph):           {seconds:8.3f} s ({len(text.splitlines())} lines)")
    seconds, parsed = timed(lambda: parse(text), 1)
    assert str(parsed) == text, "parse(str(graph)) does not print identically"
    print(f"parse(text):          {seconds:8.3f} s")

    params = list(rnn.parameters())  # first used in registration order, so graph order too
    assert [i.type.shape for i in graph.inputs[2:]] == [p.shape for p in params]
    arrays = [xs.data, h0.data] + [p.data for p in params]
    seconds, outputs = timed(lambda: run(graph, arrays), 1)
    expected = sequence(xs, h0)
    error = max(float(np.max(np.abs(o - e.data))) for o, e in zip(outputs, expected, strict=True))
    print(f"interpreter run:      {seconds:8.3f} s (max |interpreter - eager| = {error:.2e})")


if __name__ == "__main__":
    main()
