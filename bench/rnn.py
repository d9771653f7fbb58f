"""The RNN benchmark: the tutorial's cell over T steps, eager vs compiled vs numpy vs PyTorch.

    python -m bench.rnn                         # W1, W2, W3 at 1 thread
    python -m bench.rnn --workloads W1,W2 --quick
    python -m bench.rnn --threads 2 --json /tmp/rnn.json
    python -m bench.rnn --smoke                 # W1 only, a few calls per row (the test uses it)

Every implementation computes `h = tanh(cat(x, h) @ W.T + b); out = h @ Wo.T + bo` for T steps
from h = 0 and returns every step's output (T, B, O) and the final h, in float32. Each one is
checked against eager mytorch before it is timed. See bench/README.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import mytorch
from bench.common import (
    OPENBLAS_TUNING_VARS,
    REPO,
    RNN,
    WORKLOADS,
    Timing,
    TimingPlan,
    Workload,
    format_seconds,
    header_lines,
    load_torch,
    machine_facts,
    make_seq,
    markdown_table,
    measure,
    name_list,
    reexec_with_thread_env,
    set_mytorch_threads,
    timed_call,
    torch_status,
    write_json,
)
from mytorch import Tensor

RTOL = 1e-4
ATOL = 1e-5
SEED = 0
LLVM_ROW = "mytorch compiled (llvm)"


@dataclass
class Case:
    """One workload's model, inputs and weights, shared by every implementation."""

    workload: Workload
    rnn: RNN
    seq: object
    xs: np.ndarray
    xs_tensor: Tensor
    weight: np.ndarray = field(init=False)  # (H, I + H)
    bias: np.ndarray = field(init=False)
    out_weight: np.ndarray = field(init=False)  # (O, H)
    out_bias: np.ndarray = field(init=False)

    def __post_init__(self):
        self.weight = self.rnn.i2h.weight.data.copy()
        self.bias = self.rnn.i2h.bias.data.copy()
        self.out_weight = self.rnn.h2o.weight.data.copy()
        self.out_bias = self.rnn.h2o.bias.data.copy()


def make_case(w: Workload) -> Case:
    """Seeded weights (PyTorch's Linear init, via mytorch) and standard-normal inputs."""
    mytorch.manual_seed(SEED)
    rnn = RNN(w.input_size, w.hidden_size, w.output_size)
    rng = np.random.default_rng(SEED)
    xs = rng.standard_normal((w.steps, w.batch, w.input_size), dtype=np.float32)
    seq = make_seq(rnn, w.batch, w.hidden_size)
    return Case(w, rnn, seq, xs, mytorch.from_numpy(xs))


# ---- implementations: each returns a no-argument callable giving (outputs, final h) ------------


def build_eager(case: Case, torch):
    return lambda: case.seq(case.xs_tensor)


def build_compiled_numpy(case: Case, torch):
    compiled = mytorch.compile(case.seq, backend="numpy")
    return lambda: compiled(case.xs_tensor)


def build_compiled_llvm(case: Case, torch):
    compiled = mytorch.compile(case.seq)
    return lambda: compiled(case.xs_tensor)


def build_numpy_hoisted(case: Case, torch):
    """Plain numpy with the input projection of all steps done as one matmul up front."""
    inputs = case.workload.input_size
    w_x = np.ascontiguousarray(case.weight[:, :inputs])
    w_h = np.ascontiguousarray(case.weight[:, inputs:])
    xs, bias, w_o, b_o = case.xs, case.bias, case.out_weight, case.out_bias

    def run():
        steps, batch, _ = xs.shape
        projected = (xs.reshape(steps * batch, -1) @ w_x.T + bias).reshape(steps, batch, -1)
        hs = np.empty_like(projected)
        h = np.zeros_like(projected[0])
        for t in range(steps):
            h = np.tanh(projected[t] + h @ w_h.T, out=hs[t])
        outs = hs.reshape(steps * batch, -1) @ w_o.T + b_o
        return outs.reshape(steps, batch, -1), h

    return run


def build_torch_cell_loop(case: Case, torch):
    """PyTorch eager, the same cell written with torch.cat, @ and tanh per step."""
    w, b, w_o, b_o = (
        torch.from_numpy(a) for a in (case.weight, case.bias, case.out_weight, case.out_bias)
    )
    xs = torch.from_numpy(case.xs)
    batch, hidden = case.workload.batch, case.workload.hidden_size

    def run():
        h = torch.zeros(batch, hidden)
        outs = []
        for t in range(xs.shape[0]):
            h = torch.tanh(torch.cat((xs[t], h), 1) @ w.T + b)
            outs.append(h @ w_o.T + b_o)
        return torch.stack(outs), h

    return run


def build_torch_rnn(case: Case, torch):
    """torch.nn.RNN (W split into W_ih, W_hh; b as b_ih, zero b_hh) and a Linear on its output."""
    wl = case.workload
    rnn = torch.nn.RNN(wl.input_size, wl.hidden_size)
    head = torch.nn.Linear(wl.hidden_size, wl.output_size)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(case.weight[:, : wl.input_size]))
        rnn.weight_hh_l0.copy_(torch.from_numpy(case.weight[:, wl.input_size :]))
        rnn.bias_ih_l0.copy_(torch.from_numpy(case.bias))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(case.out_weight))
        head.bias.copy_(torch.from_numpy(case.out_bias))
    xs = torch.from_numpy(case.xs)

    def run():
        hs, h_n = rnn(xs)
        return head(hs), h_n[0]

    return run


@dataclass(frozen=True)
class Implementation:
    """A row of the table: its name, its builder, and whether it needs PyTorch."""

    name: str
    build: object
    compiled: bool = False
    needs_torch: bool = False


IMPLEMENTATIONS = (
    Implementation("mytorch eager", build_eager),
    Implementation("mytorch compiled (numpy)", build_compiled_numpy, compiled=True),
    Implementation(LLVM_ROW, build_compiled_llvm, compiled=True),
    Implementation("numpy, input projection hoisted", build_numpy_hoisted),
    Implementation("torch eager cell loop", build_torch_cell_loop, needs_torch=True),
    Implementation("torch nn.RNN + Linear", build_torch_rnn, needs_torch=True),
)


# ---- checking ------------------------------------------------------------------------------


class Disagreement(ValueError):
    """An implementation's result differs from eager mytorch's."""


def to_numpy(x) -> np.ndarray:
    """A mytorch Tensor, torch tensor or array as a numpy array."""
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def check_agreement(label: str, got, want) -> float:
    """The largest absolute error of (outputs, h) `got` vs `want`; Disagreement if they differ
    in shape or beyond rtol=1e-4, atol=1e-5."""
    worst = 0.0
    for part, g, e in zip(("outputs", "final h"), got, want, strict=True):
        g, e = to_numpy(g), to_numpy(e)
        if g.shape != e.shape:
            raise Disagreement(
                f"{label}: {part} has shape {g.shape}, eager mytorch gives {e.shape}"
            )
        error = np.abs(g.astype(np.float64) - e.astype(np.float64))
        if not np.allclose(g, e, rtol=RTOL, atol=ATOL):
            index = np.unravel_index(np.argmax(error - RTOL * np.abs(e)), e.shape)
            raise Disagreement(
                f"{label}: {part} not within rtol={RTOL}, atol={ATOL} of eager mytorch: "
                f"max abs error {error.max():.3g}; at {tuple(map(int, index))} got "
                f"{float(g[index]):.8g}, expected {float(e[index]):.8g}"
            )
        worst = max(worst, float(error.max()))
    return worst


# ---- running ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One implementation's result on one workload."""

    workload: Workload
    name: str
    compiled: bool
    first_call_s: float
    max_abs_error: float
    timing: Timing | None = None

    @property
    def gflops(self) -> float:
        return self.workload.flops / self.timing.median_s / 1e9


@contextlib.contextmanager
def grad_disabled(torch):
    """No gradient bookkeeping in mytorch (and PyTorch when present): inference timings."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mytorch.no_grad())
        if torch is not None:
            stack.enter_context(torch.no_grad())
        yield


def prepare_rows(case: Case, torch) -> tuple[list[Row], list]:
    """Build every implementation, time its first (cold) call, and check its result against
    eager mytorch; returns the rows and their warm callables."""
    rows, calls = [], []
    reference = None
    for impl in IMPLEMENTATIONS:
        if impl.needs_torch and torch is None:
            continue
        call = impl.build(case, torch)
        first_call_s, result = timed_call(call)
        if reference is None:  # the first implementation is eager mytorch: the reference
            reference = result
        label = f"{case.workload.name} {impl.name}"
        error = check_agreement(label, result, reference)
        if impl.compiled:  # the second call takes the fast path (on threads: the batch slices)
            for _ in range(3):
                error = max(error, check_agreement(label, call(), reference))
        rows.append(Row(case.workload, impl.name, impl.compiled, first_call_s, error))
        calls.append(call)
    return rows, calls


def run_workload(w: Workload, plan: TimingPlan, torch) -> list[Row]:
    """Check every implementation on `w`, then time each one."""
    case = make_case(w)
    with grad_disabled(torch):
        rows, calls = prepare_rows(case, torch)
        for row, call in zip(rows, calls, strict=True):
            print(f"  timing {w.name} {row.name} ...", file=sys.stderr, flush=True)
            row.timing = measure(call, plan)
    return rows


# ---- context measurements ------------------------------------------------------------------


def sgemm_gflops(size: int, repeats: int) -> float:
    """numpy's float32 matmul rate at size x size x size, median of `repeats` after a warm-up."""
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    # The probe call of `measure` is the warm-up.
    timing = measure(lambda: a @ b, TimingPlan(budget_s=0.0, min_repeats=repeats, probe_s=0.0))
    return 2 * size**3 / timing.median_s / 1e9


def compiled_add_call_s(plan: TimingPlan) -> float:
    """Per-call time of a warm compiled `a + b` on two (4,) tensors: the fixed call overhead."""

    def add(a, b):
        return a + b

    compiled = mytorch.compile(add)
    a, b = mytorch.randn(4), mytorch.randn(4)
    with mytorch.no_grad():
        compiled(a, b)
        return measure(lambda: compiled(a, b), plan).median_s


def cold_compile_s(w: Workload, plan: TimingPlan) -> float:
    """The llvm compile time of `w`: a fresh compiled function's first call minus a warm call."""
    case = make_case(w)
    compiled = mytorch.compile(case.seq)
    with mytorch.no_grad():
        first_s, _ = timed_call(lambda: compiled(case.xs_tensor))
        warm = measure(lambda: compiled(case.xs_tensor), plan)
    return first_s - warm.median_s


def w1_cold_compile_s(results: dict[str, list[Row]], plan: TimingPlan) -> float:
    """W1's llvm compile time, from its table row when W1 ran (no need to compile it twice)."""
    if "W1" not in results:
        return cold_compile_s(WORKLOADS["W1"], plan)
    llvm = next(r for r in results["W1"] if r.name == LLVM_ROW)
    return llvm.first_call_s - llvm.timing.median_s


def measure_context(args, plan: TimingPlan) -> dict:
    """Reference points measured before the workloads: BLAS peak and compiled-call overhead.

    The `a + b` compile also initializes LLVM, so no workload's first call pays for that.
    """
    context = {"sgemm_size": args.peak_size, "sgemm_gflops": None}
    if not args.skip_peak:
        print("  timing numpy sgemm ...", file=sys.stderr, flush=True)
        context["sgemm_gflops"] = sgemm_gflops(args.peak_size, 1 if args.quick else 3)
    context["compiled_add_call_s"] = compiled_add_call_s(plan)
    return context


# ---- report --------------------------------------------------------------------------------


def context_lines(context: dict) -> list[str]:
    size = context["sgemm_size"]
    peak = context["sgemm_gflops"]
    peak_text = f"{peak:.1f} GFLOP/s" if peak is not None else "skipped"
    add_call = format_seconds(context["compiled_add_call_s"])
    return [
        f"- numpy sgemm {size}x{size}x{size}: {peak_text}",
        f"- compiled `a + b` on (4,) tensors, warm: {add_call} per call",
        f"- W1 cold compile (llvm, first call minus warm call): "
        f"{format_seconds(context['w1_cold_compile_s'])}",
    ]


def llvm_median(rows: list[Row]) -> float | None:
    return next((r.timing.median_s for r in rows if r.name == LLVM_ROW), None)


def table_rows(rows: list[Row]) -> list[list[str]]:
    """Table cells for one workload's rows."""
    llvm = llvm_median(rows)
    cells = []
    for r in rows:
        ratio = f"{r.timing.median_s / llvm:.2f}x" if llvm else ""
        first = format_seconds(r.first_call_s) if r.compiled else ""
        cells.append(
            [
                r.workload.name,
                r.name,
                format_seconds(r.timing.median_s),
                format_seconds(r.timing.min_s),
                f"{r.gflops:.2f}",
                ratio,
                first,
                str(r.timing.repeats),
            ]
        )
    return cells


def best_alternative_line(rows: list[Row]) -> str:
    """How the llvm row compares with the fastest other implementation."""
    llvm = llvm_median(rows)
    others = [r for r in rows if r.name != LLVM_ROW]
    best = min(others, key=lambda r: r.timing.median_s)
    return (
        f"- {rows[0].workload.name}: llvm {format_seconds(llvm)}; fastest other: {best.name} "
        f"{format_seconds(best.timing.median_s)} (llvm takes {llvm / best.timing.median_s:.2f}x "
        "its time)"
    )


TABLE_HEADERS = [
    "workload",
    "implementation",
    "median",
    "min",
    "GFLOP/s",
    "time / llvm",
    "first call",
    "repeats",
]


def report(facts, threads, context, results: dict[str, list[Row]]) -> str:
    """The whole Markdown report."""
    lines = header_lines("RNN benchmark", facts, threads) + context_lines(context) + [""]
    lines += [f"- {w}" for w in (WORKLOADS[name].describe() for name in results)] + [""]
    all_rows = [cells for rows in results.values() for cells in table_rows(rows)]
    lines += [markdown_table(TABLE_HEADERS, all_rows), ""]
    lines += [best_alternative_line(rows) for rows in results.values()]
    return "\n".join(lines)


def row_record(row: Row, llvm: float | None) -> dict:
    return {
        "workload": row.workload.name,
        "implementation": row.name,
        "median_s": row.timing.median_s,
        "min_s": row.timing.min_s,
        "max_s": row.timing.max_s,
        "repeats": row.timing.repeats,
        "gflops": row.gflops,
        "time_vs_llvm": row.timing.median_s / llvm if llvm else None,
        "first_call_s": row.first_call_s,
        "max_abs_error_vs_eager": row.max_abs_error,
    }


def json_payload(facts, threads, context, results: dict[str, list[Row]]) -> dict:
    workloads = {
        name: asdict(WORKLOADS[name]) | {"flops": WORKLOADS[name].flops} for name in results
    }
    records = [row_record(r, llvm_median(rows)) for rows in results.values() for r in rows]
    return {
        "machine": facts,
        "threads": threads,
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "context": context,
        "workloads": workloads,
        "results": records,
    }


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads",
        type=name_list(WORKLOADS, "workloads"),
        default=list(WORKLOADS),
        help=f"comma-separated, from {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads")
    parser.add_argument("--quick", action="store_true", help="about 0.3 s per row, not 1.5 s")
    parser.add_argument(
        "--smoke", action="store_true", help="W1 only, a few calls per row, no sgemm peak"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    parser.add_argument("--skip-peak", action="store_true", help="skip the numpy sgemm peak")
    parser.add_argument("--peak-size", type=int, default=4096, help=argparse.SUPPRESS)
    parser.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help=f"drop {' and '.join(OPENBLAS_TUNING_VARS)} for this run",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="default: bench/results/rnn-<date>-<time>.json"
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.smoke:
        args.workloads = ["W1"]
        args.skip_peak = True
    if args.json is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
        args.json = REPO / "bench" / "results" / f"rnn-{stamp}.json"
    return args


def timing_plan(args) -> TimingPlan:
    if args.smoke:
        return TimingPlan(budget_s=0.01, min_repeats=2, probe_s=0.0)
    if args.quick:
        return TimingPlan(budget_s=0.3, min_repeats=3)
    return TimingPlan(budget_s=1.5, min_repeats=3)


def main(argv=None) -> int:
    args = parse_args(argv)
    reexec_with_thread_env(args.threads, args.unset_openblas_env)
    mytorch_threads = set_mytorch_threads(args.threads)
    torch = None if args.no_torch else load_torch(args.threads)
    facts = machine_facts() | {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch_status(torch, args.no_torch),
        "mytorch_set_num_threads": mytorch_threads,
    }
    plan = timing_plan(args)
    try:
        context = measure_context(args, plan)
        results = {name: run_workload(WORKLOADS[name], plan, torch) for name in args.workloads}
        context["w1_cold_compile_s"] = w1_cold_compile_s(results, plan)
    except Disagreement as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(facts, args.threads, context, results))
    write_json(args.json, json_payload(facts, args.threads, context, results))
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
