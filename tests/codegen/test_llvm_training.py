"""Training through compiled code: the backward graph derived from the optimized forward graph,
built by the llvm backend, against eager gradients (every op, every model), against finite
differences (float64), through SGD steps, and over long sequences.
"""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.ops import OPS
from tests.codegen.test_llvm_models import MODELS, parameters_of, to_float64
from tests.ir.op_cases import CASES
from tests.ir.programs import TUTORIAL_SIZES, tutorial_rnn, unrolled

RTOL = 1e-4


def leaves(outs) -> list[Tensor]:
    return list(outs) if isinstance(outs, (tuple, list)) else [outs]


def weighted_loss(outs, seed: int = 0):
    """A scalar that reaches every float output with its own random weights."""
    rng = np.random.default_rng(seed)
    total = None
    for o in leaves(outs):
        if isinstance(o, tuple):  # an LSTM's (h, c)
            o = o[0]
        if o.dtype.kind != "f":
            continue
        w = Tensor(rng.standard_normal(o.shape).astype(o.dtype), trainable=False)
        term = (o * w).sum()
        total = term if total is None else total + term
    return total


def flat_outputs(outs) -> list[Tensor]:
    flat = []
    for o in leaves(outs):
        flat.extend(o if isinstance(o, tuple) else [o])
    return flat


def gradients(run, inputs, trainable, seed: int = 0) -> list[np.ndarray]:
    for t in trainable:
        t.zero_grad()
    weighted_loss(flat_outputs(run(*inputs)), seed).backward()
    return [t.grad.copy() for t in trainable]


def assert_close(actual, expected, what: str, rtol=RTOL, atol=1e-5) -> None:
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# ---- every op ----------------------------------------------------------------------------------

GRAD_CASES = [
    c
    for c in CASES
    if OPS[c.op].differentiable and OPS[c.op].pure and any(a.dtype.kind == "f" for a in c.inputs)
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_compiled_gradients_match_eager_for_every_op(case):
    eager_args, compiled_args = case.tensors(), case.tensors()
    if case.fn(*eager_args).dtype.kind != "f":
        pytest.skip("integer output: no gradient")
    trainable = [t for t in eager_args if t.trainable]
    expected = gradients(case.fn, eager_args, trainable)
    compiled = mytorch.compile(case.fn, fullgraph=True)
    actual = gradients(compiled, compiled_args, [t for t in compiled_args if t.trainable])
    assert compiled.backward_graph is not None, "the backward was not compiled"
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_close(a, e, f"gradient of input {k}, {case.id}")


def finite_differences(fn, inputs, target: Tensor, seed: int, coords: int = 12, eps=1e-6):
    """d loss / d target at up to `coords` random coordinates, by central differences."""
    rng = np.random.default_rng(seed + 1)
    flat = target.data.reshape(-1)  # a view: perturbs the tensor in place
    picks = rng.choice(flat.size, size=min(coords, flat.size), replace=False)
    estimate = {}
    with mytorch.no_grad():
        for i in picks:
            saved = flat[i]
            flat[i] = saved + eps
            up = weighted_loss(flat_outputs(fn(*inputs)), seed).item()
            flat[i] = saved - eps
            down = weighted_loss(flat_outputs(fn(*inputs)), seed).item()
            flat[i] = saved
            estimate[int(i)] = (up - down) / (2 * eps)
    return estimate


def assert_matches_finite_differences(fn, compiled, inputs, trainable, seed=0, what=""):
    grads = gradients(compiled, inputs, trainable, seed)
    for k, (t, g) in enumerate(zip(trainable, grads, strict=True)):
        for i, fd in finite_differences(fn, inputs, t, seed).items():
            got = g.reshape(-1)[i]
            assert abs(got - fd) <= 1e-6 + 1e-5 * abs(fd), (
                f"{what} gradient {k} {t.shape} at flat index {i}: compiled {got}, "
                f"finite differences {fd}"
            )


def float64_case_inputs(case) -> list[Tensor] | None:
    """The case's inputs with floats as float64 (None when the case pins a float dtype)."""
    if "dtype" in case.params:
        return None
    return [
        Tensor(a.astype(np.float64), dtype=np.float64, trainable=True)
        if a.dtype.kind == "f"
        else Tensor(a.copy(), dtype=a.dtype, trainable=False)
        for a in case.inputs
    ]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_compiled_gradients_match_finite_differences_for_every_op(case):
    inputs = float64_case_inputs(case)
    if inputs is None or case.op == "loop":
        pytest.skip("the case pins a float32 dtype")
    if case.fn(*inputs).dtype.kind != "f":
        pytest.skip("integer output: no gradient")
    compiled = mytorch.compile(case.fn, fullgraph=True)
    trainable = [t for t in inputs if t.trainable]
    assert_matches_finite_differences(case.fn, compiled, inputs, trainable, what=case.id)


# ---- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_compiled_gradients_match_eager_for_every_model(model):
    fn, inputs = model.build()
    params = parameters_of(fn)
    compiled = mytorch.compile(fn, fullgraph=True)
    eager = gradients(fn, inputs, params)
    native = gradients(compiled, inputs, params)
    assert compiled.backward_graph is not None
    assert params and all(np.any(g) for g in eager)
    for k, (a, e) in enumerate(zip(native, eager, strict=True)):
        assert_close(a, e, f"{model.name}: gradient of parameter {k} {params[k].shape}")


def tutorial_float64(steps: int):
    rnn = to_float64(tutorial_rnn())
    input_size, hidden_size, _ = TUTORIAL_SIZES
    rng = np.random.default_rng(5)
    xs = Tensor(rng.standard_normal((steps, 2, input_size)), dtype=np.float64, trainable=False)
    h0 = Tensor(rng.standard_normal((2, hidden_size)), dtype=np.float64, trainable=True)
    return unrolled(rnn, steps), (xs, h0), list(rnn.parameters())


@pytest.mark.parametrize("steps", [1, 2, 9])
def test_the_tutorial_loop_matches_finite_differences(steps):
    fn, inputs, params = tutorial_float64(steps)
    compiled = mytorch.compile(fn, fullgraph=True)
    trainable = params + [inputs[1]]  # the initial state is trainable too
    assert_matches_finite_differences(fn, compiled, inputs, trainable, what=f"T={steps}")
    if steps > 1:  # a re-rolled loop: backpropagation through time is a reverse loop
        assert "reverse=True" in str(compiled.backward_graph)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.RNN(4, 5, num_layers=2),
        lambda: nn.LSTM(4, 5),
        lambda: nn.GRU(4, 5),
        lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)),
    ],
    ids=["rnn-2layer", "lstm", "gru", "mlp"],
)
def test_modules_match_finite_differences(make):
    mytorch.manual_seed(21)
    model = to_float64(make())
    rng = np.random.default_rng(22)
    shape = (3, 4) if isinstance(model, nn.Sequential) else (3, 2, 4)
    x = Tensor(rng.standard_normal(shape), dtype=np.float64, trainable=True)
    compiled = mytorch.compile(model, fullgraph=True)
    params = list(model.parameters())
    assert_matches_finite_differences(model, compiled, (x,), params + [x], what=repr(make()))


@pytest.mark.parametrize("hidden, batch", [(70, 5), (70, 1), (19, 3), (128, 32)])
def test_reverse_loop_weight_panels_at_odd_sizes(hidden, batch):
    """The reverse loop reads W_hh through column panels copied before its first step: whole
    panels and a partial last one, for few and many rows."""
    mytorch.manual_seed(3)
    model = nn.RNN(6, hidden)
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((5, batch, 6)).astype(np.float32), trainable=False)
    compiled = mytorch.compile(model, fullgraph=True)
    params = list(model.parameters())
    eager = gradients(model, (x,), params)
    native = gradients(compiled, (x,), params)
    assert "reverse=True" in str(compiled.backward_graph)
    for k, (a, e) in enumerate(zip(native, eager, strict=True)):
        assert_close(a, e, f"H={hidden} B={batch}: gradient of parameter {k}", atol=1e-4)


# ---- autograd semantics ------------------------------------------------------------------------


def test_trainable_inputs_get_gradients_and_gradients_accumulate():
    fn, inputs, params = tutorial_float64(4)
    xs, h0 = inputs
    xs.trainable = True
    compiled = mytorch.compile(fn, fullgraph=True)
    trainable = params + [xs, h0]
    once = gradients(compiled, inputs, trainable)
    expected = gradients(fn, inputs, trainable)
    for t in trainable:
        t.zero_grad()
    for _ in range(2):  # two forward+backward rounds without zero_grad accumulate
        weighted_loss(flat_outputs(compiled(*inputs))).backward()
    for k, (t, g, e) in enumerate(zip(trainable, once, expected, strict=True)):
        assert_close(g, e, f"gradient {k}", rtol=1e-9, atol=1e-12)
        assert_close(t.grad, 2 * e, f"accumulated gradient {k}", rtol=1e-9, atol=1e-12)


def test_after_zero_grad_the_compiled_gradient_is_taken_over_without_aliasing():
    fn, inputs, params = tutorial_float64(3)
    compiled = mytorch.compile(fn, fullgraph=True)
    expected = gradients(fn, inputs, params)
    kept = [p.grad for p in params]  # arrays a user holds from before zero_grad
    for p in params:
        p.zero_grad()
        assert p.grad.shape == p.shape and p.grad.dtype == p.dtype and not p.grad.any()
        p.zero_grad()  # the lazy zeros again, so the backward below finds none to add into
    weighted_loss(flat_outputs(compiled(*inputs))).backward()
    got = [p.grad for p in params]
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert_close(g, e, f"gradient {k}", rtol=1e-9, atol=1e-12)
    weighted_loss(flat_outputs(compiled(*inputs))).backward()  # adds into the arrays taken
    for k, (p, g, e) in enumerate(zip(params, got, expected, strict=True)):
        assert p.grad is g, f"gradient {k} was replaced instead of accumulated"
        assert_close(g, 2 * e, f"accumulated gradient {k}", rtol=1e-9, atol=1e-12)
    assert len({id(g) for g in got}) == len(got)  # every parameter has its own array
    assert all(not any(g is h for h in got) for g in kept)


def test_repeated_training_calls_follow_changes_in_what_is_trainable_and_in_shapes():
    rnn = tutorial_rnn()
    compiled = mytorch.compile(unrolled(rnn, 3), fullgraph=True)
    rng = np.random.default_rng(2)
    h0 = mytorch.zeros(1, 4)

    def grads_of(run, xs):
        rnn.zero_grad()
        out, hidden = run(xs, h0)
        (out * out).mean().backward()
        return [p.grad.copy() for p in rnn.parameters()]

    xs = Tensor(rng.standard_normal((3, 1, 12)).astype(np.float32), trainable=False)
    def check(xs, what):
        eager = grads_of(unrolled(rnn, 3), xs)
        for k, (a, e) in enumerate(zip(grads_of(compiled, xs), eager, strict=True)):
            assert_close(a, e, f"gradient {k} {what}")

    for _ in range(2):  # the second call takes the repeated-call path
        check(xs, "")
    rnn.h2o.weight.trainable = False  # frozen: its gradient must stay zero
    got = grads_of(compiled, xs)
    assert not got[2].any()
    rnn.h2o.weight.trainable = True
    xs.trainable = True  # now the input wants its gradient too
    xs.zero_grad()
    grads_of(compiled, xs)
    want = xs.grad.copy()
    xs.zero_grad()
    grads_of(unrolled(rnn, 3), xs)
    assert_close(want, xs.grad, "input gradient")
    wider = Tensor(rng.standard_normal((3, 2, 12)).astype(np.float32), trainable=False)
    h0 = mytorch.zeros(2, 4)  # another batch size: another signature
    check(wider, "at batch 2")


def test_a_loss_on_some_outputs_gets_zero_cotangents_for_the_rest():
    rnn = tutorial_rnn()
    fn = unrolled(rnn, 3)
    compiled = mytorch.compile(fn, fullgraph=True)
    xs = Tensor(np.random.default_rng(1).standard_normal((3, 1, 12)).astype(np.float32))
    h0 = mytorch.zeros(1, 4)
    grads = []
    for run in (fn, compiled):
        rnn.zero_grad()
        out, hidden = run(xs, h0)
        hidden.sum().backward()  # `out` takes no part in the loss
        grads.append([p.grad.copy() for p in rnn.parameters()])
    for k, (a, e) in enumerate(zip(*reversed(grads), strict=True)):
        assert_close(a, e, f"gradient {k}")
    assert not np.any(rnn.h2o.weight.grad)


def test_no_backward_is_built_without_gradients():
    rnn = tutorial_rnn()
    compiled = mytorch.compile(unrolled(rnn, 3), fullgraph=True)
    xs, h0 = mytorch.randn(3, 1, 12), mytorch.zeros(1, 4)
    with mytorch.no_grad():
        out, _ = compiled(xs, h0)
    assert compiled.backward_graph is None and not out.trainable
    for p in rnn.parameters():
        p.trainable = False
    out, _ = compiled(xs, h0)
    assert compiled.backward_graph is None and not out.trainable


def sgd_run(rnn, run, xs, h0, steps=3):
    optimizer = mytorch.optim.SGD(rnn.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        out, hidden = run(xs, h0)
        loss = (out * out).mean() + (hidden * hidden).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [p.data.copy() for p in rnn.parameters()]


def test_three_sgd_steps_match_eager_step_for_step():
    xs = Tensor(np.random.default_rng(2).standard_normal((6, 2, 12)).astype(np.float32))
    h0 = mytorch.zeros(2, 4)
    eager_rnn, compiled_rnn = tutorial_rnn(), tutorial_rnn()
    compiled_rnn.load_state_dict(eager_rnn.state_dict())
    eager = sgd_run(eager_rnn, unrolled(eager_rnn, 6), xs, h0)
    native = sgd_run(compiled_rnn, mytorch.compile(unrolled(compiled_rnn, 6)), xs, h0)
    np.testing.assert_allclose(native[0], eager[0], rtol=RTOL)
    for k, (a, e) in enumerate(zip(native[1], eager[1], strict=True)):
        assert_close(a, e, f"parameter {k} after 3 steps")


def test_bptt_over_a_long_sequence_runs_natively():
    steps = 2000
    rnn = tutorial_rnn()
    fn = unrolled(rnn, steps)
    compiled = mytorch.compile(fn, fullgraph=True)
    xs = Tensor(np.random.default_rng(3).standard_normal((steps, 1, 12)).astype(np.float32) * 0.1)
    h0 = mytorch.zeros(1, 4)
    native = gradients(compiled, (xs, h0), list(rnn.parameters()))
    eager = gradients(fn, (xs, h0), list(rnn.parameters()))
    for k, (a, e) in enumerate(zip(native, eager, strict=True)):
        assert_close(a, e, f"gradient {k}", rtol=1e-3, atol=1e-4)
    assert len(compiled.backward_graph) < 60  # the reverse loop, not 2000 unrolled steps
