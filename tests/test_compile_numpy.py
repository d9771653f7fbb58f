"""`mytorch.compile(..., backend="numpy", passes=[])`: per-signature caching, the calling
convention (Tensors and nesting), decorators, compiled Modules, gradients, input errors, dumps."""

from __future__ import annotations

import os
from collections import namedtuple

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.ir import Graph
from tests.ir.programs import mlp, sequence_inputs, tutorial_rnn, unrolled

RTOL, ATOL = 1e-5, 1e-6


def numpy_compile(fn=None, **options):
    return mytorch.compile(fn, backend="numpy", passes=[], **options)


def close(actual: Tensor, expected: Tensor) -> None:
    assert isinstance(actual, Tensor), f"expected a Tensor, got {type(actual).__name__}"
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual.data, expected.data, rtol=RTOL, atol=ATOL)


class Counted:
    """A function that counts how often its Python body runs."""

    def __init__(self, body):
        self.body = body
        self.runs = 0
        self.__name__ = body.__name__

    def __call__(self, *args, **kwargs):
        self.runs += 1
        return self.body(*args, **kwargs)


def affine(x, w):
    return (x @ w).tanh() * 2.0


# ---- caching per signature ------------------------------------------------------------------


def test_a_second_call_with_the_same_signature_does_not_rerun_python():
    fn = Counted(affine)
    compiled = numpy_compile(fn)
    x, w = mytorch.randn(2, 3), mytorch.randn(3, 4)
    close(compiled(x, w), affine(x, w))
    other_x = mytorch.randn(2, 3)  # same shape, new values
    close(compiled(other_x, w), affine(other_x, w))
    assert fn.runs == 1


def test_new_shapes_and_dtypes_retrace_and_stay_correct():
    fn = Counted(affine)
    compiled = numpy_compile(fn)
    w = mytorch.randn(3, 4)
    signatures = [
        (mytorch.randn(2, 3), w),
        (mytorch.randn(5, 3), w),  # new batch size
        (mytorch.randn(2, 3).double(), w.double()),  # new dtypes
        (mytorch.randn(6, 2, 3), w),  # new rank
    ]
    for k, (x, w_k) in enumerate(signatures, start=1):
        out = compiled(x, w_k)
        close(out, affine(x, w_k))
        assert fn.runs == k, f"signature {k} did not retrace"
    for x, w_k in signatures:  # all cached now
        close(compiled(x, w_k), affine(x, w_k))
    assert fn.runs == len(signatures)


def test_static_python_arguments_are_part_of_the_signature():
    fn = Counted(lambda x, scale: x * scale)
    compiled = numpy_compile(fn)
    x = mytorch.randn(3)
    for scale in (2.0, 3.0, 2.0):
        close(compiled(x, scale), x * scale)
    assert fn.runs == 2


class Noisy(nn.Module):
    """Linear then Dropout: training and eval mode compute different things."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.dropout = nn.Dropout(0.5)
        self.runs = 0

    def forward(self, x):
        self.runs += 1
        return self.dropout(self.linear(x))


def test_train_and_eval_mode_retrace_and_stay_correct():
    mytorch.manual_seed(0)
    model = Noisy()
    compiled = numpy_compile(model)
    x = mytorch.randn(3, 4)

    def traced_runs(call):
        before = model.runs
        out = call(x)
        return out, model.runs - before

    mytorch.manual_seed(5)
    train_out, runs = traced_runs(compiled)
    assert runs == 1
    mytorch.manual_seed(5)
    close(train_out, model(x))  # the same dropout mask under the same seed
    compiled.eval()
    assert not model.training
    eval_out, runs = traced_runs(compiled)
    assert runs == 1, "eval mode did not retrace"
    close(eval_out, model.linear(x))
    assert traced_runs(compiled)[1] == 0
    compiled.train()
    mytorch.manual_seed(6)
    again, runs = traced_runs(compiled)
    assert runs == 0, "back in training mode, the first build is reused"
    mytorch.manual_seed(6)
    close(again, model(x))


def test_grad_mode_retraces_and_stays_correct():
    fn = Counted(affine)
    compiled = numpy_compile(fn)
    x, w = mytorch.randn(2, 3), mytorch.randn(3, 4, trainable=True)
    with_grad = compiled(x, w)
    assert with_grad.trainable
    with mytorch.no_grad():
        without = compiled(x, w)
    assert fn.runs == 2
    assert not without.trainable
    close(without, with_grad)
    compiled(x, w)
    with mytorch.no_grad():
        compiled(x, w)
    assert fn.runs == 2


# ---- calling convention ------------------------------------------------------------------------

Pair = namedtuple("Pair", ["first", "second"])


def nested(x, y):
    return {
        "sum": x + y,
        "pair": (x * y, [x - y, (x.tanh(),)]),
        "named": Pair(x.sum(), y.mean()),
        "count": 3,
    }


def test_tensors_in_tensors_out_with_the_same_nesting():
    x, y = mytorch.randn(2, 3), mytorch.randn(2, 3)
    expected = nested(x, y)
    actual = numpy_compile(nested)(x, y)
    assert type(actual) is dict and list(actual) == list(expected)
    close(actual["sum"], expected["sum"])
    assert type(actual["pair"]) is tuple and type(actual["pair"][1]) is list
    assert type(actual["pair"][1][1]) is tuple
    close(actual["pair"][0], expected["pair"][0])
    close(actual["pair"][1][0], expected["pair"][1][0])
    close(actual["pair"][1][1][0], expected["pair"][1][1][0])
    assert type(actual["named"]) is Pair
    close(actual["named"].first, expected["named"].first)
    close(actual["named"].second, expected["named"].second)
    assert actual["count"] == 3


def test_nested_inputs():
    def f(pair, table):
        return pair[0] * table["scale"] + pair[1]

    a, b, s = mytorch.randn(3), mytorch.randn(3), mytorch.randn(3)
    compiled = numpy_compile(f)
    close(compiled((a, b), {"scale": s}), f((a, b), {"scale": s}))
    close(compiled([a, b], {"scale": s}), f([a, b], {"scale": s}))


def test_keyword_arguments():
    compiled = numpy_compile(affine)
    x, w = mytorch.randn(2, 3), mytorch.randn(3, 4)
    close(compiled(x, w=w), affine(x, w))
    close(compiled(w=w, x=x), affine(x, w))


def test_outputs_that_are_inputs_or_integers():
    def f(x):
        return x, x.argmax(dim=1), x > 0

    x = mytorch.randn(2, 3)
    out = numpy_compile(f)(x)
    for a, e in zip(out, f(x), strict=True):
        close(a, e)


def test_the_compiled_graph_is_the_last_signature_used():
    compiled = numpy_compile(affine)
    assert compiled.graph is None
    compiled(mytorch.randn(2, 3), mytorch.randn(3, 4))
    assert isinstance(compiled.graph, Graph)
    assert compiled.graph.inputs[0].type.shape == (2, 3)
    assert "tanh" in compiled.graph.op_counts()
    compiled(mytorch.randn(7, 3), mytorch.randn(3, 4))
    assert compiled.graph.inputs[0].type.shape == (7, 3)
    compiled(mytorch.randn(2, 3), mytorch.randn(3, 4))
    assert compiled.graph.inputs[0].type.shape == (2, 3)


@pytest.mark.parametrize("passes", [[], "none"])
def test_with_no_passes_the_graph_is_the_trace(passes):
    x, w = mytorch.randn(2, 3), mytorch.randn(3, 4)
    compiled = mytorch.compile(affine, backend="numpy", passes=passes)
    compiled(x, w)
    assert str(compiled.graph) == str(mytorch.trace(affine, x, w))


# ---- decorators ------------------------------------------------------------------------------


def test_decorator_with_options():
    @mytorch.compile(backend="numpy", passes=[])
    def scaled_tanh(x):
        """Doubles tanh."""
        return x.tanh() * 2

    x = mytorch.randn(4)
    close(scaled_tanh(x), x.tanh() * 2)
    assert scaled_tanh.__name__ == "scaled_tanh"
    assert scaled_tanh.__doc__ == "Doubles tanh."
    assert scaled_tanh.graph is not None


def test_bare_decorator(monkeypatch):
    from mytorch.codegen import BACKENDS, numpy_backend
    from mytorch.plugins import load_entry_points

    load_entry_points()
    if "llvm" not in BACKENDS:
        # NOTE: the decorator's wiring is under test here, not the llvm backend.
        monkeypatch.setitem(BACKENDS, "llvm", numpy_backend)

    @mytorch.compile
    def scaled_tanh(x):
        return x.tanh() * 2

    x = mytorch.randn(4)
    close(scaled_tanh(x), x.tanh() * 2)
    assert scaled_tanh.__name__ == "scaled_tanh"


# ---- compiled Modules ------------------------------------------------------------------------


def test_a_compiled_module_still_behaves_as_the_module():
    model = tutorial_rnn()
    compiled = numpy_compile(model)
    assert list(compiled.parameters()) == list(model.parameters())
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in model.named_parameters()]
    state = compiled.state_dict()
    assert list(state) == ["i2h.weight", "i2h.bias", "h2o.weight", "h2o.bias"]
    np.testing.assert_array_equal(state["i2h.weight"], model.i2h.weight.data)
    assert compiled.i2h is model.i2h and compiled.hidden_size == 4
    assert compiled.training
    assert compiled.eval() is compiled, "like Module.eval(), it returns itself (for chaining)"
    assert not model.training and not compiled.training
    assert compiled.train() is compiled
    assert model.training
    x, h = mytorch.randn(1, 12), mytorch.zeros(1, 4)
    out, hidden = compiled(x, h)
    expected_out, expected_hidden = model(x, h)
    close(out, expected_out)
    close(hidden, expected_hidden)


def test_load_state_dict_through_the_compiled_module():
    model, other = tutorial_rnn(seed=1), tutorial_rnn(seed=2)
    compiled = numpy_compile(model)
    x, h = mytorch.randn(1, 12), mytorch.zeros(1, 4)
    compiled(x, h)
    compiled.load_state_dict(other.state_dict())
    close(compiled(x, h)[0], other(x, h)[0])


# ---- training through compiled code ----------------------------------------------------------


def _loss(outputs):
    output, hidden = outputs
    return (output * output).sum() + hidden.sum()


def test_backward_gives_eager_gradients_for_params_and_inputs():
    rnn = tutorial_rnn()
    run_sequence = unrolled(rnn, 5)
    xs, h0 = sequence_inputs(5)
    xs.trainable = h0.trainable = True
    sources = [xs, h0, *rnn.parameters()]

    _loss(run_sequence(xs, h0)).backward()
    eager = [t.grad.copy() for t in sources]
    for t in sources:
        t.zero_grad()
    _loss(numpy_compile(run_sequence)(xs, h0)).backward()
    for t, e in zip(sources, eager, strict=True):
        assert np.any(e != 0)
        np.testing.assert_allclose(t.grad, e, rtol=RTOL, atol=ATOL)


def test_gradients_accumulate_over_compiled_calls():
    model = mlp()
    compiled = numpy_compile(model)
    x = mytorch.randn(4, 3)
    (model(x) ** 2).sum().backward()
    once = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    for _ in range(2):
        (compiled(x) ** 2).sum().backward()
    for p, g in zip(model.parameters(), once, strict=True):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=RTOL, atol=ATOL)


def test_backward_with_an_explicit_gradient_of_a_non_scalar_output():
    model = mlp()
    x = mytorch.randn(4, 3, trainable=True)
    seed = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    model(x).backward(seed)
    eager = [x.grad.copy()] + [p.grad.copy() for p in model.parameters()]
    x.zero_grad()
    model.zero_grad()
    numpy_compile(model)(x).backward(seed)
    for t, e in zip([x, *model.parameters()], eager, strict=True):
        np.testing.assert_allclose(t.grad, e, rtol=RTOL, atol=ATOL)


def test_an_optimizer_trains_through_compiled_code_as_through_eager():
    eager_model, compiled_model = mlp(seed=3), mlp(seed=3)
    compiled = numpy_compile(compiled_model)
    x = mytorch.randn(8, 3)
    target = mytorch.randn(8, 2)
    losses = []
    for model, forward in ((eager_model, eager_model), (compiled_model, compiled)):
        optimizer = mytorch.optim.SGD(model.parameters(), lr=0.1)
        history = []
        for _ in range(5):
            optimizer.zero_grad()
            loss = ((forward(x) - target) ** 2).mean()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
        losses.append(history)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert losses[0][-1] < losses[0][0]


def test_no_gradient_flows_through_an_integer_cast():
    def f(x, w):
        return (x.to(np.int64) * w).sum()

    x = Tensor(np.array([1.5, 2.5, -0.5], np.float32))
    w = mytorch.randn(3, trainable=True)
    f(x, w).backward()
    eager = x.grad.copy(), w.grad.copy()
    x.zero_grad()
    w.zero_grad()
    numpy_compile(f)(x, w).backward()
    np.testing.assert_array_equal(x.grad, eager[0])
    np.testing.assert_allclose(w.grad, eager[1], rtol=RTOL)


def test_outputs_under_no_grad_have_no_tape():
    model = mlp()
    with mytorch.no_grad():
        out = numpy_compile(model)(mytorch.randn(4, 3))
    assert not out.trainable and out._prev == ()


# ---- wrong inputs -----------------------------------------------------------------------------


def test_wrong_argument_count_is_a_type_error():
    compiled = numpy_compile(affine)
    x, w = mytorch.randn(2, 3), mytorch.randn(3, 4)
    compiled(x, w)
    with pytest.raises(TypeError, match="w"):
        compiled(x)
    with pytest.raises(TypeError):
        compiled(x, w, w)


def test_a_non_tensor_where_a_tensor_was_is_a_type_error():
    compiled = numpy_compile(affine)
    x, w = mytorch.randn(2, 3), mytorch.randn(3, 4)
    compiled(x, w)
    with pytest.raises(TypeError, match="ndarray"):
        compiled(x, w.data)
    with pytest.raises(TypeError, match="str"):
        compiled(x, "weights")
    with pytest.raises(TypeError):
        compiled(x, None)
    close(compiled(x, w), affine(x, w))  # still fine afterwards


def test_a_wrong_shape_is_the_same_error_as_eager():
    compiled = numpy_compile(mlp())
    compiled(mytorch.randn(4, 3))
    with pytest.raises(ValueError, match="in_features=3"):
        compiled(mytorch.randn(4, 5))


# ---- dumps ---------------------------------------------------------------------------------------


def _dump_folders(root) -> list[str]:
    return sorted(os.listdir(root))


def test_dump_writes_the_trace_of_every_signature(tmp_path):
    compiled = mytorch.compile(affine, backend="numpy", passes=[], dump=str(tmp_path))
    x, w = mytorch.randn(2, 3), mytorch.randn(3, 4)
    compiled(x, w)
    compiled(x, w)  # cached: no new folder
    y = mytorch.randn(5, 3)
    compiled(y, w)
    assert _dump_folders(tmp_path) == ["affine-0", "affine-1"]
    first = (tmp_path / "affine-0" / "000_trace.txt").read_text()
    second = (tmp_path / "affine-1" / "000_trace.txt").read_text()
    assert first.rstrip("\n") == str(mytorch.trace(affine, x, w))
    assert second.rstrip("\n") == str(mytorch.trace(affine, y, w))


def test_dump_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("MYTORCH_DUMP", str(tmp_path))
    model = tutorial_rnn()
    compiled = numpy_compile(model)
    x, h = mytorch.randn(1, 12), mytorch.zeros(1, 4)
    compiled(x, h)
    folders = _dump_folders(tmp_path)
    assert folders == ["RNN-0"], folders
    text = (tmp_path / "RNN-0" / "000_trace.txt").read_text()
    assert text.rstrip("\n") == str(mytorch.trace(model, x, h))


def test_no_dump_without_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv("MYTORCH_DUMP", raising=False)
    monkeypatch.chdir(tmp_path)
    numpy_compile(affine)(mytorch.randn(2, 3), mytorch.randn(3, 4))
    assert os.listdir(tmp_path) == []


def test_an_exception_inside_the_function_propagates_and_leaves_eager_mode_working():
    def broken(x):
        x = x * 2
        raise KeyError("boom")

    compiled = numpy_compile(broken)
    for _ in range(2):  # a failed trace is not cached as a build
        with pytest.raises(KeyError, match="boom"):
            compiled(mytorch.ones(2))
    y = mytorch.ones(2, trainable=True)
    (y * 3).sum().backward()
    np.testing.assert_array_equal(y.grad, [3.0, 3.0])
    close(
        numpy_compile(affine)(mytorch.ones(1, 3), mytorch.ones(3, 2)),
        affine(mytorch.ones(1, 3), mytorch.ones(3, 2)),
    )
