"""BPTT over a long sequence (issue #7): one forward+backward at T=2,000, compiled vs eager.

    python -m bench.bptt_memory                        # W1 sizes, T=2000
    python -m bench.bptt_memory --sizes W2             # W2 sizes (eager needs a few GiB)
    python -m bench.bptt_memory --steps 50             # a small T (the smoke test uses it)
    python -m bench.bptt_memory --threads 2            # BLAS/OpenMP (and mytorch) threads

Each implementation runs in a fresh process (1 thread unless --threads says otherwise: on a busy
machine, BLAS threads competing with other processes can make a step ten times slower) with
Python's default recursion limit: the tutorial
RNN over T steps from h = 0, loss = mean(out ** 2) over every step's output, `loss.backward()`.
"compiled" is `mytorch.compile` (llvm, fullgraph) of the whole function from xs to the loss.
Each process reports:
- its resident set size (RSS) after setup (imports, model, inputs, LLVM's initialization);
- the first step (for compiled: trace, passes, compile, run): its time and the process's peak
  RSS during it;
- a second step, warm: its time, and how far the peak RSS rose above the RSS before it;
- a third step under tracemalloc: the peak of the memory Python and numpy allocated in it
  (native allocations such as LLVM's are not traced).
The peaks come from the kernel's high-water mark (VmHWM), reset before each step. The parent
checks that both processes give the same loss and gradients (rtol 1e-4), then prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench.common import (
    REPO,
    RNN,
    WORKLOADS,
    cpu_model,
    make_seq,
    markdown_table,
    reexec_with_thread_env,
    set_mytorch_threads,
    write_json,
)
from bench.train import ATOL_FRACTION, PARAMETERS, RTOL, Disagreement, error_ratio, mean_square

SEED = 0
MODES = ("eager", "compiled")
MIB = 2**20


# ---- the child process ------------------------------------------------------------------------


def proc_status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes; None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux 4.0+); whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The RSS high-water mark: since the last reset where /proc has it, else since start."""
    peak = proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def current_rss_bytes() -> int:
    return proc_status_bytes("VmRSS") or peak_rss_bytes()


def make_loss(mode: str, sizes: str, steps: int):
    """The tutorial RNN (seeded), its inputs, and the function from xs to the loss."""
    import mytorch

    w = WORKLOADS[sizes]
    mytorch.manual_seed(SEED)
    rnn = RNN(w.input_size, w.hidden_size, w.output_size)
    xs = np.random.default_rng(SEED).standard_normal((steps, w.batch, w.input_size), np.float32)
    seq = make_seq(rnn, w.batch, w.hidden_size)

    def loss(xs):
        return mean_square(seq(xs)[0])

    if mode == "compiled":
        # LLVM's one-time initialization belongs to the setup, not to the first step.
        mytorch.compile(lambda a: a * 2.0, fullgraph=True)(mytorch.ones(2))
        loss = mytorch.compile(loss, fullgraph=True)
    return rnn, mytorch.from_numpy(xs), loss


def child(mode: str, sizes: str, steps: int, gradients_path: Path) -> dict:
    """One process's measurements; the gradients of the first step go to `gradients_path`."""
    rnn, xs, loss_fn = make_loss(mode, sizes, steps)

    def step():
        rnn.zero_grad()
        loss = loss_fn(xs)
        loss.backward()
        return float(loss.item())

    figures = {"mode": mode, "sizes": sizes, "steps": steps, "setup_rss": current_rss_bytes()}
    figures["peak_resettable"] = reset_peak_rss()
    start = time.perf_counter()
    figures["loss"] = step()
    figures["first_s"] = time.perf_counter() - start
    figures["first_peak_rss"] = peak_rss_bytes()
    np.savez(gradients_path, *[p.grad for p in rnn.parameters()])

    before = current_rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    step()
    figures["warm_s"] = time.perf_counter() - start
    figures["warm_peak_rise"] = peak_rss_bytes() - before

    tracemalloc.start()
    step()
    figures["traced_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return figures


# ---- the parent ----------------------------------------------------------------------------


def run_child(mode: str, sizes: str, steps: int, threads: int, folder: Path) -> dict:
    """`mode` in a fresh process; its figures, or {"error": ...} when it failed."""
    gradients = folder / f"{mode}.npz"
    command = [sys.executable, "-m", "bench.bptt_memory", "--child", mode, "--sizes", sizes]
    command += ["--steps", str(steps), "--threads", str(threads)]
    command += ["--gradients", str(gradients)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"mode": mode, "error": tail[0]}
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(gradients) as data:
        figures["gradients"] = [data[f"arr_{k}"] for k in range(len(data.files))]
    return figures


def compare(eager: dict, compiled: dict) -> float:
    """The worst error of compiled's loss and gradients vs eager's, as a fraction of the
    tolerance; Disagreement naming every one outside it."""
    checks = [("compiled loss", compiled["loss"], eager["loss"], 0.0)]
    for name, got, want in zip(PARAMETERS, compiled["gradients"], eager["gradients"], strict=True):
        checks.append((f"compiled {name}.grad", got, want, ATOL_FRACTION * np.abs(want).max()))
    worst, problems = 0.0, []
    for label, got, want, atol in checks:
        try:
            worst = max(worst, error_ratio(label, got, want, float(atol)))
        except Disagreement as e:
            problems.append(str(e))
    if problems:
        raise Disagreement("\n       ".join(problems))
    return worst


def mib(n: int | None) -> str:
    return "" if n is None else f"{n / MIB:.1f} MiB"


def report(results: list[dict], sizes: str, steps: int, threads: int) -> str:
    w = WORKLOADS[sizes]
    lines = [
        f"# BPTT at T={steps:,}, {sizes} sizes (I={w.input_size} H={w.hidden_size} "
        f"O={w.output_size} B={w.batch})",
        "",
        f"- CPU: {cpu_model()}; threads: {threads}; recursion limit {sys.getrecursionlimit()} "
        "(the default) in each process",
        "",
    ]
    headers = [
        "implementation",
        "setup RSS",
        "first step",
        "peak RSS rise (first)",
        "warm step",
        "peak RSS rise (warm)",
        "tracemalloc peak",
    ]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["mode"], f"FAILED: {r['error']}", "", "", "", "", ""])
            continue
        rows.append(
            [
                r["mode"],
                mib(r["setup_rss"]),
                f"{r['first_s']:.3g} s",
                mib(r["first_peak_rss"] - r["setup_rss"]),
                f"{r['warm_s']:.3g} s",
                mib(r["warm_peak_rise"]),
                mib(r["traced_peak"]),
            ]
        )
    lines.append(markdown_table(headers, rows))
    if not all(r.get("peak_resettable", True) for r in results):
        lines.append("\n(no /proc/self/clear_refs: the peaks are since the process started)")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", choices=("W1", "W2"), default="W1")
    parser.add_argument("--steps", type=int, default=2000, help="sequence length T")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/mytorch threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--gradients", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    reexec_with_thread_env(args.threads)  # the children inherit the variables
    if args.child:
        set_mytorch_threads(args.threads)
        print(json.dumps(child(args.child, args.sizes, args.steps, args.gradients)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        results = []
        for mode in MODES:
            print(f"  running {mode} in a fresh process ...", file=sys.stderr, flush=True)
            results.append(run_child(mode, args.sizes, args.steps, args.threads, Path(folder)))
    print(report(results, args.sizes, args.steps, args.threads))
    status = 0
    failed = [r["mode"] for r in results if "error" in r]
    if failed:
        print(f"\nerror: {', '.join(failed)} failed", file=sys.stderr)
        status = 1
    else:
        try:
            worst = compare(*results)
            print(
                f"\n- compiled's loss and gradients match eager's within rtol {RTOL:g} "
                f"(worst: {worst:.2f} of the tolerance)"
            )
        except Disagreement as e:
            print(f"\nerror: {e}", file=sys.stderr)
            status = 1
    if args.json is not None:
        records = [{k: v for k, v in r.items() if k != "gradients"} for r in results]
        payload = {
            "sizes": args.sizes,
            "steps": args.steps,
            "threads": args.threads,
            "cpu": cpu_model(),
            "runs": records,
        }
        write_json(args.json, payload)
    return status


if __name__ == "__main__":
    sys.exit(main())
