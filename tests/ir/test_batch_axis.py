"""The batch-axis analysis (`ir.batch_axis`): which models split over their batch, along which
axis, and the graph of a slice of the batch against the numpy interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.ir.batch_axis import batch_axes, batch_slice
from mytorch.ir.interpreter import run
from mytorch.ir.verify import verify
from mytorch.tensor import apply
from tests.ir.programs import RNN, TUTORIAL_SIZES, stacked_sequence, unrolled

T, B, I, H = 5, 7, 6, 4


def data(*shape, seed: int = 0) -> Tensor:
    rng = np.random.default_rng(seed)
    return Tensor(rng.standard_normal(shape).astype(np.float32), trainable=False)


def indices(*shape, high: int = 5) -> Tensor:
    rng = np.random.default_rng(1)
    return Tensor(rng.integers(0, high, shape), dtype=np.int64, trainable=False)


def tutorial_seq(batch: int):
    """The tutorial cell over every step from a zeros (batch, H) state made inside the function
    (a constant of the graph), as bench.common.make_seq."""
    mytorch.manual_seed(0)
    return stacked_sequence(RNN(I, H, 3), batch)


def optimized(fn, *inputs):
    """The optimized graph of `fn(*inputs)` and its input arrays (arguments, parameters)."""
    compiled = mytorch.compile(fn, backend="numpy")
    with mytorch.no_grad():
        compiled(*inputs)
    entry = compiled._last
    return compiled.graph, [t.data for t in [*inputs, *entry.trace.params]]


def mlp():
    mytorch.manual_seed(0)
    return nn.Sequential(nn.Linear(I, 5), nn.ReLU(), nn.Linear(5, 3))


SPLITTABLE = {  # name: (fn, inputs, the first argument's batch axis, the outputs')
    "tutorial": lambda: (tutorial_seq(B), (data(T, B, I),), 1, [1, 0]),
    "tutorial_hidden_argument": lambda: (
        unrolled(RNN(*TUTORIAL_SIZES), T),
        (data(T, B, TUTORIAL_SIZES[0]), data(B, TUTORIAL_SIZES[1], seed=1)),
        1,
        [0, 0],
    ),
    "rnn": lambda: (nn.RNN(I, H), (data(T, B, I),), 1, [1, 1]),
    "rnn_2_layers_batch_first": lambda: (
        nn.RNN(I, H, num_layers=2, batch_first=True),
        (data(B, T, I),),
        0,
        [0, 1],
    ),
    "lstm": lambda: (nn.LSTM(I, H), (data(T, B, I),), 1, [1, 1, 1]),
    "gru": lambda: (nn.GRU(I, H), (data(T, B, I),), 1, [1, 1]),
    "mlp": lambda: (mlp(), (data(B, I),), 0, [0]),
    "softmax_rows": lambda: (lambda x: mytorch.softmax(x * 2, dim=1), (data(B, I),), 0, [0]),
}


@pytest.mark.parametrize("name", sorted(SPLITTABLE))
def test_splittable_models_split_along_their_batch(name):
    fn, inputs, in_axis, out_axes = SPLITTABLE[name]()
    graph, arrays = optimized(fn, *inputs)
    found = batch_axes(graph)
    assert found is not None, f"{name} should split:\n{graph}"
    assert found.size == B
    assert found.axes[graph.inputs[0]] == in_axis
    assert [found.axes[o] for o in graph.outputs] == out_axes
    assert all(found.axes[i] is None for i in graph.inputs if i.is_param)
    full = run(graph, arrays)
    for start, stop in ((0, 4), (4, 7), (2, 3)):  # odd and uneven slices, one row
        sliced = verify(batch_slice(graph, found, start, stop))
        args = [
            a if found.axes[i] is None else np.take(a, range(start, stop), axis=found.axes[i])
            for i, a in zip(graph.inputs, arrays, strict=True)
        ]
        for k, (got, want) in enumerate(zip(run(sliced, args), full, strict=True)):
            axis = out_axes[k]
            want = want if axis is None else np.take(want, range(start, stop), axis=axis)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"output {k}")


PARTIAL = {  # name: (fn, inputs, the first argument's batch axis): one partial output
    "loss_means_over_batch": lambda: (_loss(mlp()), (data(B, I), data(B, 3)), 0),
    "matmul_contracts_batch": lambda: (lambda x: x.transpose(0, 1) @ x, (data(B, I),), 0),
    "cat_then_contracts_dim_1": lambda: (
        lambda x: mytorch.cat([x, x * 2], 0) @ x.transpose(0, 1),
        (data(B, I),),
        1,
    ),
    "merged_steps_and_batch": lambda: (
        lambda x: (x.reshape(T * B, I).transpose(0, 1) @ x.reshape(T * B, I) * 3).sum(0),
        (data(T, B, I),),
        1,
    ),
    # each slice adds its rows into the table (a one-hot product's weight gradient, made a
    # lookup's by one_hot_lookup); the indices are read by the slice's rows
    "embedding_grad_of_rows": lambda: (
        lambda g, i: apply("embedding_grad", g * 2, i, num=5),
        (data(B, I), indices(B)),
        0,
    ),
    "embedding_grad_of_steps": lambda: (
        lambda g, i: apply("embedding_grad", g, i, num=5),
        (data(T, B, I), indices(T, B)),
        1,
    ),
    "blocks_of_merged_rows": lambda: (
        lambda x: x.reshape(T * B, I)[B:].transpose(0, 1) @ x[1:].reshape((T - 1) * B, I),
        (data(T, B, I),),
        1,
    ),
}


def _loss(model):
    return lambda x, y: ((model(x) - y) ** 2).mean()


@pytest.mark.parametrize("name", sorted(PARTIAL))
def test_sums_over_the_batch_are_the_sums_of_the_slices_shares(name):
    fn, inputs, in_axis = PARTIAL[name]()
    graph, arrays = optimized(fn, *inputs)
    found = batch_axes(graph)
    assert found is not None, f"{name} should split:\n{graph}"
    x = graph.inputs[0]
    given = {i: in_axis if i is x else None for i in graph.inputs}
    found = batch_axes(graph, given, size=x.shape[in_axis])  # that axis, whichever is first
    assert [o in found.partial for o in graph.outputs] == [True]
    (full,) = run(graph, arrays)
    size = found.size
    total = 0
    for start, stop in ((0, 2), (2, size - 1), (size - 1, size)):
        sliced = verify(batch_slice(graph, found, start, stop))
        args = [
            a if found.axes[i] is None else np.take(a, range(start, stop), axis=found.axes[i])
            for i, a in zip(graph.inputs, arrays, strict=True)
        ]
        total = total + run(sliced, args)[0]
    np.testing.assert_allclose(total, full, rtol=1e-5, atol=1e-5)


UNSPLITTABLE = {
    "partial_into_nonlinearity": lambda: (lambda x: (x * x).mean().exp(), (data(B, I),)),
    "partial_plus_constant": lambda: (lambda x: (x * 2).sum() + 1, (data(B, I),)),
    "partial_back_into_rows": lambda: (lambda x: x - x.mean(), (data(B, I),)),
    "product_of_partials": lambda: (lambda x: x.sum() * x.mean(), (data(B, I),)),
    "max_over_batch": lambda: (lambda x: x.max(), (data(B, I),)),
}


@pytest.mark.parametrize("name", sorted(UNSPLITTABLE))
def test_graphs_mixing_rows_do_not_split(name):
    fn, inputs = UNSPLITTABLE[name]()
    graph, _ = optimized(fn, *inputs)
    assert batch_axes(graph) is None, f"{name} must not split:\n{graph}"


@pytest.mark.parametrize(
    "fn",
    [lambda x: mytorch.softmax(x, dim=0), lambda x: (x * 2).sum(dim=0)],
    ids=["softmax", "sum"],
)
def test_rows_mixed_along_dim_0_split_along_dim_1(fn):
    graph, _ = optimized(fn, data(B, I))
    found = batch_axes(graph)
    assert found.axes[graph.inputs[0]] == 1 and found.size == I


def test_a_batch_of_one_does_not_split():
    graph, _ = optimized(tutorial_seq(1), data(T, 1, I))
    assert batch_axes(graph) is None


def test_a_bias_is_read_whole_and_a_zeros_state_by_rows():
    graph, _ = optimized(tutorial_seq(B), data(T, B, I))
    found = batch_axes(graph)
    sliced = batch_slice(graph, found, 0, 3)
    consts = [n for n in sliced.nodes if n.is_const]
    assert [c.shape for c in consts] == [(3, H)], str(sliced)  # the initial state's rows
    assert [i.type for i in sliced.inputs[1:]] == [i.type for i in graph.inputs[1:]]
    assert sliced.inputs[0].shape == (T, 3, I)
