"""Whole traced models compiled with the llvm backend, with the default pipeline and with no
passes, against eager and against the numpy interpreter on the same optimized graph; gradients
through compiled code; live parameters; what a compiled function keeps (graph, LLVM IR, assembly,
dump files); long sequences; and memory growth over many calls.
"""

from __future__ import annotations

import gc
import os
import re
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.nn import functional as F
from mytorch.passes import PIPELINES
from tests.ir.programs import TUTORIAL_SIZES, sequence_inputs, tutorial_rnn, unrolled

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def data(*shape, seed: int = 0, dtype=F32) -> Tensor:
    rng = np.random.default_rng(seed)
    return Tensor(rng.standard_normal(shape).astype(dtype), trainable=False)


def indices(*shape, high: int, seed: int = 0) -> Tensor:
    rng = np.random.default_rng(seed)
    return Tensor(rng.integers(0, high, shape), dtype=np.int64, trainable=False)


def to_float64_param(p) -> None:
    p.data = p.data.astype(F64)
    p.grad = np.zeros_like(p.data)


def to_float64(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        to_float64_param(p)
    return module


@dataclass
class Model:
    """A model to compile: the thing to wrap and example inputs (made fresh per test)."""

    name: str
    build: Callable[[], tuple[Callable, tuple]]
    expect_ops: tuple[str, ...] = ()  # ops the default pipeline must leave in the graph


def _tutorial_step():
    rnn = tutorial_rnn()
    input_size, hidden_size, _ = TUTORIAL_SIZES
    return rnn, (data(1, input_size, seed=1), data(1, hidden_size, seed=2))


def _tutorial_loop(steps: int):
    def build():
        return unrolled(tutorial_rnn(), steps), sequence_inputs(steps)

    return build


def _rnn(layers=1, nonlinearity="tanh", batch_first=False, with_h0=False, dtype=F32):
    def build():
        mytorch.manual_seed(3)
        m = nn.RNN(5, 7, num_layers=layers, nonlinearity=nonlinearity, batch_first=batch_first)
        if dtype == F64:
            to_float64(m)
        x = data(*((3, 5, 5) if batch_first else (5, 3, 5)), seed=4, dtype=dtype)
        return m, (x, data(layers, 3, 7, seed=5, dtype=dtype)) if with_h0 else (x,)

    return build


def _rnn_cell_loop(cell_type):
    def build():
        mytorch.manual_seed(6)
        cell = cell_type(5, 7)

        def run_cell(xs, h):
            outputs = []
            state = (h, h) if cell_type is nn.LSTMCell else h
            for t in range(xs.shape[0]):
                state = cell(xs[t], state)
                outputs.append(state[0] if isinstance(state, tuple) else state)
            return mytorch.stack(outputs), state

        return run_cell, (data(3, 2, 5, seed=7), data(2, 7, seed=8))

    return build


def _seq_module(cls, layers=1, dtype=F32):
    def build():
        mytorch.manual_seed(9)
        m = cls(5, 6, num_layers=layers)
        if dtype == F64:
            to_float64(m)
        # Few steps: LSTM and GRU stay unrolled, and LLVM's time grows faster than the graph.
        return m, (data(2 if layers > 1 else 4, 2, 5, seed=10, dtype=dtype),)

    return build


def _mlp():
    mytorch.manual_seed(11)
    net = nn.Sequential(nn.Linear(6, 17), nn.ReLU(), nn.Linear(17, 4))

    def classify(x):
        logits = net(x)
        return logits.softmax(1), logits.log_softmax(-1), logits.argmax(dim=1)

    return classify, (data(3, 6, seed=12),)


def _embedding_linear():
    mytorch.manual_seed(13)
    emb, head = nn.Embedding(11, 8), nn.Linear(8, 3)

    def embed(tokens):
        return head(emb(tokens)).tanh()

    return embed, (indices(2, 5, high=11, seed=14),)


def _loss():
    mytorch.manual_seed(15)
    net = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 5))

    def loss(x, targets):
        return F.cross_entropy(net(x), targets)

    return loss, (data(4, 6, seed=16), indices(4, high=5, seed=17))


MODELS = [
    Model("tutorial-step", _tutorial_step, ("rnn_cell",)),
    Model("tutorial-loop-T12", _tutorial_loop(12), ("loop",)),
    Model("tutorial-loop-T1", _tutorial_loop(1)),
    Model("rnn-1layer-tanh", _rnn(), ("loop",)),
    Model("rnn-2layer-relu", _rnn(2, "relu")),
    Model("rnn-batch-first-h0", _rnn(1, "tanh", batch_first=True, with_h0=True)),
    Model("rnn-2layer-h0-float64", _rnn(2, "tanh", with_h0=True, dtype=F64)),
    Model("rnn-cell-loop", _rnn_cell_loop(nn.RNNCell)),
    Model("lstm-cell-loop", _rnn_cell_loop(nn.LSTMCell)),
    Model("gru-cell-loop", _rnn_cell_loop(nn.GRUCell)),
    Model("lstm", _seq_module(nn.LSTM)),
    Model("lstm-2layer-float64", _seq_module(nn.LSTM, 2, F64)),
    Model("gru", _seq_module(nn.GRU)),
    Model("gru-2layer", _seq_module(nn.GRU, 2)),
    Model("mlp-softmax", _mlp),
    Model("embedding-linear", _embedding_linear, ("embedding",)),
    Model("cross-entropy", _loss, ("one_hot",)),
]


def no_grad_eager(fn, inputs):
    with mytorch.no_grad(), np.errstate(all="ignore"):
        return fn(*inputs)


@pytest.mark.parametrize("passes", ["default", "none"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_model_matches_eager_and_numpy(model: Model, passes, assert_outputs_same):
    fn, inputs = model.build()
    native = mytorch.compile(fn, backend="llvm", passes=passes, fullgraph=True)
    reference = mytorch.compile(fn, backend="numpy", passes=passes, fullgraph=True)
    with mytorch.no_grad():
        out = native(*inputs)
        assert_outputs_same(out, reference(*inputs), what=f"{model.name} llvm vs numpy")
    assert_outputs_same(out, no_grad_eager(fn, inputs), what=f"{model.name} llvm vs eager")
    assert str(native.graph) == str(reference.graph), "both backends run the same graph"
    if passes == "default":
        ops = native.graph.op_counts()
        missing = [op for op in model.expect_ops if op not in ops]
        assert not missing, f"expected {missing} after the default pipeline:\n{native.graph}"
    else:
        assert len(native.graph) == len(mytorch.trace(fn, *inputs))


def test_tutorial_step_is_fused_into_one_rnn_cell_without_cat():
    fn, inputs = _tutorial_step()
    compiled = mytorch.compile(fn, backend="llvm")
    compiled(*inputs)
    ops = compiled.graph.op_counts()
    assert ops.get("rnn_cell") == 1 and "cat" not in ops, str(compiled.graph)


# ---- gradients and live parameters -------------------------------------------------------------


def parameters_of(fn) -> list:
    """A Module's parameters, or those of the Modules a function closes over."""
    if isinstance(fn, nn.Module):
        return list(fn.parameters())
    seen, out = set(), []
    for cell in fn.__closure__ or ():
        if isinstance(cell.cell_contents, nn.Module):
            for p in cell.cell_contents.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


@pytest.mark.parametrize("name", ["tutorial-loop-T12", "cross-entropy", "lstm"])
def test_gradients_through_compiled_code_match_eager(name, assert_same):
    model = next(m for m in MODELS if m.name == name)
    fn, inputs = model.build()
    params = parameters_of(fn)
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)

    def grads(run):
        outs = run(*inputs)
        first = outs[0] if isinstance(outs, tuple) else outs
        loss = (first * first).sum() if first.ndim else first
        for p in params:
            p.zero_grad()
        loss.backward()
        return [p.grad.copy() for p in params]

    eager, native = grads(fn), grads(compiled)
    assert params and all(np.any(g) for g in eager)
    for k, (g_native, g_eager) in enumerate(zip(native, eager, strict=True)):
        assert_same(g_native, g_eager, what=f"gradient of parameter {k}")


def test_parameters_are_read_live_at_every_call(assert_outputs_same):
    fn, inputs = _tutorial_loop(12)()
    params = parameters_of(fn)
    compiled = mytorch.compile(fn, backend="llvm")
    before = compiled(*inputs)
    for p in params:
        p.data *= 1.5  # in place
    assert_outputs_same(compiled(*inputs), no_grad_eager(fn, inputs), what="after p.data *= 1.5")
    optimizer = mytorch.optim.SGD(params, lr=0.1)
    out, hidden = compiled(*inputs)
    (out.sum() + hidden.sum()).backward()
    optimizer.step()
    after = compiled(*inputs)
    assert_outputs_same(after, no_grad_eager(fn, inputs), what="after an optimizer step")
    assert not np.allclose(after[0].data, before[0].data)


# ---- what a compiled function keeps ----------------------------------------------------------

LIBM = {
    name + suffix
    for name in ("exp", "log", "tanh", "pow", "sqrt", "sin", "cos", "expm1", "log1p", "fabs",
                 "exp2", "log2", "fma", "fmax", "fmin", "copysign", "rint", "floor", "ceil")
    for suffix in ("", "f")
}


def declared_functions(llvm_ir: str) -> list[str]:
    return re.findall(r"^declare\b[^@]*@\"?([\w.$]+)\"?\(", llvm_ir, flags=re.MULTILINE)


def test_graph_llvm_ir_and_assembly_are_kept():
    fn, inputs = _tutorial_loop(12)()
    compiled = mytorch.compile(fn, backend="llvm")
    assert compiled.graph is None and compiled.llvm_ir is None
    compiled(*inputs)
    assert isinstance(compiled.graph, mytorch.ir.Graph)
    assert "define" in compiled.llvm_ir
    assert compiled.asm.strip() and ("ret" in compiled.asm)
    first_ir = compiled.llvm_ir
    xs, h0 = inputs
    batch2 = (Tensor(np.concatenate([xs.data] * 2, axis=1)), Tensor(np.zeros((2, h0.shape[1]))))
    compiled(*batch2)  # a new signature: the artifacts follow the last one used
    assert compiled.llvm_ir != first_ir
    assert compiled.graph.inputs[0].type.shape == (12, 2, TUTORIAL_SIZES[0])


def test_float32_elementwise_loop_uses_vector_registers():
    if "avx512f" not in _cpu_flags() and "avx2" not in _cpu_flags():
        pytest.skip("no AVX2/AVX-512 on this CPU")

    def fma_like(a, b):
        return a * b + a

    compiled = mytorch.compile(fma_like, backend="llvm", passes="none", fullgraph=True)
    compiled(data(1024, seed=1), data(1024, seed=2))
    assert re.search(r"%[yz]mm\d+", compiled.asm), "no ymm/zmm register in the assembly"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def every_math_function(x):
    positive = x.abs() + 0.5
    mixed = x.exp() + x.tanh() + x.sigmoid() + positive.sqrt() + positive.log() + positive**1.5
    return mixed.softmax(1) + mixed.log_softmax(0) + (x @ x.T).relu().max(dim=1)[0]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["math", "tutorial-loop-T12", "cross-entropy"])
def test_generated_code_calls_only_intrinsics_and_libm(name, dtype):
    if name == "math":
        fn, inputs = every_math_function, (data(3, 3, seed=1),)
    else:
        fn, inputs = next(m for m in MODELS if m.name == name).build()
    if dtype == F64:
        for p in parameters_of(fn):
            to_float64_param(p)
        inputs = tuple(
            Tensor(t.data.astype(F64), trainable=False) if t.dtype == F32 else t for t in inputs
        )
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
    with mytorch.no_grad():
        compiled(*inputs)
    text = compiled.llvm_ir
    declared = declared_functions(text)
    assert len(declared) == len(re.findall(r"^declare ", text, flags=re.MULTILINE))
    # The graph's IR is its entry module, then the shared kernel modules it calls.
    defined = set(re.findall(r"^define\b[^@]*@\"?([\w.$]+)\"?\(", text, flags=re.MULTILINE))
    foreign = [d for d in declared if not d.startswith("llvm.") and d not in LIBM | defined]
    assert not foreign, f"calls outside LLVM intrinsics and libm: {foreign}"
    calls = set(re.findall(r"\bcall\b[^@]*@\"?([\w.$]+)\"?\(", text))
    unknown = calls - set(declared) - defined
    assert not unknown, f"calls to functions neither declared nor defined here: {unknown}"


def test_dump_writes_every_stage_in_order(tmp_path):
    fn, inputs = _tutorial_loop(12)()
    compiled = mytorch.compile(fn, backend="llvm", dump=str(tmp_path))
    with mytorch.no_grad():  # the forward alone (a call needing gradients builds the backward)
        compiled(*inputs)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    files = sorted(p.name for p in folder.iterdir())
    numbered = [f for f in files if re.match(r"\d{3}_", f)]
    assert numbered[0] == "000_trace.txt"
    stages = [re.sub(r"^\d{3}_", "", f) for f in numbered]
    passes = [f"{p}.txt" for p in PIPELINES["default"]]
    assert stages[1 : 1 + len(passes)] == passes, stages
    rest = stages[1 + len(passes) :]
    assert [os.path.splitext(s)[1] for s in rest] == [".ll", ".ll", ".s"], rest
    numbers = [int(f[:3]) for f in numbered]
    assert numbers == list(range(len(numbered))), "stages are numbered 000, 001, ... in order"
    raw, optimized, asm = (folder / f for f in numbered[-3:])
    assert "define" in raw.read_text() and "define" in optimized.read_text()
    assert optimized.read_text().strip() == compiled.llvm_ir.strip()
    assert asm.read_text().strip() == compiled.asm.strip()
    assert "explain.txt" in files
    explain = (folder / "explain.txt").read_text()
    assert all(p in explain for p in PIPELINES["default"]), explain
    trace_text = (folder / "000_trace.txt").read_text()
    assert trace_text.strip() == str(mytorch.trace(fn, *inputs)).strip()


# ---- long sequences ---------------------------------------------------------------------------


def check_long_rnn(steps: int, assert_same) -> None:
    mytorch.manual_seed(21)
    rnn = nn.RNN(8, 16)
    x = data(steps, 2, 8, seed=22)
    compiled = mytorch.compile(rnn, backend="llvm", fullgraph=True)
    with mytorch.no_grad():
        out, h_n = compiled(x)
        expected_out, expected_h = rnn(x)
    assert_same(out.data, expected_out.data, what="outputs")
    assert_same(h_n.data, expected_h.data, what="final state")
    assert len(compiled.graph) < 20, f"{len(compiled.graph)} nodes: the loop was not re-rolled"
    assert "loop" in compiled.graph.op_counts()


def test_rnn_300_steps(assert_same):
    check_long_rnn(300, assert_same)


@pytest.mark.slow
def test_rnn_5000_steps(assert_same):
    check_long_rnn(5000, assert_same)


# ---- memory: many calls must not grow the process --------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def warm_tutorial_loop(calls: int):
    fn, inputs = _tutorial_loop(12)()
    compiled = mytorch.compile(fn, backend="llvm", fullgraph=True)
    for _ in range(calls):
        compiled(*inputs)
    gc.collect()
    return compiled, inputs


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_growth_per_call_is_about_zero():
    compiled, inputs = warm_tutorial_loop(500)
    # Python-level allocations (numpy buffers included), exactly: a leaked output array per call
    # would be >= 100 bytes per call.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            compiled(*inputs)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert traced / 2000 < 8, f"traced memory grew {traced} bytes over 2000 calls"
    # The whole process (native allocations too), in pages: allocator noise stays well below this.
    before = rss_bytes()
    for _ in range(3000):
        compiled(*inputs)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 256 * 2**10, f"RSS grew {grown} bytes over 3000 calls"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_after_10000_calls_grows_less_than_2_mib():
    from bench.memory import measure

    figures = measure(warmup=200, checkpoints=(1_000, 10_000))
    assert figures["growth"] < 2 * 2**20, figures
