"""The bench scripts in their smallest configurations: they run, check their implementations agree,
print their tables and write valid JSON. Nothing here asserts a timing."""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The smoke run skips PyTorch (importing it would take most of the time budget);
# test_torch_rows_agree_with_eager covers those rows in-process.
EXPECTED_ROWS = [
    "mytorch eager",
    "mytorch compiled (numpy)",
    "mytorch compiled (llvm)",
    "numpy, input projection hoisted",
]
# W1: I=57, H=128, O=18, B=1, T=12, counted independently of the script.
W1_FLOPS = 2 * 1 * 12 * (57 * 128 + 128 * 128 + 128 * 18)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One `--smoke` run: its completed process and the JSON it wrote."""
    json_path = tmp_path_factory.mktemp("bench") / "rnn.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.rnn", "--smoke", "--no-torch", "--json", str(json_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(json_path.read_text())


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of the Markdown table's body rows."""
    lines = [line for line in stdout.splitlines() if line.startswith("| W")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_prints_a_markdown_table_with_every_row(smoke):
    proc, _ = smoke
    assert "| workload | implementation" in proc.stdout
    assert "|----------|" in proc.stdout
    rows = table_rows(proc.stdout)
    assert [r[1] for r in rows] == EXPECTED_ROWS
    assert all(r[0] == "W1" for r in rows)
    llvm = rows[EXPECTED_ROWS.index("mytorch compiled (llvm)")]
    assert llvm[5] == "1.00x"
    assert llvm[6], "the llvm row reports its first-call (compile) time"


def test_prints_the_machine_and_context(smoke):
    proc, _ = smoke
    for text in ("CPU:", "threads: 1", "numpy ", "OPENBLAS_CORETYPE=", "OPENBLAS_L2_SIZE="):
        assert text in proc.stdout
    assert "torch skipped (--no-torch)" in proc.stdout
    assert "W1 cold compile" in proc.stdout
    assert "`a + b`" in proc.stdout


def test_json_records_every_row_with_consistent_numbers(smoke):
    _, data = smoke
    assert data["threads"] == 1
    assert data["workloads"]["W1"]["flops"] == W1_FLOPS
    results = data["results"]
    assert [r["implementation"] for r in results] == EXPECTED_ROWS
    for r in results:
        assert r["workload"] == "W1"
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["repeats"] >= 2
        assert r["gflops"] == pytest.approx(W1_FLOPS / r["median_s"] / 1e9)
        assert r["max_abs_error_vs_eager"] <= 1e-4
    llvm = next(r for r in results if r["implementation"] == "mytorch compiled (llvm)")
    assert llvm["time_vs_llvm"] == pytest.approx(1.0)
    assert data["context"]["w1_cold_compile_s"] > 0
    assert data["context"]["compiled_add_call_s"] > 0
    assert data["context"]["sgemm_gflops"] is None  # --smoke skips the peak


def test_thread_variables_reach_the_run(smoke):
    _, data = smoke
    machine = data["machine"]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        assert machine[var] == "1"
    if "blas_threads" in machine:
        assert machine["blas_threads"] == 1


def test_reexec_sets_threads_and_can_drop_openblas_tuning():
    code = (
        "import os; from bench.common import reexec_with_thread_env;"
        "reexec_with_thread_env(3, unset_openblas_tuning=True);"
        "print(os.environ['OMP_NUM_THREADS'], os.environ.get('OPENBLAS_CORETYPE'))"
    )
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OMP_NUM_THREADS="7")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "None"]


@pytest.fixture()
def rnn_bench():
    """bench/rnn.py imported as a module (its `main` is not run)."""
    return importlib.import_module("bench.rnn")


def test_disagreeing_results_are_reported(rnn_bench):
    rng = np.random.default_rng(0)
    want = (rng.standard_normal((3, 2, 4)).astype(np.float32), np.zeros((2, 5), np.float32))
    assert rnn_bench.check_agreement("same", want, want) == 0.0
    off = want[0].copy()
    off[1, 0, 2] += 1e-3
    with pytest.raises(
        rnn_bench.Disagreement, match=r"W1 bad: outputs not within .* at \(1, 0, 2\)"
    ):
        rnn_bench.check_agreement("W1 bad", (off, want[1]), want)
    with pytest.raises(rnn_bench.Disagreement, match=r"final h has shape \(5,\)"):
        rnn_bench.check_agreement("W1 bad", (want[0], want[1][0]), want)


def test_torch_rows_agree_with_eager(rnn_bench):
    torch = pytest.importorskip("torch")
    case = rnn_bench.make_case(rnn_bench.WORKLOADS["W1"])
    torch_rows = [impl for impl in rnn_bench.IMPLEMENTATIONS if impl.needs_torch]
    assert len(torch_rows) == 2
    with rnn_bench.grad_disabled(torch):
        reference = rnn_bench.build_eager(case, torch)()
        for impl in torch_rows:
            result = impl.build(case, torch)()
            assert rnn_bench.check_agreement(impl.name, result, reference) <= 1e-4


# ---- bench/train.py ----------------------------------------------------------------------------

TRAIN_MYTORCH_ROWS = [
    "mytorch eager",
    "mytorch compiled forward, eager loss",
    "mytorch compiled forward+loss",
]


@pytest.fixture(scope="module")
def train_quick(tmp_path_factory):
    """One `--quick` run of T1 without PyTorch, timed in CPU time: its completed process and the
    JSON it wrote."""
    json_path = tmp_path_factory.mktemp("bench") / "train.json"
    command = [sys.executable, "-m", "bench.train", "--quick", "--workloads", "T1", "--no-torch"]
    command.append("--cpu-time")
    proc = subprocess.run(
        [*command, "--json", str(json_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(json_path.read_text())


def test_train_quick_checks_agreement_and_reports_every_row(train_quick):
    proc, data = train_quick
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in proc.stdout.splitlines()
        if line.startswith("| T1")
    ]
    assert [r[1] for r in rows] == [*TRAIN_MYTORCH_ROWS, "numpy hand-written BPTT"]
    assert "- Agreement: every row's loss, gradients and parameter updates" in proc.stdout
    assert "target: at most 70 µs" in proc.stdout
    assert "CPU:" in proc.stdout and "threads: 1" in proc.stdout
    assert "times per step, process CPU time" in proc.stdout
    results = data["results"]
    assert [r["implementation"] for r in results] == [r[1] for r in rows]
    for r in results:
        assert r["step"] == "T1"
        assert 0 <= r["error_vs_tolerance"] <= 1
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["repeats"] >= 3
    numpy_row = next(r for r in results if not r["mytorch"])
    assert numpy_row["time_vs_best_alternative"] == pytest.approx(1.0)
    assert data["skipped"] == []
    assert data["steps"]["T1"]["hidden_size"] == 128
    assert data["machine"]["OMP_NUM_THREADS"] == "1"


@pytest.fixture()
def train_bench():
    return importlib.import_module("bench.train")


def one_step_records(train_bench, build, case, torch=None):
    return train_bench.record_steps(build(case, torch))[1]


def test_numpy_bptt_agrees_with_eager_when_batched(train_bench):
    """T1 has B=1: check the batched code paths too, at small sizes (T2's would be slow here)."""
    from bench.common import Workload

    small = train_bench.TrainStep("small", Workload("S", "small batched", 5, 8, 3, 4, 6))
    case = train_bench.make_case(small)
    want = one_step_records(train_bench, train_bench.build_eager, case)
    got = one_step_records(train_bench, train_bench.build_numpy_bptt, case)
    assert train_bench.check_agreement("small numpy", got, want) <= 1


def test_train_torch_rows_agree_with_eager(train_bench):
    torch = pytest.importorskip("torch")
    case = train_bench.make_case(train_bench.TRAIN_STEPS["T1"])
    want = one_step_records(train_bench, train_bench.build_eager, case)
    torch_rows = [impl for impl in train_bench.IMPLEMENTATIONS if impl.needs_torch]
    assert len(torch_rows) == 2
    for impl in torch_rows:
        got = one_step_records(train_bench, impl.build, case, torch)
        assert train_bench.check_agreement(impl.name, got, want) <= 1


def test_train_check_catches_a_wrong_gradient_or_a_missing_update(train_bench):
    case = train_bench.make_case(train_bench.TRAIN_STEPS["T1"])
    want = one_step_records(train_bench, train_bench.build_numpy_bptt, case)
    assert train_bench.check_agreement("same", want, want) == 0.0
    wrong = copy.deepcopy(want)
    wrong[1].gradients[2][3, 4] *= 1.001
    with pytest.raises(train_bench.Disagreement, match=r"step 2 h2o.weight.grad .* at \(3, 4\)"):
        train_bench.check_agreement("T1 bad", wrong, want)
    nan = copy.deepcopy(want)
    nan[0].gradients[0][1, 2] = np.nan
    with pytest.raises(train_bench.Disagreement, match=r"step 1 i2h.weight.grad .* at \(1, 2\)"):
        train_bench.check_agreement("T1 bad", nan, want)
    no_update = copy.deepcopy(want)
    no_update[0].updates[1][:] = 0.0  # gradients right, SGD forgot i2h.bias
    with pytest.raises(train_bench.Disagreement, match=r"step 1 i2h.bias update"):
        train_bench.check_agreement("T1 bad", no_update, want)


# ---- bench/bptt_memory.py ------------------------------------------------------------------------


def test_bptt_memory_runs_both_processes_and_compares_gradients(tmp_path):
    json_path = tmp_path / "bptt.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bptt_memory", "--steps", "30", "--json", str(json_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "compiled's loss and gradients match eager's" in proc.stdout
    assert "threads: 1; recursion limit 1000" in proc.stdout
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line[:2] == "| "]
    assert rows == ["implementation", "eager", "compiled"]
    assert "FAILED" not in proc.stdout
    runs = json.loads(json_path.read_text())["runs"]
    assert [r["mode"] for r in runs] == ["eager", "compiled"]
    for r in runs:
        assert r["steps"] == 30
        assert r["first_peak_rss"] >= r["setup_rss"] > 0
        assert r["traced_peak"] > 0 and r["first_s"] > 0 and r["warm_s"] > 0


# ---- bench/compile_time.py -----------------------------------------------------------------------


def test_compile_time_prints_both_programs_the_ratio_and_each_stage(tmp_path):
    json_path = tmp_path / "compile.json"
    args = ["--steps", "12,1000", "--repeats", "1", "--stages", "--json", str(json_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compile_time", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line[:2] == "| "]
    assert rows[:3] == ["program", "tutorial loop", "nn.RNN"]
    assert "T=1000 / T=12" in proc.stdout
    assert " 1 roll (+ verify)" in proc.stdout and "backend (llvm)" in proc.stdout
    data = json.loads(json_path.read_text())
    for program in ("tutorial loop", "nn.RNN"):
        assert set(data["compile_s"][program]) == {"12", "1000"}
        stages = data["stages_s"][program]["1000"]
        assert stages["trace"] > 0 and stages["backend (llvm)"] > 0


# ---- bench/names.py ----------------------------------------------------------------------------


def test_names_alternates_blocks_and_reports_both_ways(tmp_path):
    json_path = tmp_path / "names.json"
    command = [sys.executable, "-m", "bench.names", "--rounds", "2", "--block", "3"]
    command += ["--hidden", "16", "--batch", "8", "--threads", "1", "--json", str(json_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line[:3] == "| e"]
    rows += [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line[:3] == "| c"]
    assert rows == ["eager", "compiled"]
    assert "x faster than eager ones (medians of alternating blocks)" in proc.stdout
    data = json.loads(json_path.read_text())
    assert [len(data["times"][k]) for k in ("eager", "compiled")] == [2, 2]
    assert all(t > 0 for k in ("eager", "compiled") for t in data["times"][k])
    assert data["compile_s"] > 0 and data["lengths"] == sorted(set(data["lengths"]))
    assert data["speedup"] == pytest.approx(
        np.median(data["times"]["eager"]) / np.median(data["times"]["compiled"])
    )
