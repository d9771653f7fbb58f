"""The cost of getting from Python into compiled code and back.

    python -m bench.call_overhead                   # a + b and W1, about 20 s
    python -m bench.call_overhead --quick --json /tmp/call.json

Rows, each the median (and min) per call over many batches of calls:
- `a + b` on two (4,) float32 tensors: numpy on the arrays; a ctypes call of an empty native
  function (what any ctypes call costs); the compiled entry called through ctypes with
  precomputed pointers (native code alone, plus that ctypes cost); the runner's native binder on
  arrays; `mytorch.compile(lambda a, b: a + b)` under no_grad, with gradients on (nothing
  trainable), and compiled with the Python path only (what MYTORCH_BINDER=0 gives).
- W1 (the tutorial RNN over T=12 steps, I=57, H=128, O=18, B=1) the same way, with the model's
  parameters frozen for the "gradients on" row.

The compiled call's overhead is its time minus the entry's ctypes time plus the empty ctypes call.
Every compiled result is checked against numpy/eager before timing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import mytorch
from bench.common import (
    RNN,
    format_seconds,
    machine_facts,
    make_seq,
    markdown_table,
    write_json,
)
from mytorch import Tensor
from mytorch.codegen import binder
from mytorch.codegen.runtime import NativeFunction


def batch_times(fn, batch: int, batches: int) -> list[float]:
    """Per-call seconds of `batches` runs of `batch` calls each (gc off while timing)."""
    times = []
    gc.disable()
    try:
        for _ in range(batches):
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            times.append((time.perf_counter() - start) / batch)
    finally:
        gc.enable()
    return times


def timing(fn, budget_s: float) -> dict:
    fn()
    start = time.perf_counter()
    fn()
    one = max(time.perf_counter() - start, 1e-8)
    batch = max(1, int(2e-3 / one))  # batches of ~2 ms
    batches = max(15, int(budget_s / (batch * one)))
    times = batch_times(fn, batch, batches)
    return {"median_s": statistics.median(times), "min_s": min(times), "calls": batch * batches}


def raw_entry_call(runner, arrays: list[np.ndarray]):
    """A ctypes call of the runner's entry with every pointer computed once, and what it keeps."""
    outputs = runner(arrays)
    status = np.zeros(1, np.int64)
    workspace = runner.workspace.ctypes.data
    addresses = [a.ctypes.data for a in arrays + outputs]
    addresses += [workspace + (-workspace) % 64, status.ctypes.data]
    pointers = (ctypes.c_void_p * len(addresses))(*addresses)
    call = runner.native.call
    return (lambda: call(pointers)), (arrays, outputs, status, pointers)


@contextlib.contextmanager
def python_path_only():
    """Functions compiled inside use only the runner's Python path (no native binder)."""
    enabled, binder.enabled = binder.enabled, False
    try:
        yield
    finally:
        binder.enabled = enabled


def same(actual, expected, what: str) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, err_msg=what)


def add_rows(budget: float) -> list[tuple[str, dict]]:
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.standard_normal(4).astype(np.float32) for _ in range(2))
    a, b = Tensor(a_np, trainable=False), Tensor(b_np, trainable=False)
    f = mytorch.compile(lambda a, b: a + b)
    with mytorch.no_grad():
        same(f(a, b).data, a_np + b_np, "a + b")
    runner = f._last.runner
    raw, _keep = raw_entry_call(runner, [a_np, b_np])
    noop = NativeFunction("define void @noop(ptr %args) {\n  ret void\n}\n", "noop")
    null = ctypes.c_void_p(0)
    rows = [
        ("numpy a + b", timing(lambda: a_np + b_np, budget)),
        ("ctypes call of an empty native function", timing(lambda: noop.call(null), budget)),
        ("entry through ctypes, precomputed pointers", timing(raw, budget)),
    ]
    if runner._call is not None:
        same(runner._call(a_np, b_np)[0], a_np + b_np, "binder")
        rows.append(("runner's binder on arrays", timing(lambda: runner._call(a_np, b_np), budget)))
    with mytorch.no_grad():
        rows.append(("compiled f(a, b), no_grad", timing(lambda: f(a, b), budget)))
    f(a, b)
    rows.append(("compiled f(a, b), grad on, nothing trainable", timing(lambda: f(a, b), budget)))
    with mytorch.no_grad(), python_path_only():
        g = mytorch.compile(lambda a, b: a + b)
        same(g(a, b).data, a_np + b_np, "python path")
        rows.append(
            ("compiled f(a, b), no_grad, Python path only", timing(lambda: g(a, b), budget))
        )
    return rows


def w1_rows(budget: float) -> list[tuple[str, dict]]:
    mytorch.manual_seed(0)
    steps, batch, inputs, hidden, outputs = 12, 1, 57, 128, 18
    rnn = RNN(inputs, hidden, outputs)
    seq = make_seq(rnn, batch, hidden)
    xs = mytorch.randn(steps, batch, inputs)
    c = mytorch.compile(seq)
    with mytorch.no_grad():
        expected = seq(xs)
        got = c(xs)
        for k in range(2):
            same(got[k].data, expected[k].data, f"W1 output {k}")
        entry = c._last
        raw, _keep = raw_entry_call(entry.runner, [xs.data] + [p.data for p in entry.trace.params])
        rows = [
            ("W1 entry through ctypes, precomputed pointers", timing(raw, budget)),
            ("W1 compiled, no_grad", timing(lambda: c(xs), budget)),
        ]
    for p in rnn.parameters():
        p.requires_grad = False
    c(xs)
    rows.append(("W1 compiled, grad on, parameters frozen", timing(lambda: c(xs), budget)))
    with mytorch.no_grad(), python_path_only():
        slow = mytorch.compile(seq)
        same(slow(xs)[0].data, expected[0].data, "W1 python path")
        rows.append(("W1 compiled, no_grad, Python path only", timing(lambda: slow(xs), budget)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 0.3 s per row, not 2 s")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    budget = 0.3 if args.quick else 2.0
    rows = add_rows(budget) + w1_rows(budget)
    table = [[name, format_seconds(t["median_s"]), format_seconds(t["min_s"])] for name, t in rows]
    facts = machine_facts()
    print(f"{facts['cpu']}, load {facts['load_average_1min']:.2f}, binder: {binder.available()}")
    print(markdown_table(["call", "median", "min"], table))
    times = dict(rows)
    empty = times["ctypes call of an empty native function"]["median_s"]
    for what, prefix in (("a + b", "compiled f(a, b)"), ("W1", "W1 compiled")):
        raw = times[("W1 " if what == "W1" else "") + "entry through ctypes, precomputed pointers"]
        native = raw["median_s"] - empty
        call = times[f"{prefix}, no_grad"]["median_s"]
        print(
            f"{what}: native code ~{format_seconds(native)}, "
            f"the rest of a no_grad call ~{format_seconds(call - native)}"
        )
    if args.json:
        write_json(args.json, {"machine": facts, "binder": binder.available(), "rows": times})
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
