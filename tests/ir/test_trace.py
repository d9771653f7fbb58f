"""Tracing: what becomes a graph input, a parameter or a constant, live parameter reads, and the
data-dependent operations that cannot be traced (CompileError, or an eager fallback)."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

import mytorch
from mytorch import CompileError, Tensor, nn
from mytorch.ir.interpreter import run

from .programs import TutorialCatRNN, mlp, sequence_inputs, tutorial_rnn, unrolled


def line_of(marker: str, path: str = __file__) -> int:
    """The line number of the one source line containing `marker` (a comment tag)."""
    with open(path) as f:
        hits = [k for k, line in enumerate(f, start=1) if marker in line]
    assert len(hits) == 1, f"marker {marker!r} found on lines {hits}"
    return hits[0]


def where(marker: str, path: str = __file__) -> str:
    """A regex for 'file:line' of the source line containing `marker`."""
    return re.escape(f"{os.path.basename(path)}:{line_of(marker, path)}")


def tagged(tag: str) -> str:
    """A regex for 'file:line' of the line in this file ending in the comment `# tag:<tag>`."""
    return where("# tag:" + tag)


def compiled_numpy(fn, **options):
    return mytorch.compile(fn, backend="numpy", passes=[], **options)


# ---- inputs, parameters, constants ------------------------------------------------------------


def test_module_parameters_become_named_param_inputs_after_the_arguments():
    model = mlp()
    graph = mytorch.trace(model, mytorch.randn(4, 3))
    names = [n for n, _ in model.named_parameters()]
    assert [i.op for i in graph.inputs] == ["input"] + ["param"] * 4
    assert [i.name for i in graph.inputs[1:]] == names
    for node, (_, p) in zip(graph.inputs[1:], model.named_parameters(), strict=True):
        assert node.type.shape == p.shape and node.type.dtype == p.dtype
    assert not any(n.is_const for n in graph.nodes), "a parameter was baked in as a constant"


def test_closure_captured_tensors_are_params_and_python_numbers_are_consts():
    weight = mytorch.randn(3, 3)
    bias = nn.Parameter(np.ones(3, np.float32))

    def f(x):
        return (x @ weight + bias) * 2.0 + mytorch.ones(3) - 1

    graph = mytorch.trace(f, mytorch.randn(2, 3))
    assert [i.op for i in graph.inputs] == ["input", "param", "param"]
    consts = [n for n in graph.nodes if n.is_const]
    assert len(consts) == 3, graph
    assert sorted(float(c.value.ravel()[0]) for c in consts) == [1.0, 1.0, 2.0]
    assert {c.value.dtype for c in consts} == {np.dtype(np.float32)}
    assert "param" in str(graph).split("\n")[0]


def test_tensors_made_inside_from_data_are_consts_with_their_values():
    def f(x):
        return x + mytorch.tensor(np.array([[1.0, 2.0, 3.0]], np.float32))

    graph = mytorch.trace(f, mytorch.zeros(2, 3))
    (const,) = [n for n in graph.nodes if n.is_const]
    np.testing.assert_array_equal(const.value, [[1.0, 2.0, 3.0]])
    assert "value=[[1.0, 2.0, 3.0]]" in str(graph)


def test_a_tensor_used_twice_is_one_param_input():
    shared = mytorch.randn(3, 3)

    def f(x):
        return x @ shared @ shared + shared.sum()

    graph = mytorch.trace(f, mytorch.randn(2, 3))
    assert [i.op for i in graph.inputs] == ["input", "param"]
    assert len(graph.inputs[1].users) == 3


def test_argument_names_come_from_the_signature_and_containers():
    def f(x, pair, mapping, scale=1.0):
        return x * scale + pair[0] * pair[1] + mapping["bias"]

    t = mytorch.ones(2)
    graph = mytorch.trace(f, t, (t, t), {"bias": t}, 3.0)
    assert [i.name for i in graph.inputs] == ["x", "pair_0", "pair_1", "mapping_bias"]
    assert all(i.op == "input" for i in graph.inputs)
    (scale,) = [n for n in graph.nodes if n.is_const]
    assert float(scale.value) == 3.0, "a static Python argument is a constant of the trace"


def test_module_arguments_are_named_after_forward():
    graph = mytorch.trace(tutorial_rnn(), mytorch.randn(1, 12), mytorch.zeros(1, 4))
    assert [i.name for i in graph.inputs[:2]] == ["input", "hidden"]


class Scale(nn.Module):
    """A module whose parameter is named like its forward argument."""

    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(np.full(3, 2.0, np.float32))

    def forward(self, x):
        return x * self.x


def test_a_parameter_named_like_an_argument_gets_a_fresh_name():
    labelled = [Tensor(np.ones(3, np.float32), label="x")]
    for fn in (Scale(), lambda x: x + labelled[0]):
        graph = mytorch.trace(fn, mytorch.ones(3))
        names = [i.name for i in graph.all_values()]
        assert len(set(names)) == len(names), names
        assert [i.op for i in graph.inputs] == ["input", "param"]
        assert graph.inputs[0].name == "x"
        compiled = compiled_numpy(fn)
        x = mytorch.randn(3)
        np.testing.assert_allclose(compiled(x).data, fn(x).data)


def test_the_python_loop_is_unrolled():
    rnn = tutorial_rnn()
    graph = mytorch.trace(unrolled(rnn, 6), *sequence_inputs(6))
    assert graph.op_counts()["tanh"] == 6
    assert graph.op_counts()["getitem"] == 6  # xs[t]
    assert len([i for i in graph.inputs if i.is_param]) == 4, "weights are shared by all steps"
    assert len(graph.outputs) == 2


def test_an_op_on_parameters_only_is_recorded_once():
    lin = nn.Linear(3, 3)
    scale = mytorch.randn(3)

    def fn(x):
        for _ in range(4):
            x = (lin(x) * scale).tanh()  # lin.weight.T: the same value every step
        return x + lin.weight.T.sum() + (lin.weight * 2).sum() + (lin.weight * 3).sum()

    graph = mytorch.trace(fn, mytorch.randn(2, 3))
    counts = graph.op_counts()
    assert counts["transpose"] == 1  # all five `lin.weight.T`
    assert counts["matmul"] == 4 and counts["tanh"] == 4
    assert counts["mul"] == 4 + 2  # each reads a traced value or a number's constant
    x = mytorch.randn(2, 3)
    (out,) = run(graph, [x.data, lin.weight.data, lin.bias.data, scale.data])
    np.testing.assert_allclose(out, fn(x).data, rtol=1e-5)


def test_each_traced_op_records_the_users_source_line():
    def fn(x):
        for _ in range(3):
            x = x.tanh()  # tag:loop-line
        y = x.tanh()  # tag:after-line
        return (x.T).tanh() + y  # tag:nested-line

    graph = mytorch.trace(fn, mytorch.randn(2, 2))
    lines = {op: [] for op in ("tanh", "transpose", "add")}
    for node in graph.nodes:
        if node.op in lines:
            assert node.loc[0] == __file__
            lines[node.op].append(node.loc[1])
    # The same call site every loop step, then a different line in the same function (the
    # locations are cached per call site); ops made inside mytorch (x.T) are the user's line.
    loop, after, nested = (line_of(f"# tag:{t}-line") for t in ("loop", "after", "nested"))
    assert lines == {"tanh": [loop] * 3 + [after, nested], "transpose": [nested], "add": [nested]}


def test_ops_made_deep_inside_mytorch_get_the_line_that_called_into_it():
    lin, rnn = nn.Linear(2, 2), nn.RNN(2, 2)

    def fn(x):
        y = lin(x)  # tag:first-call
        y = lin(y)  # tag:second-call
        return rnn(y.reshape(3, 1, 2))  # tag:rnn-call

    graph = mytorch.trace(fn, mytorch.randn(3, 2))
    first, second, third = (line_of(f"# tag:{t}-call") for t in ("first", "second", "rnn"))
    lines = [node.loc[1] for node in graph.nodes if node.loc]
    # (the second call reuses the first's `weight.T`: an op on parameters is recorded once)
    assert lines == [first] * 3 + [second] * 2 + [third] * (len(lines) - 5)


def test_user_code_inside_a_module_call_gets_its_own_lines():
    # (The lines are what walking the stack from each op gives: a module of mytorch's own
    # records its ops at the line that called it without the walk.)
    class Scaled(nn.Linear):  # a user's subclass: its forward is user code
        def forward(self, x):
            return super().forward(x) * 2  # tag:subclass-line

    class Double(nn.Module):
        def forward(self, x):
            return x + x  # tag:user-module-line

    model = nn.Sequential(nn.Linear(2, 2), Double(), Scaled(2, 2))

    def fn(x):
        return model(x)  # tag:model-line

    graph = mytorch.trace(fn, mytorch.randn(3, 2))
    tags = ("model", "user-module", "subclass")
    model_line, user, sub = (line_of(f"# tag:{t}-line") for t in tags)
    lines = [(node.op, node.loc[1]) for node in graph.nodes if node.loc]
    assert lines == [
        ("transpose", model_line),
        ("matmul", model_line),
        ("add", model_line),
        ("add", user),
        ("transpose", sub),
        ("matmul", sub),
        ("add", sub),
        ("mul", sub),
    ]


def test_trace_returns_a_verified_graph_with_outputs_in_order():
    def f(x):
        return x.tanh(), x.sum(), x

    graph = mytorch.trace(f, mytorch.randn(2, 3))
    assert [o.name for o in graph.outputs] == ["tanh0", "sum0", "x"]
    assert graph.outputs[2] is graph.inputs[0]


# ---- parameters are read live ---------------------------------------------------------------


def test_compiled_code_reads_captured_tensors_live():
    weight = mytorch.randn(3, 3)

    def f(x):
        return x @ weight

    compiled = compiled_numpy(f)
    x = mytorch.randn(2, 3)
    before = compiled(x).data.copy()
    weight.data *= 2
    after = compiled(x).data
    np.testing.assert_allclose(after, 2 * before, rtol=1e-6)
    np.testing.assert_allclose(after, f(x).data, rtol=1e-6)


def test_compiled_module_sees_an_optimizer_step():
    model = mlp()
    compiled = compiled_numpy(model)
    x = mytorch.randn(4, 3)
    before = compiled(x).data.copy()
    optimizer = mytorch.optim.SGD(model.parameters(), lr=0.5)
    (model(x) ** 2).sum().backward()
    optimizer.step()
    after = compiled(x).data
    assert not np.allclose(after, before), "the compiled module did not see the update"
    np.testing.assert_allclose(after, model(x).data, rtol=1e-5, atol=1e-6)


def test_a_replaced_parameter_array_is_read_too():
    model = mlp()
    compiled = compiled_numpy(model)
    x = mytorch.randn(4, 3)
    compiled(x)
    model[2].bias.data = model[2].bias.data + 10.0  # a new array, not an in-place update
    np.testing.assert_allclose(compiled(x).data, model(x).data, rtol=1e-5)


# ---- data-dependent operations ------------------------------------------------------------------


def read_data(x):
    return Tensor(x.data * 2)  # tag:read-data


def read_item(x):
    return x * x.sum().item()  # tag:read-item


def read_bool(x):
    if x.sum() > 0:  # tag:read-bool
        return x
    return -x


def read_numpy(x):
    return Tensor(np.tanh(x.numpy()))  # tag:read-numpy


DATA_DEPENDENT = [
    pytest.param(read_data, r"\.data", "read-data", id="data"),
    pytest.param(read_item, r"item\(\)", "read-item", id="item"),
    pytest.param(read_bool, r"bool\(\)", "read-bool", id="bool"),
    pytest.param(read_numpy, r"numpy\(\)", "read-numpy", id="numpy"),
]


@pytest.mark.parametrize("fn, operation, tag", DATA_DEPENDENT)
def test_trace_rejects_data_dependent_operations(fn, operation, tag):
    with pytest.raises(CompileError, match=operation + ".*" + tagged(tag)):
        mytorch.trace(fn, mytorch.randn(2, 3))


@pytest.mark.parametrize("fn, operation, tag", DATA_DEPENDENT)
def test_fullgraph_compile_raises_the_same_error(fn, operation, tag):
    compiled = compiled_numpy(fn, fullgraph=True)
    with pytest.raises(CompileError, match=operation + ".*" + tagged(tag)):
        compiled(mytorch.randn(2, 3))


def test_the_tutorials_own_cat_cannot_be_traced():
    from . import programs

    tag = "data = [t.data for t in tensors]"
    model = TutorialCatRNN(12, 4, 3)
    x, h = mytorch.randn(1, 12), mytorch.zeros(1, 4)
    pattern = r"\.data.*" + where(tag, programs.__file__)
    with pytest.raises(CompileError, match=pattern):
        mytorch.trace(model, x, h)
    with pytest.raises(CompileError, match=pattern):
        compiled_numpy(model, fullgraph=True)(x, h)


@pytest.mark.parametrize("fn, operation, tag", DATA_DEPENDENT)
def test_fallback_runs_eagerly_and_warns_once(fn, operation, tag):
    compiled = compiled_numpy(fn)
    x, y = mytorch.randn(2, 3), mytorch.randn(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = compiled(x)
        second = compiled(y)
    np.testing.assert_allclose(first.data, fn(x).data, rtol=1e-6)
    np.testing.assert_allclose(second.data, fn(y).data, rtol=1e-6)
    messages = [str(w.message) for w in caught if issubclass(w.category, Warning)]
    assert len(messages) == 1, messages
    assert re.search(operation + ".*" + tagged(tag), messages[0]), messages[0]
    assert fn.__name__ in messages[0], "the warning should name the compiled function"


def test_fallback_warns_once_per_compiled_function():
    first, second = compiled_numpy(read_item), compiled_numpy(read_item)
    x = mytorch.randn(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            first(x)
            second(x)
    assert len(caught) == 2, [str(w.message) for w in caught]


def test_fallback_warns_again_for_a_different_reason():
    def either(x, use_item):
        return x * x.sum().item() if use_item else Tensor(x.numpy())  # tag:either

    compiled = compiled_numpy(either)
    x = mytorch.randn(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for use_item in (True, False, True, False):
            out = compiled(x, use_item)
            np.testing.assert_allclose(out.data, either(x, use_item).data, rtol=1e-6)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "item()" in messages[0] and "numpy()" in messages[1]
    assert all(re.search(tagged("either"), m) for m in messages), messages


def test_the_tutorial_model_falls_back_with_its_own_cat():
    model = TutorialCatRNN(12, 4, 3)
    compiled = compiled_numpy(model)
    x, h = mytorch.randn(1, 12), mytorch.zeros(1, 4)
    with pytest.warns(RuntimeWarning, match=r"\.data"):
        out, hidden = compiled(x, h)
    expected_out, expected_hidden = model(x, h)
    np.testing.assert_allclose(out.data, expected_out.data, rtol=1e-6)
    np.testing.assert_allclose(hidden.data, expected_hidden.data, rtol=1e-6)


def test_shapes_stay_available_while_tracing():
    def f(x):
        assert x.shape == (2, 3) and x.ndim == 2 and x.dtype == np.float32
        return x.reshape(x.shape[1], x.shape[0])

    graph = mytorch.trace(f, mytorch.randn(2, 3))
    assert graph.outputs[0].type.shape == (3, 2)
