"""The training-step benchmark (issue #7): forward over T steps, loss, backward, SGD.

    python -m bench.train                         # T1 and T2 at 1 thread
    python -m bench.train --quick                 # about 0.3 s per row instead of 1.5 s
    python -m bench.train --threads 2 --json /tmp/train.json
    python -m bench.train --workloads T1 --no-torch

One training step of the tutorial RNN cell, float32: from h = 0, `h = tanh(cat(x, h) @ W.T + b)`
and `out = h @ Wo.T + bo` over all T steps, loss = mean(out ** 2) over every step's output,
backward, then plain SGD (lr 0.01) on W, b, Wo and bo. T1 has W1's sizes, T2 W2's. Before any
timing, every implementation's loss, gradients and parameter updates over two steps are checked
against eager mytorch's. See bench/README.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import mytorch
from bench.common import (
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
from mytorch import optim

LR = 0.01
SEED = 0
RTOL = 1e-4
# Elements near zero get an absolute tolerance: this fraction of the largest reference value.
ATOL_FRACTION = 1e-5
# Two steps: the second shows that compiled code reads the updated parameters.
CHECK_STEPS = 2
PARAMETERS = ("i2h.weight", "i2h.bias", "h2o.weight", "h2o.bias")
EAGER_ROW = "mytorch eager"
# Issue #7's targets, printed beside the measurements.
T1_TARGET_S = 70e-6
T2_TARGET_SPEEDUP = 1.2


@dataclass(frozen=True)
class TrainStep:
    """One benchmarked training step: a name and the forward workload it trains."""

    name: str
    workload: Workload

    @property
    def flops(self) -> int:
        """Nominal flops: the forward's three products, and the backward's five (the gradients
        of Wx, Wh, Wo and of h through Wh and Wo), 2 per multiply-add."""
        w = self.workload
        i, h, o = w.input_size, w.hidden_size, w.output_size
        return 2 * w.batch * w.steps * (2 * i * h + 3 * h * h + 3 * h * o)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.workload.name} sizes, {self.workload.sizes()}, "
            f"{self.flops / 1e6:.3g} MFLOP per step (nominal)"
        )


TRAIN_STEPS = {
    s.name: s for s in (TrainStep("T1", WORKLOADS["W1"]), TrainStep("T2", WORKLOADS["W2"]))
}


@dataclass
class Case:
    """One training step's inputs and initial parameters, shared by every implementation."""

    step: TrainStep
    xs: np.ndarray  # (T, B, I)
    state: dict[str, np.ndarray]  # the tutorial RNN's parameters by dotted name


def make_case(step: TrainStep) -> Case:
    """Seeded parameters (PyTorch's Linear init, via mytorch) and standard-normal inputs."""
    w = step.workload
    mytorch.manual_seed(SEED)
    rnn = RNN(w.input_size, w.hidden_size, w.output_size)
    rng = np.random.default_rng(SEED)
    xs = rng.standard_normal((w.steps, w.batch, w.input_size), dtype=np.float32)
    state = {name: np.array(array, copy=True) for name, array in rnn.state_dict().items()}
    assert tuple(state) == PARAMETERS, tuple(state)
    return Case(step, xs, state)


@dataclass
class Trainer:
    """An implementation ready to train: `step()` runs one training step and returns the loss;
    `parameters()` and `gradients()` give copies in the tutorial RNN's layout (PARAMETERS)."""

    step: object
    parameters: object
    gradients: object


# ---- mytorch --------------------------------------------------------------------------------


def mean_square(outputs):
    return (outputs * outputs).mean()


def mytorch_trainer(case: Case, loss_of) -> Trainer:
    """A fresh tutorial RNN and SGD; `loss_of(seq)` gives the function from xs to the loss."""
    w = case.step.workload
    rnn = RNN(w.input_size, w.hidden_size, w.output_size)
    rnn.load_state_dict(case.state)
    optimizer = optim.SGD(rnn.parameters(), lr=LR)
    loss_fn = loss_of(make_seq(rnn, w.batch, w.hidden_size))
    xs = mytorch.from_numpy(case.xs)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(xs)
        loss.backward()
        optimizer.step()
        return loss

    return Trainer(
        step,
        lambda: [p.data.copy() for p in rnn.parameters()],
        lambda: [np.array(p.grad, copy=True) for p in rnn.parameters()],
    )


def seq_loss(seq):
    """The function from xs to the loss: mean(out ** 2) over the outputs of every step."""

    def loss(xs):
        return mean_square(seq(xs)[0])

    return loss


def build_eager(case: Case, torch) -> Trainer:
    return mytorch_trainer(case, seq_loss)


def build_compiled_forward(case: Case, torch) -> Trainer:
    """The forward compiled; the loss computed eagerly from its outputs."""
    return mytorch_trainer(case, lambda seq: seq_loss(mytorch.compile(seq, fullgraph=True)))


def build_compiled_forward_loss(case: Case, torch) -> Trainer:
    """The forward and the loss compiled as one function."""
    return mytorch_trainer(case, lambda seq: mytorch.compile(seq_loss(seq), fullgraph=True))


# ---- numpy --------------------------------------------------------------------------------


class NumpyBPTT:
    """Hand-written float32 backpropagation through time, written to be fast.

    The input projection of every step is one product, so is the output projection; the
    recurrences run as short loops of in-place numpy calls into preallocated buffers; every
    weight gradient is one product over all steps. W is kept as its two halves, Wx and Wh.
    """

    def __init__(self, case: Case):
        w = case.step.workload
        t, b, i, h, o = w.steps, w.batch, w.input_size, w.hidden_size, w.output_size
        weight = case.state["i2h.weight"]
        self.wx = weight[:, :i].copy()
        self.wh = weight[:, i:].copy()
        self.b = case.state["i2h.bias"].copy()
        self.wo = case.state["h2o.weight"].copy()
        self.bo = case.state["h2o.bias"].copy()
        f32 = np.float32
        self.x = case.xs.reshape(t * b, i)
        self.hs = np.zeros((t + 1, b, h), f32)  # hs[0] is the initial h = 0, hs[t + 1] is h_t
        self.h_all = self.hs[1:].reshape(t * b, h)  # views: h_t and h_{t-1} for every t
        self.h_prev = self.hs[:-1].reshape(t * b, h)
        self.tmp = np.empty((b, h), f32)
        self.out = np.empty((t * b, o), f32)
        self.d_out = np.empty_like(self.out)
        self.d_h = np.empty((t, b, h), f32)  # the loss's gradient w.r.t. h_t through out_t
        self.tanh_grad = np.empty((t, b, h), f32)
        self.dz = np.empty((t, b, h), f32)  # w.r.t. the pre-activation of step t
        self.g_wx, self.g_wh = np.empty_like(self.wx), np.empty_like(self.wh)
        self.g_b, self.g_wo, self.g_bo = (np.empty_like(a) for a in (self.b, self.wo, self.bo))
        # Views made once: indexing and .T cost a little per call, and the loops are short.
        self.wx_t, self.wh_t, self.wo_t = self.wx.T, self.wh.T, self.wo.T
        self.h_steps = list(self.hs[1:])
        self.n = np.float32(self.out.size)
        self.two_over_n = np.float32(2.0 / self.out.size)
        self.d_out_t = self.d_out.T
        self.d_h_all = self.d_h.reshape(t * b, h)
        self.tanh_grad_all = self.tanh_grad.reshape(t * b, h)
        self.reverse = list(zip(self.dz, self.d_h, self.tanh_grad, strict=True))[::-1]
        self.dz_all = self.dz.reshape(t * b, h)
        self.dz_all_t = self.dz_all.T
        self.dz_later_t = self.dz_all[b:].T
        self.h_earlier = self.h_prev[b:]
        self.pairs = (
            (self.wx, self.g_wx),
            (self.wh, self.g_wh),
            (self.b, self.g_b),
            (self.wo, self.g_wo),
            (self.bo, self.g_bo),
        )

    def step(self):
        # Forward: P = X @ Wx.T + b for all steps into hs[1:], then h_t = tanh(P_t + h_{t-1} Wh.T).
        np.matmul(self.x, self.wx_t, out=self.h_all)
        self.h_all += self.b
        h, tmp, wh_t = self.h_steps[0], self.tmp, self.wh_t
        np.tanh(h, out=h)  # h_{-1} = 0
        for h_next in self.h_steps[1:]:
            np.matmul(h, wh_t, out=tmp)
            h_next += tmp
            np.tanh(h_next, out=h_next)
            h = h_next
        out, d_out = self.out, self.d_out
        np.matmul(self.h_all, self.wo_t, out=out)
        out += self.bo
        loss = np.vdot(out, out) / self.n
        # Backward: through the output projection for all steps at once, then the recurrence.
        np.multiply(out, self.two_over_n, out=d_out)
        np.matmul(self.d_out_t, self.h_all, out=self.g_wo)
        np.sum(d_out, axis=0, out=self.g_bo)
        np.matmul(d_out, self.wo, out=self.d_h_all)
        tanh_grad = self.tanh_grad_all
        np.multiply(self.h_all, self.h_all, out=tanh_grad)
        np.subtract(np.float32(1.0), tanh_grad, out=tanh_grad)
        wh = self.wh
        dz_next = self.reverse[0][0]
        np.multiply(self.reverse[0][1], self.reverse[0][2], out=dz_next)
        for dz, d_h, grad in self.reverse[1:]:  # dz_t = (d_h_t + dz_{t+1} Wh) (1 - h_t^2)
            np.matmul(dz_next, wh, out=dz)
            dz += d_h
            dz *= grad
            dz_next = dz
        np.matmul(self.dz_all_t, self.x, out=self.g_wx)
        # h_{-1} = 0 adds nothing to Wh's gradient: step 0 is left out.
        np.matmul(self.dz_later_t, self.h_earlier, out=self.g_wh)
        np.sum(self.dz_all, axis=0, out=self.g_b)
        for param, grad in self.pairs:
            param -= LR * grad
        return loss

    def parameters(self):
        return [
            np.concatenate([self.wx, self.wh], axis=1),
            self.b.copy(),
            self.wo.copy(),
            self.bo.copy(),
        ]

    def gradients(self):
        return [
            np.concatenate([self.g_wx, self.g_wh], axis=1),
            self.g_b.copy(),
            self.g_wo.copy(),
            self.g_bo.copy(),
        ]


def build_numpy_bptt(case: Case, torch) -> Trainer:
    bptt = NumpyBPTT(case)
    return Trainer(bptt.step, bptt.parameters, bptt.gradients)


# ---- PyTorch --------------------------------------------------------------------------------


def torch_trainer(torch, params, forward, layout) -> Trainer:
    """Autograd and torch.optim.SGD over `params`; `forward()` gives every step's output (T, B, O);
    `layout(tensors)` turns per-parameter tensors into the tutorial RNN's four arrays."""
    optimizer = torch.optim.SGD(params, lr=LR)

    def step():
        optimizer.zero_grad()
        loss = forward().pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss

    def arrays(tensors):
        return [a.detach().numpy().copy() for a in layout(tensors)]

    return Trainer(step, lambda: arrays(params), lambda: arrays([p.grad for p in params]))


def build_torch_cell_loop(case: Case, torch) -> Trainer:
    """PyTorch eager: the same cell written with torch.cat, @ and tanh per step."""
    w, b, w_o, b_o = (torch.tensor(case.state[k], requires_grad=True) for k in PARAMETERS)
    xs = torch.from_numpy(case.xs)
    batch, hidden = case.step.workload.batch, case.step.workload.hidden_size

    def forward():
        h = torch.zeros(batch, hidden)
        outs = []
        for t in range(xs.shape[0]):
            h = torch.tanh(torch.cat((xs[t], h), 1) @ w.T + b)
            outs.append(h @ w_o.T + b_o)
        return torch.stack(outs)

    return torch_trainer(torch, [w, b, w_o, b_o], forward, lambda tensors: tensors)


def build_torch_rnn(case: Case, torch) -> Trainer:
    """torch.nn.RNN (W split into W_ih and W_hh; b as b_ih; b_hh frozen at 0) and a Linear."""
    wl = case.step.workload
    rnn = torch.nn.RNN(wl.input_size, wl.hidden_size)
    head = torch.nn.Linear(wl.hidden_size, wl.output_size)
    weight = torch.from_numpy(case.state["i2h.weight"])
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(weight[:, : wl.input_size])
        rnn.weight_hh_l0.copy_(weight[:, wl.input_size :])
        rnn.bias_ih_l0.copy_(torch.from_numpy(case.state["i2h.bias"]))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(case.state["h2o.weight"]))
        head.bias.copy_(torch.from_numpy(case.state["h2o.bias"]))
    rnn.bias_hh_l0.requires_grad_(False)  # the tutorial cell has one bias
    xs = torch.from_numpy(case.xs)
    params = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, head.weight, head.bias]

    def forward():
        return head(rnn(xs)[0])

    def layout(t):
        return [torch.cat([t[0], t[1]], 1), t[2], t[3], t[4]]

    return torch_trainer(torch, params, forward, layout)


@dataclass(frozen=True)
class Implementation:
    """A row of the table: its name, its builder, and what kind of row it is."""

    name: str
    build: object
    mytorch: bool = True
    needs_torch: bool = False


IMPLEMENTATIONS = (
    Implementation(EAGER_ROW, build_eager),
    Implementation("mytorch compiled forward, eager loss", build_compiled_forward),
    Implementation("mytorch compiled forward+loss", build_compiled_forward_loss),
    Implementation("numpy hand-written BPTT", build_numpy_bptt, mytorch=False),
    Implementation("torch eager cell loop", build_torch_cell_loop, mytorch=False, needs_torch=True),
    Implementation("torch nn.RNN + Linear", build_torch_rnn, mytorch=False, needs_torch=True),
)


# ---- checking ------------------------------------------------------------------------------


class Disagreement(ValueError):
    """An implementation's training step differs from eager mytorch's."""


@dataclass
class StepRecord:
    """What one training step did: its loss, the gradients, and the parameter updates."""

    loss: float
    gradients: list[np.ndarray]
    updates: list[np.ndarray]
    # The largest parameter magnitude before the step: the rounding floor of its update.
    scales: list[float]


def record_steps(trainer: Trainer, steps: int = CHECK_STEPS) -> tuple[float, list[StepRecord]]:
    """Run `steps` training steps; the first one's time (cold) and a record of each."""
    records, first_s = [], None
    for _ in range(steps):
        before = trainer.parameters()
        seconds, loss = timed_call(trainer.step)
        first_s = seconds if first_s is None else first_s
        after = trainer.parameters()
        records.append(
            StepRecord(
                float(loss.item()),
                trainer.gradients(),
                [a.astype(np.float64) - b for a, b in zip(after, before, strict=True)],
                [float(np.abs(b).max()) for b in before],
            )
        )
    return first_s, records


def error_ratio(label: str, got: np.ndarray, want: np.ndarray, atol: float) -> float:
    """max |got - want| / (atol + RTOL |want|): within tolerance when <= 1."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise Disagreement(f"{label} has shape {got.shape}, eager mytorch gives {want.shape}")
    difference = np.abs(got - want)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(difference == 0, 0.0, difference / (atol + RTOL * np.abs(want)))
    bad = ~(ratio <= 1.0)  # NaN is bad too
    if bad.any():
        index = np.unravel_index(np.argmax(bad), ratio.shape)
        raise Disagreement(
            f"{label} not within rtol={RTOL:g}, atol={atol:.3g} of eager mytorch: at "
            f"{tuple(map(int, index))} got {got[index]:.8g}, expected {want[index]:.8g}"
        )
    return float(ratio.max()) if ratio.size else 0.0


def check_agreement(label: str, got: list[StepRecord], want: list[StepRecord]) -> float:
    """The worst error over every step's loss, gradients and updates, as a fraction of the
    tolerance; Disagreement if any is outside it."""
    eps = float(np.finfo(np.float32).eps)
    worst = 0.0
    for k, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        worst = max(worst, error_ratio(f"{label}: step {k} loss", g.loss, w.loss, 0.0))
        for name, gg, wg, gu, wu, scale in zip(
            PARAMETERS, g.gradients, w.gradients, g.updates, w.updates, w.scales, strict=True
        ):
            atol = ATOL_FRACTION * float(np.abs(wg).max())
            worst = max(worst, error_ratio(f"{label}: step {k} {name}.grad", gg, wg, atol))
            # An update is new - old in float32: it carries the rounding of the parameter.
            atol = ATOL_FRACTION * float(np.abs(wu).max()) + 4 * eps * scale
            worst = max(worst, error_ratio(f"{label}: step {k} {name} update", gu, wu, atol))
    return worst


# ---- running ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One implementation's result on one training step."""

    step: TrainStep
    name: str
    mytorch: bool
    first_step_s: float
    error_vs_tolerance: float
    timing: Timing | None = None

    @property
    def gflops(self) -> float:
        return self.step.flops / self.timing.median_s / 1e9


@dataclass
class StepResult:
    """Every row of one training step, and the implementations that could not run."""

    step: TrainStep
    rows: list[Row]
    skipped: list[tuple[str, str]]


def prepare_rows(case: Case, torch, log=print) -> tuple[list[Row], list, list]:
    """Build every implementation, run CHECK_STEPS steps of each from the same start, and check
    them against eager mytorch; the rows, their trainers, and (name, reason) of skipped rows."""
    rows, trainers, skipped = [], [], []
    reference = None
    for impl in IMPLEMENTATIONS:
        if impl.needs_torch and torch is None:
            continue
        log(f"  checking {case.step.name} {impl.name} ...")
        try:
            trainer = impl.build(case, torch)
            first_s, records = record_steps(trainer)
        except mytorch.CompileError as e:  # work in progress in the compiler: report, go on
            skipped.append((impl.name, str(e).splitlines()[0]))
            continue
        if reference is None:  # the first implementation is eager mytorch: the reference
            reference = records
        error = check_agreement(f"{case.step.name} {impl.name}", records, reference)
        rows.append(Row(case.step, impl.name, impl.mytorch, first_s, error))
        trainers.append(trainer)
    return rows, trainers, skipped


def run_step(step: TrainStep, plan: TimingPlan, torch, log=print) -> StepResult:
    """Check every implementation on `step`, then time each one."""
    case = make_case(step)
    rows, trainers, skipped = prepare_rows(case, torch, log)
    for row, trainer in zip(rows, trainers, strict=True):
        log(f"  timing {step.name} {row.name} ...")
        row.timing = measure(trainer.step, plan)
    return StepResult(step, rows, skipped)


# ---- report --------------------------------------------------------------------------------


def best(rows: list[Row], mytorch_rows: bool) -> Row | None:
    candidates = [r for r in rows if r.mytorch == mytorch_rows]
    return min(candidates, key=lambda r: r.timing.median_s) if candidates else None


def table_rows(result: StepResult) -> list[list[str]]:
    alternative = best(result.rows, mytorch_rows=False)
    cells = []
    for r in result.rows:
        ratio = f"{r.timing.median_s / alternative.timing.median_s:.2f}x" if alternative else ""
        cells.append(
            [
                r.step.name,
                r.name,
                format_seconds(r.timing.median_s),
                format_seconds(r.timing.min_s),
                f"{r.gflops:.2f}",
                ratio,
                format_seconds(r.first_step_s),
                str(r.timing.repeats),
            ]
        )
    return cells


TABLE_HEADERS = [
    "step",
    "implementation",
    "median",
    "min",
    "GFLOP/s",
    "time / best alternative",
    "first step",
    "repeats",
]


def summary_line(result: StepResult) -> str:
    """The fastest mytorch row against the fastest alternative, and issue #7's target."""
    ours, theirs = best(result.rows, True), best(result.rows, False)
    name = result.step.name
    if ours is None or theirs is None:
        return f"- {name}: nothing to compare"
    ratio = theirs.timing.median_s / ours.timing.median_s
    line = (
        f"- {name}: fastest mytorch: {ours.name} {format_seconds(ours.timing.median_s)}; "
        f"fastest alternative: {theirs.name} {format_seconds(theirs.timing.median_s)}; "
        f"speedup {ratio:.2f}x"
    )
    if name == "T1":
        line += f" (target: at most {format_seconds(T1_TARGET_S)})"
    elif name == "T2":
        line += f" (target: at least {T2_TARGET_SPEEDUP}x)"
    return line


def agreement_line(results: list[StepResult]) -> str:
    worst = max((r for res in results for r in res.rows), key=lambda r: r.error_vs_tolerance)
    return (
        f"- Agreement: every row's loss, gradients and parameter updates over {CHECK_STEPS} "
        f"steps match eager mytorch within rtol {RTOL:g} (worst: {worst.error_vs_tolerance:.2f} "
        f"of the tolerance, {worst.step.name} {worst.name})"
    )


def report(facts: dict, threads: int, results: list[StepResult]) -> str:
    lines = header_lines("Training-step benchmark", facts, threads) + [""]
    lines += [f"- {res.step.describe()}" for res in results]
    lines += [
        f"- One step: forward over all T steps from h = 0, loss = mean(out ** 2), backward, "
        f"SGD (lr {LR:g}) on {', '.join(PARAMETERS)}; times per step, {facts['clock']}",
        "",
        markdown_table(TABLE_HEADERS, [c for res in results for c in table_rows(res)]),
        "",
    ]
    lines += [summary_line(res) for res in results]
    lines.append(agreement_line(results))
    lines += [
        f"- {res.step.name} {name}: skipped, {why}" for res in results for name, why in res.skipped
    ]
    return "\n".join(lines)


def row_record(row: Row, alternative: Row | None) -> dict:
    return {
        "step": row.step.name,
        "implementation": row.name,
        "mytorch": row.mytorch,
        "median_s": row.timing.median_s,
        "min_s": row.timing.min_s,
        "max_s": row.timing.max_s,
        "repeats": row.timing.repeats,
        "gflops": row.gflops,
        "time_vs_best_alternative": (
            row.timing.median_s / alternative.timing.median_s if alternative else None
        ),
        "first_step_s": row.first_step_s,
        "error_vs_tolerance": row.error_vs_tolerance,
    }


def json_payload(facts: dict, threads: int, results: list[StepResult]) -> dict:
    return {
        "machine": facts,
        "threads": threads,
        "lr": LR,
        "check": {"steps": CHECK_STEPS, "rtol": RTOL, "atol_fraction": ATOL_FRACTION},
        "steps": {
            res.step.name: {"workload": res.step.workload.name, "flops": res.step.flops}
            | {
                k: getattr(res.step.workload, k)
                for k in ("input_size", "hidden_size", "output_size", "batch", "steps")
            }
            for res in results
        },
        "results": [row_record(r, best(res.rows, False)) for res in results for r in res.rows],
        "skipped": [
            {"step": res.step.name, "implementation": n, "reason": why}
            for res in results
            for n, why in res.skipped
        ],
    }


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads",
        type=name_list(TRAIN_STEPS, "training steps"),
        default=list(TRAIN_STEPS),
        help=f"comma-separated, from {','.join(TRAIN_STEPS)} (default: all)",
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads")
    parser.add_argument("--quick", action="store_true", help="about 0.3 s per row, not 1.5 s")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time each step in this process's CPU time, not wall-clock (1 thread only)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="default: bench/results/train-<date>-<time>.json"
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time counts the CPU time of all threads: use it with --threads 1")
    if args.json is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
        args.json = REPO / "bench" / "results" / f"train-{stamp}.json"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    reexec_with_thread_env(args.threads)
    mytorch_threads = set_mytorch_threads(args.threads)
    torch = None if args.no_torch else load_torch(args.threads)
    facts = machine_facts() | {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch_status(torch, args.no_torch),
        "mytorch_set_num_threads": mytorch_threads,
        "clock": "process CPU time" if args.cpu_time else "wall-clock",
    }
    clock = time.process_time if args.cpu_time else time.perf_counter
    plan = TimingPlan(budget_s=0.3 if args.quick else 1.5, min_repeats=3, clock=clock)

    def log(text):
        print(text, file=sys.stderr, flush=True)

    try:
        results = [run_step(TRAIN_STEPS[name], plan, torch, log) for name in args.workloads]
    except Disagreement as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(facts, args.threads, results))
    write_json(args.json, json_payload(facts, args.threads, results))
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
