"""Layers without torch: init, forward formulas, containers, Embedding, Dropout, clipping."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.nn import functional as F


def test_linear_init_and_forward():
    mytorch.manual_seed(0)
    layer = nn.Linear(16, 8)
    assert layer.weight.shape == (8, 16) and layer.bias.shape == (8,)
    bound = 1 / np.sqrt(16)
    for param in (layer.weight, layer.bias):
        assert np.all(np.abs(param.data) <= bound)
        assert np.abs(param.data).max() > 0.5 * bound  # spread over the range, not all zeros
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    expected = x @ layer.weight.data.T + layer.bias.data
    np.testing.assert_allclose(layer(Tensor(x)).data, expected, rtol=1e-5, atol=1e-6)
    no_bias = nn.Linear(16, 8, bias=False)
    assert no_bias.bias is None and len(list(no_bias.parameters())) == 1


def test_init_is_reproducible_with_manual_seed():
    mytorch.manual_seed(3)
    first = nn.LSTM(3, 4).state_dict()
    mytorch.manual_seed(3)
    second = nn.LSTM(3, 4).state_dict()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(nn.LSTM(3, 4).state_dict()["weight_ih_l0"], first["weight_ih_l0"])


def test_parameters_follow_the_default_dtype():
    previous = mytorch.get_default_dtype()
    try:
        mytorch.set_default_dtype("float64")
        model = nn.Sequential(nn.Linear(2, 3), nn.GRU(3, 3), nn.Embedding(4, 2))
        assert all(p.dtype == np.float64 for p in model.parameters())
    finally:
        mytorch.set_default_dtype(previous)
    assert nn.Linear(2, 3).weight.dtype == np.float32


def test_activation_modules():
    x = np.random.default_rng(0).standard_normal((3, 4))
    t = Tensor(x)
    np.testing.assert_allclose(nn.Tanh()(t).data, np.tanh(x))
    np.testing.assert_allclose(nn.ReLU()(t).data, np.maximum(x, 0))
    np.testing.assert_allclose(nn.Sigmoid()(t).data, 1 / (1 + np.exp(-x)))
    softmax = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(nn.Softmax(dim=1)(t).data, softmax)
    np.testing.assert_allclose(nn.LogSoftmax(dim=1)(t).data, np.log(softmax))
    np.testing.assert_allclose(F.linear(t, Tensor(np.eye(4)), Tensor(np.ones(4))).data, x + 1)


def test_softmax_without_dim_warns_and_uses_pytorchs_choice():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = nn.Softmax()(x)
    np.testing.assert_allclose(out.data.sum(axis=1), np.ones(3), rtol=1e-6)


def test_sequential_behaves_like_a_list_of_modules():
    first, act, last = nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)
    model = nn.Sequential(first, act, last)
    assert len(model) == 3 and list(model) == [first, act, last]
    assert model[0] is first and model[-1] is last
    assert isinstance(model[1:], nn.Sequential) and list(model[1:]) == [act, last]
    x = mytorch.randn(5, 3)
    np.testing.assert_array_equal(model(x).data, last(act(first(x))).data)
    with pytest.raises(IndexError, match="index 3 is out of range"):
        model[3]
    model.append(nn.ReLU())
    assert len(model) == 4 and [n for n, _ in model.named_children()][-1] == "3"


def test_module_list_registers_its_items():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and len(list(layers.parameters())) == 6
    expected = "  (0-2): 3 x Linear(in_features=2, out_features=2, bias=True)"
    assert repr(layers).splitlines()[1] == expected


def test_embedding_init_and_index_forms():
    mytorch.manual_seed(0)
    table = nn.Embedding(2000, 16)
    assert abs(table.weight.data.mean()) < 0.02 and abs(table.weight.data.std() - 1) < 0.02
    small = nn.Embedding(5, 3)
    expected = small.weight.data[[[1, 4], [0, 1]]]
    for indices in (
        np.array([[1, 4], [0, 1]]),
        [[1, 4], [0, 1]],
        Tensor(np.array([[1.0, 4.0], [0.0, 1.0]])),
        Tensor(np.array([[1, 4], [0, 1]]), dtype=np.int64, trainable=False),
    ):
        out = small(indices)
        assert out.shape == (2, 2, 3)
        np.testing.assert_array_equal(out.data, expected)


def test_embedding_gradient_accumulates_repeated_rows():
    table = nn.Embedding(4, 2)
    table(np.array([1, 1, 3])).sum().backward()
    np.testing.assert_array_equal(table.weight.grad, [[0, 0], [2, 2], [0, 0], [1, 1]])


def test_one_hot_values_dtype_shape_and_inferred_classes():
    indices = Tensor(np.array([[0, 2], [1, 1]]), dtype=np.int64, trainable=False)
    out = F.one_hot(indices, 4)
    assert out.shape == (2, 2, 4) and out.dtype == np.int64
    np.testing.assert_array_equal(out.data, np.eye(4, dtype=np.int64)[indices.data])
    inferred = F.one_hot(indices)  # num_classes=-1: the largest value + 1
    assert inferred.shape == (2, 2, 3)
    np.testing.assert_array_equal(inferred.data, np.eye(3, dtype=np.int64)[indices.data])
    scalar = F.one_hot(Tensor(np.array(2, np.int32), dtype=np.int32, trainable=False), 3)
    assert scalar.dtype == np.int64 and scalar.data.tolist() == [0, 0, 1]
    assert F.one_hot(indices, 3).float().dtype == np.float32


def test_one_hot_traces_with_num_classes():
    indices = Tensor(np.array([[0, 2], [1, 1]]), dtype=np.int64, trainable=False)
    compiled = mytorch.compile(lambda i: F.one_hot(i, 3).float() * 2, fullgraph=True)
    np.testing.assert_array_equal(compiled(indices).data, 2 * np.eye(3)[indices.data])


def test_dropout_in_training_and_eval():
    x = mytorch.ones(1000)
    dropout = nn.Dropout(0.25)
    mytorch.manual_seed(0)
    out = dropout(x).data
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.15 < np.mean(out == 0) < 0.35
    mytorch.manual_seed(0)
    np.testing.assert_array_equal(dropout(x).data, out)  # seeded, reproducible
    dropout.eval()
    assert dropout(x) is x
    assert nn.Dropout(0.0)(x) is x
    np.testing.assert_array_equal(nn.Dropout(1.0)(x).data, np.zeros(1000))
    assert repr(dropout) == "Dropout(p=0.25, inplace=False)"


def test_dropout_gradient_uses_the_same_mask():
    x = Tensor(np.ones(50, dtype=np.float32))
    out = F.dropout(x, 0.5, training=True)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, out.data)


def test_dropout_between_rnn_layers_only_in_training():
    rnn = nn.GRU(3, 4, num_layers=2, dropout=0.5)
    x = mytorch.randn(5, 2, 3)
    mytorch.manual_seed(0)
    first, _ = rnn(x)
    mytorch.manual_seed(1)
    second, _ = rnn(x)
    assert not np.allclose(first.data, second.data)
    rnn.eval()
    np.testing.assert_array_equal(rnn(x)[0].data, rnn(x)[0].data)


def test_clip_grad_norm():
    params = [nn.Parameter(np.zeros((2, 3))), nn.Parameter(np.zeros(4))]
    rng = np.random.default_rng(0)
    for p in params:
        p.grad = rng.standard_normal(p.shape) * 5
    norm = np.sqrt(sum(np.sum(p.grad**2) for p in params))
    total = nn.utils.clip_grad_norm_(params, 2.0)
    assert isinstance(total, Tensor)
    np.testing.assert_allclose(total.item(), norm)
    clipped = np.sqrt(sum(np.sum(p.grad**2) for p in params))
    np.testing.assert_allclose(clipped, 2.0, rtol=1e-5)
    before = [p.grad.copy() for p in params]
    nn.utils.clip_grad_norm_(iter(params), 10.0)  # under the limit: unchanged
    for p, g in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.grad, g)
    from mytorch.nn.utils import clip_grad_norm_

    assert clip_grad_norm_ is nn.utils.clip_grad_norm_


def test_loss_on_a_single_sample_with_a_scalar_target():
    scores = Tensor(np.array([0.5, -1.0, 2.0]))
    expected = -np.log(np.exp(2.0) / np.exp(scores.data).sum())
    np.testing.assert_allclose(F.cross_entropy(scores, 2).item(), expected)
    assert F.cross_entropy(scores, 2).shape == ()


def test_training_a_small_model_reduces_the_loss():
    mytorch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    x = Tensor(np.random.default_rng(0).standard_normal((32, 2)).astype(np.float32))
    y = (x.data[:, 0] > x.data[:, 1]).astype(np.int64)
    loss_fn = nn.CrossEntropyLoss()
    first = loss_fn(model(x), y).item()
    for _ in range(100):
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        for p in model.parameters():
            p.data -= 0.5 * p.grad
    assert loss.item() < 0.5 * first
