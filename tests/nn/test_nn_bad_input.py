"""Bad input to layers and losses raises clear Python exceptions naming the shapes or values."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.nn import functional as F


def test_linear_wrong_feature_size():
    message = r"Linear\(in_features=3, .*\) got input of shape \(2, 5\)"
    with pytest.raises(ValueError, match=message):
        nn.Linear(3, 4)(mytorch.randn(2, 5))
    with pytest.raises(TypeError, match="ndarray"):
        nn.Linear(3, 4)(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(4, 3\)"):
        F.linear(mytorch.randn(2, 5), mytorch.randn(4, 3))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_wrong_feature_size(kind):
    module = getattr(nn, kind)(3, 4)
    with pytest.raises(ValueError, match=r"Expected 3, got 5.*\(7, 2, 5\)"):
        module(mytorch.randn(7, 2, 5))
    with pytest.raises(ValueError, match=r"2-D \(unbatched\) or 3-D \(batched\).*\(5,\)"):
        module(mytorch.randn(5))


@pytest.mark.parametrize("kind", ["RNN", "GRU"])
def test_recurrent_wrong_hidden_shape(kind):
    module = getattr(nn, kind)(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"\(2, 2, 4\), got \(1, 2, 4\)"):
        module(mytorch.randn(7, 2, 3), mytorch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"\(2, 4\), got \(2, 1, 4\)"):
        module(mytorch.randn(7, 3), mytorch.zeros(2, 1, 4))  # unbatched input, batched state


def test_lstm_wrong_state():
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = mytorch.randn(2, 7, 3)
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        lstm(x, mytorch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"cell state c0 of shape \(1, 2, 4\), got \(1, 2, 5\)"):
        lstm(x, (mytorch.zeros(1, 2, 4), mytorch.zeros(1, 2, 5)))


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_wrong_shapes(kind):
    cell = getattr(nn, kind)(3, 4)
    with pytest.raises(ValueError, match=r"Expected 3, got 2"):
        cell(mytorch.randn(5, 2))
    state = mytorch.zeros(5, 3)
    hx = (state, state) if kind == "LSTMCell" else state
    with pytest.raises(ValueError, match=r"\(5, 4\), got \(5, 3\)"):
        cell(mytorch.randn(5, 3), hx)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNNCell(3, 4, nonlinearity="gelu")
    with pytest.raises(TypeError, match="in_features"):
        nn.Linear(3.5, 4)
    with pytest.raises(ValueError, match="num_layers"):
        nn.LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")


@pytest.mark.parametrize("loss", [F.cross_entropy, F.nll_loss])
def test_class_index_out_of_range(loss):
    scores = mytorch.randn(3, 4)
    with pytest.raises(IndexError, match=r"target class 7 .* 4 classes"):
        loss(scores, [0, 7, 1])
    with pytest.raises(IndexError, match=r"target class -1 .* 4 classes"):
        loss(scores, np.array([0, -1, 1]))
    with pytest.raises(IndexError, match=r"target class 4"):
        loss(mytorch.randn(4), 4)


def test_class_targets_must_be_whole_numbers_of_the_right_shape():
    scores = mytorch.randn(3, 4)
    with pytest.raises(ValueError, match="whole numbers, got 1.5"):
        F.cross_entropy(scores, Tensor([0.0, 1.5, 2.0]))
    with pytest.raises(ValueError, match="whole numbers"):
        nn.NLLLoss()(scores, np.array([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match=r"target of shape \(3,\), got \(2,\)"):
        F.nll_loss(scores, [0, 1])
    with pytest.raises(TypeError, match="integers"):
        F.cross_entropy(scores, ["a", "b", "c"])


def test_mse_loss_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 4\)"):
        F.mse_loss(mytorch.randn(3, 4), mytorch.randn(2, 4))
    with pytest.warns(UserWarning, match="broadcast"):
        F.mse_loss(mytorch.randn(3, 4), mytorch.randn(4))


def test_embedding_index_out_of_range():
    table = nn.Embedding(10, 3)
    with pytest.raises(IndexError, match=r"index 10 is out of range for Embedding\(10, 3\)"):
        table(np.array([[1, 10]]))
    with pytest.raises(IndexError, match="index -2"):
        table([-2])
    with pytest.raises(ValueError, match="whole numbers"):
        table(Tensor([0.5]))


def test_one_hot_bad_input():
    def ints(*values):
        return Tensor(np.array(values), dtype=np.int64, trainable=False)

    with pytest.raises(TypeError, match="integers, got dtype float32"):
        F.one_hot(Tensor([0.0, 1.0]), 2)
    with pytest.raises(TypeError, match="Tensor, got ndarray"):
        F.one_hot(np.array([0, 1]), 2)
    with pytest.raises(IndexError, match=r"class value 3 is out of range for num_classes=3"):
        F.one_hot(ints(0, 3), 3)
    with pytest.raises(IndexError, match=r"class value -1 is negative \(num_classes=3;"):
        F.one_hot(ints(0, -1), 3)
    with pytest.raises(IndexError, match=r"class value -2 is negative \(num_classes=-1;"):
        F.one_hot(ints(-2, 1))
    with pytest.raises(ValueError, match="num_classes must be -1 or a count >= 0, got -2"):
        F.one_hot(ints(0, 1), -2)
    with pytest.raises(ValueError, match="cannot infer num_classes from an empty tensor"):
        F.one_hot(ints())
    traced = mytorch.compile(lambda i: F.one_hot(i), fullgraph=True)
    with pytest.raises(ValueError, match="not known while tracing: pass num_classes"):
        traced(ints(0, 1))
    checked = mytorch.compile(lambda i: F.one_hot(i, 3), fullgraph=True)
    with pytest.raises(IndexError, match="one_hot"):  # checked when run, not when traced
        checked(ints(0, 5))
