"""Compile time against the number of steps T, for the tutorial loop and nn.RNN at W1's sizes.

    python -m bench.compile_time                     # T = 12, 100, 1000, 5000; 5 compiles each
    python -m bench.compile_time --steps 12,1000 --repeats 3
    python -m bench.compile_time --stages            # and where one compile's time goes

A compile's time is what bench/rnn.py reports for W1: a fresh compiled function's first call
minus a warm call, after `import mytorch` and LLVM's one-time initialization (a warm-up compile of
another function). Every compile runs in a process of its own, so that nothing is cached across
them and no compile pays for another's garbage (a T=5000 trace left for the collector costs a
later compile tens of ms); the table shows the median of `--repeats` compiles.

Programs, both at I=57, H=128, B=1 in float32:
- tutorial loop: the tutorial's RNN class (O=18) run by `for t in range(T): out, h = rnn(xs[t], h)`,
  every step's output stacked, and the last h (bench/rnn.py's W1 program);
- nn.RNN: `mytorch.nn.RNN(57, 128)(xs)`, its output and h_n.

`--stages` times one compile split into its stages (thread CPU time, median): tracing the
Python loop, each pass of the default pipeline as the PassManager runs it (verified
when it changed the graph) and the llvm backend.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mytorch
from bench.common import (
    REPO,
    RNN,
    format_seconds,
    git_revision,
    machine_facts,
    make_seq,
    markdown_table,
    write_json,
)
from mytorch import nn
from mytorch.codegen.runtime import llvm
from mytorch.ir.trace import trace_call
from mytorch.passes import PassManager, resolve_pipeline
from mytorch.plugins import get_backend

INPUT, HIDDEN, OUTPUT, BATCH = 57, 128, 18, 1
WARM_CALLS = 20


def tutorial_loop():
    """The W1 program of bench/rnn.py, with fresh weights."""
    mytorch.manual_seed(0)
    return make_seq(RNN(INPUT, HIDDEN, OUTPUT), BATCH, HIDDEN)


def rnn_module():
    mytorch.manual_seed(0)
    return nn.RNN(INPUT, HIDDEN)


PROGRAMS = {"tutorial loop": tutorial_loop, "nn.RNN": rnn_module}


def inputs(steps: int):
    mytorch.manual_seed(1)
    return mytorch.randn(steps, BATCH, INPUT)


def cold_compile_s(program: str, steps: int) -> float:
    """A cold compile of `program` at `steps` steps, in a fresh Python process."""
    command = [sys.executable, "-m", "bench.compile_time", "--child", program, str(steps)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {program} at T={steps} failed:\n{done.stderr}")
    return float(done.stdout.split()[-1])


def child(program: str, steps: int) -> None:
    """Print one cold compile's seconds (the process `cold_compile_s` starts)."""
    warm_up()
    print(first_call_minus_warm_s(PROGRAMS[program], steps))


def warm_up() -> None:
    """LLVM's one-time initialization, and a warm-up compile of something else."""
    llvm()
    with mytorch.no_grad():
        mytorch.compile(lambda a, b: a * b + a)(mytorch.randn(4), mytorch.randn(4))


def first_call_minus_warm_s(make, steps: int) -> float:
    """A new compiled function's first call minus its warm call (median of WARM_CALLS)."""
    compiled = mytorch.compile(make())
    xs = inputs(steps)
    with mytorch.no_grad():
        start = time.perf_counter()
        compiled(xs)
        first = time.perf_counter() - start
        warm = []
        for _ in range(WARM_CALLS):
            start = time.perf_counter()
            compiled(xs)
            warm.append(time.perf_counter() - start)
    return first - statistics.median(warm)


def stage_times(make, steps: int) -> dict[str, float]:
    """One compile, stage by stage (thread CPU time): trace, each pass (+ verify), backend."""
    fn = make()
    names = {id(p): n for n, p in fn.named_parameters()} if isinstance(fn, nn.Module) else {}
    clock = time.thread_time
    out: dict[str, float] = {}
    start = clock()
    with mytorch.no_grad():
        graph = trace_call(fn, (inputs(steps),), {}, name="f", param_names=names).graph
    out["trace"] = clock() - start
    for k, (name, pass_) in enumerate(resolve_pipeline("default"), 1):
        start = clock()  # each pass as the pipeline runs it (verified when it changed the graph,
        # and the first pass's result always: the trace is not verified before it)
        graph = PassManager([(name, pass_)]).run(graph, verified=k > 1)
        out[f"{k:>2} {name} (+ verify)"] = clock() - start
    start = clock()
    get_backend("llvm")(graph)
    out["backend (llvm)"] = clock() - start
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="12,100,1000,5000", help="comma-separated T values")
    parser.add_argument("--repeats", type=int, default=5, help="cold compiles per cell")
    parser.add_argument("--stages", action="store_true", help="also time each stage")
    parser.add_argument("--child", nargs=2, metavar=("PROGRAM", "T"), help=argparse.SUPPRESS)
    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
    parser.add_argument(
        "--json", type=Path, default=REPO / "bench" / "results" / f"compile-{stamp}.json"
    )
    args = parser.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(",")]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    warm_up()
    facts = machine_facts()
    facts["git"] = git_revision(Path(mytorch.__file__).resolve().parents[1])  # the mytorch timed
    load = facts["load_average_1min"]
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores), load average {load:.2f}")
    print(f"python {facts['python']}, numpy {facts['numpy']}, git {facts['git']}")
    print(f"mytorch from {Path(mytorch.__file__).parent}")
    print(
        f"compile time = first call - warm call; median of {args.repeats} cold compiles, "
        "each in a fresh process\n"
    )

    results: dict[str, dict[int, float]] = {}
    for program in PROGRAMS:
        results[program] = {
            t: statistics.median(cold_compile_s(program, t) for _ in range(args.repeats))
            for t in args.steps
        }
    headers = ["program"] + [f"T={t}" for t in args.steps]
    ratio = 12 in args.steps and 1000 in args.steps
    if ratio:
        headers.append("T=1000 / T=12")
    rows = []
    for program, times in results.items():
        row = [program] + [format_seconds(times[t]) for t in args.steps]
        if ratio:
            row.append(f"{times[1000] / times[12]:.2f}x")
        rows.append(row)
    print(markdown_table(headers, rows))

    stages = {}
    if args.stages:
        for program, make in PROGRAMS.items():
            stages[program] = {}
            for t in args.steps:
                runs = [stage_times(make, t) for _ in range(args.repeats)]
                stages[program][t] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"\n{program}: one compile by stage (thread CPU time, median)\n")
            names = list(stages[program][args.steps[0]])
            table = [
                [name] + [format_seconds(stages[program][t][name]) for t in args.steps]
                for name in names
            ]
            table.append(
                ["total"] + [format_seconds(sum(stages[program][t].values())) for t in args.steps]
            )
            print(markdown_table(["stage"] + [f"T={t}" for t in args.steps], table))

    write_json(
        args.json,
        {
            "machine": facts,
            "repeats": args.repeats,
            "compile_s": {p: {str(t): s for t, s in r.items()} for p, r in results.items()},
            "stages_s": {p: {str(t): s for t, s in r.items()} for p, r in stages.items()},
        },
    )
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
