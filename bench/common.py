"""Shared helpers for the bench scripts: the tutorial RNN and the workload sizes, thread control,
machine facts, timing, tables, JSON.

The scripts are modules of the `bench` package; run them from the repository root as
`python -m bench.<script>`, so `import mytorch` finds this checkout.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mytorch
from mytorch import Tensor, nn

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Set on some machines of this workplace for old OpenBLAS builds; they slow a current numpy.
OPENBLAS_TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REPO = Path(__file__).resolve().parents[1]


# ---- the model and the workloads -------------------------------------------------------------


class RNN(nn.Module):
    """The tutorial's RNN (cell In [7])."""

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)

    def forward(self, input, hidden):
        combined = Tensor.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        hidden = mytorch.tanh(hidden)
        output = self.h2o(hidden)
        return output, hidden


def make_seq(rnn: RNN, batch: int, hidden_size: int):
    """The cell over every step of `xs` (T, B, I) from h = 0: every step's output stacked to
    (T, B, O), and the final h."""

    def seq(xs):
        h = mytorch.zeros(batch, hidden_size)
        outs = []
        for t in range(xs.shape[0]):
            out, h = rnn(xs[t], h)
            outs.append(out)
        return mytorch.stack(outs), h

    return seq


@dataclass(frozen=True)
class Workload:
    """One problem size (issue #6): input, hidden and output widths, batch and steps."""

    name: str
    label: str
    input_size: int
    hidden_size: int
    output_size: int
    batch: int
    steps: int

    @property
    def flops(self) -> int:
        """Multiply-adds of the forward's three matmuls, counted as 2 flops each."""
        i, h, o = self.input_size, self.hidden_size, self.output_size
        return 2 * self.batch * self.steps * (i * h + h * h + h * o)

    def sizes(self) -> str:
        return (
            f"I={self.input_size} H={self.hidden_size} O={self.output_size} "
            f"B={self.batch} T={self.steps}"
        )

    def describe(self) -> str:
        return f"{self.name} ({self.label}): {self.sizes()}, {format_flops(self.flops)} per call"


WORKLOADS = {
    w.name: w
    for w in (
        Workload("W1", "names latency", 57, 128, 18, 1, 12),
        Workload("W2", "batched", 128, 256, 128, 32, 64),
        Workload("W3", "large", 512, 1024, 512, 128, 32),
    )
}


# ---- environment -----------------------------------------------------------------------------


def reexec_with_thread_env(threads: int, unset_openblas_tuning: bool = False) -> None:
    """Re-run this process with the BLAS/OpenMP thread variables set, unless they already are.

    BLAS libraries read these variables once, when numpy is imported, so setting them later in
    the same process would do nothing: a fresh process is the reliable way. It runs the
    process's own command line again (`sys.orig_argv`).
    """
    env = dict(os.environ)
    env.update({var: str(threads) for var in THREAD_VARS})
    if unset_openblas_tuning:
        for var in OPENBLAS_TUNING_VARS:
            env.pop(var, None)
    if env == dict(os.environ):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def cpu_model() -> str:
    """The processor's "model name" from /proc/cpuinfo (or platform's guess)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _openblas_runtime() -> dict:
    """The kernel OpenBLAS picked at run time and its thread count, read from the loaded library."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower()})
    except OSError:
        return {}
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
            corename = getattr(lib, f"{prefix}openblas_get_corename{suffix}", None)
            threads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            if corename is not None and threads is not None:
                corename.restype = ctypes.c_char_p
                return {"blas_core": corename().decode(), "blas_threads": int(threads())}
    return {}


def blas_info() -> dict:
    """numpy's BLAS: name and version (build time), kernel and threads (run time, OpenBLAS)."""
    import numpy as np

    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    info = {"blas": blas.get("name", "unknown"), "blas_version": blas.get("version", "unknown")}
    info.update(_openblas_runtime())
    return info


def git_revision(repo: Path = REPO) -> str:
    """The repository's HEAD commit, with "+dirty" when the tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine_facts() -> dict:
    """What a reader needs to compare timings across runs."""
    import numpy as np

    facts = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "git": git_revision(),
        # Other processes on the machine make timings noisy; the reader should know.
        "load_average_1min": os.getloadavg()[0],
    }
    facts.update(blas_info())
    for var in THREAD_VARS + OPENBLAS_TUNING_VARS:
        facts[var] = os.environ.get(var)
    return facts


def load_torch(threads: int):
    """PyTorch set to `threads` threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def torch_status(torch, skipped: bool) -> str:
    if torch is not None:
        return torch.__version__
    return "skipped (--no-torch)" if skipped else "not installed (rows skipped)"


def set_mytorch_threads(threads: int) -> bool:
    """mytorch.set_num_threads(threads) (compiled forward calls split over their batch);
    whether it was called (an older mytorch has no such function)."""
    if not hasattr(mytorch, "set_num_threads"):
        return False
    mytorch.set_num_threads(threads)
    return True


# ---- timing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingPlan:
    """How long to spend timing one callable: a time budget and bounds on the repeat count, and
    the clock each call is timed with (wall-clock by default; `time.process_time` counts only
    this process's CPU time, less disturbed by other jobs when everything runs on one thread)."""

    budget_s: float
    min_repeats: int
    max_repeats: int = 20_000
    probe_s: float = 0.1
    clock: Callable[[], float] = time.perf_counter


@dataclass(frozen=True)
class Timing:
    """The median and spread of per-call times, in seconds."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int


def timed_call(fn) -> tuple[float, object]:
    """Seconds one call of `fn()` takes, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def estimate_seconds_per_call(fn, probe_s: float) -> float:
    """A rough per-call time: calls `fn` until `probe_s` has passed (at least once)."""
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= probe_s:
            return elapsed / calls


def per_call_times(fn, repeats: int, clock=time.perf_counter) -> list[float]:
    """Each of `repeats` calls timed alone; the garbage collector is off so it cannot land
    inside one call."""
    times = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = clock()
            fn()
            times.append(clock() - start)
    finally:
        if was_enabled:
            gc.enable()
    return times


def measure(fn, plan: TimingPlan) -> Timing:
    """Median per-call time of an already warmed-up `fn`, with the repeat count chosen so the
    whole measurement takes about `plan.budget_s`."""
    estimate = estimate_seconds_per_call(fn, min(plan.probe_s, plan.budget_s))
    repeats = int(plan.budget_s / max(estimate, 1e-9))
    repeats = max(plan.min_repeats, min(plan.max_repeats, repeats))
    times = per_call_times(fn, repeats, plan.clock)
    return Timing(statistics.median(times), min(times), max(times), repeats)


# ---- output ----------------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    """A duration in the unit that keeps three significant digits readable."""
    if seconds is None:
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def header_lines(title: str, facts: dict, threads: int) -> list[str]:
    """A Markdown title, then the machine, library versions and thread settings of this run."""
    blas = f"{facts['blas']} {facts['blas_version']}"
    if "blas_core" in facts:
        blas += f" (kernel {facts['blas_core']}, {facts['blas_threads']} threads)"
    tuning = ", ".join(f"{v}={facts[v] or '(unset)'}" for v in OPENBLAS_TUNING_VARS)
    return [
        f"# {title}, {facts['date']}",
        "",
        f"- CPU: {facts['cpu']} ({facts['cores']} cores, load average "
        f"{facts['load_average_1min']:.2f} at start); threads: {threads} "
        f"(mytorch.set_num_threads: {'called' if facts['mytorch_set_num_threads'] else 'absent'})",
        f"- numpy {facts['numpy']}, BLAS {blas}; torch {facts['torch']}",
        f"- mytorch {mytorch.__version__} at {facts['git']}; Python {facts['python']}",
        f"- {tuning}",
    ]


def format_flops(flops: int) -> str:
    return f"{flops / 1e9:.3g} GFLOP" if flops >= 1e9 else f"{flops / 1e6:.3g} MFLOP"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with columns padded to line up in a terminal."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), separator, *(line(r) for r in rows)])


def write_json(path: Path, payload: dict) -> None:
    """Write `payload` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def name_list(choices, what: str):
    """An argparse type: comma-separated names from `choices` (case-insensitive), in order."""

    def parse(text: str) -> list[str]:
        names = [n.strip().upper() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {unknown or text!r}; choose from {', '.join(choices)}"
            )
        return names

    return parse
