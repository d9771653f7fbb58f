"""Gradients of whole modules and losses against central finite differences (float64, no torch)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.nn import functional as F

EPS = 1e-6
MAX_POSITIONS = 12  # per leaf, chosen at random: every leaf is checked, and the suite stays fast


@pytest.fixture(autouse=True)
def float64():
    """Parameters in float64, so central differences are accurate."""
    previous = mytorch.get_default_dtype()
    mytorch.set_default_dtype("float64")
    mytorch.manual_seed(0)
    yield
    mytorch.set_default_dtype(previous)


def _outputs(out) -> list[Tensor]:
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _outputs(item)]
    return [out]


def check_gradients(loss_fn: Callable[[], Tensor], leaves: list[Tensor]) -> None:
    """Autograd gradients of `loss_fn()` w.r.t. each leaf equal central differences in its data.

    Up to MAX_POSITIONS elements of each leaf are perturbed (all of them for small leaves).
    """
    rng = np.random.default_rng(0)
    for leaf in leaves:
        assert leaf.dtype == np.float64
        leaf.zero_grad()
    loss_fn().backward()
    for index, leaf in enumerate(leaves):
        positions = list(np.ndindex(leaf.data.shape))
        if len(positions) > MAX_POSITIONS:
            chosen = rng.choice(len(positions), size=MAX_POSITIONS, replace=False)
            positions = [positions[i] for i in chosen]
        for position in positions:
            original = leaf.data[position]
            leaf.data[position] = original + EPS
            with mytorch.no_grad():
                upper = loss_fn().item()
            leaf.data[position] = original - EPS
            with mytorch.no_grad():
                lower = loss_fn().item()
            leaf.data[position] = original
            numeric = (upper - lower) / (2 * EPS)
            np.testing.assert_allclose(
                leaf.grad[position],
                numeric,
                rtol=1e-6,
                atol=1e-8,
                err_msg=f"gradient of leaf {index} at {position}",
            )


def weighted_sum(module_call: Callable[[], object], seed: int = 7) -> Callable[[], Tensor]:
    """A scalar loss: every output weighted by a fixed random tensor, then summed."""
    weights: list[np.ndarray] = []

    def loss() -> Tensor:
        outputs = _outputs(module_call())
        if not weights:
            rng = np.random.default_rng(seed)
            weights.extend(rng.standard_normal(o.shape) for o in outputs)
        total = 0
        for out, w in zip(outputs, weights, strict=True):
            total = total + (out * Tensor(w, trainable=False)).sum()
        return total

    return loss


def _tensor(shape, seed):
    return Tensor(np.random.default_rng(seed).standard_normal(shape))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_rnn_two_layers(nonlinearity, batch_first):
    rnn = nn.RNN(3, 4, num_layers=2, nonlinearity=nonlinearity, batch_first=batch_first)
    x = _tensor((2, 3, 3) if batch_first else (3, 2, 3), seed=1)  # batch 2, sequence 3
    h0 = _tensor((2, 2, 4), seed=2)
    check_gradients(weighted_sum(lambda: rnn(x, h0)), [*rnn.parameters(), x, h0])


def test_rnn_unbatched_without_hx():
    rnn = nn.RNN(3, 4)
    x = _tensor((3, 3), seed=1)
    check_gradients(weighted_sum(lambda: rnn(x)), [*rnn.parameters(), x])


def test_lstm_two_layers():
    lstm = nn.LSTM(3, 4, num_layers=2)
    x = _tensor((3, 2, 3), seed=1)
    h0, c0 = _tensor((2, 2, 4), seed=2), _tensor((2, 2, 4), seed=3)
    check_gradients(weighted_sum(lambda: lstm(x, (h0, c0))), [*lstm.parameters(), x, h0, c0])


def test_gru_two_layers():
    gru = nn.GRU(3, 4, num_layers=2, batch_first=True)
    x = _tensor((2, 3, 3), seed=1)
    h0 = _tensor((2, 2, 4), seed=2)
    check_gradients(weighted_sum(lambda: gru(x, h0)), [*gru.parameters(), x, h0])


@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells(cell):
    module = getattr(nn, cell)(3, 4)
    x = _tensor((2, 3), seed=1)
    check_gradients(weighted_sum(lambda: module(x)), [*module.parameters(), x])


def test_linear_and_embedding():
    linear, embedding = nn.Linear(4, 3), nn.Embedding(5, 4)
    indices = np.array([[0, 3], [3, 4]])
    check_gradients(
        weighted_sum(lambda: linear(embedding(indices)).tanh()),
        [*linear.parameters(), *embedding.parameters()],
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(5, 3), (3,), (2, 3, 2)])
def test_class_losses(reduction, shape):
    scores = _tensor(shape, seed=1)
    rng = np.random.default_rng(2)
    if len(shape) == 1:
        target = int(rng.integers(0, shape[0]))
    else:
        target = rng.integers(0, shape[1], size=shape[:1] + shape[2:])
    class_dim = 0 if len(shape) == 1 else 1
    check_gradients(lambda: F.cross_entropy(scores, target, reduction=reduction), [scores])
    check_gradients(
        lambda: F.nll_loss(scores.log_softmax(class_dim), target, reduction=reduction), [scores]
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_loss(reduction):
    prediction, target = _tensor((4, 3), seed=1), _tensor((4, 3), seed=2)
    loss = lambda: F.mse_loss(prediction, target, reduction=reduction)  # noqa: E731
    check_gradients(loss, [prediction, target])


def test_loss_values_match_their_definitions():
    scores = np.random.default_rng(0).standard_normal((4, 3))
    target = np.array([2, 0, 1, 1])
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(4), target]
    np.testing.assert_allclose(F.cross_entropy(Tensor(scores), target).item(), expected.mean())
    np.testing.assert_allclose(
        nn.CrossEntropyLoss(reduction="sum")(Tensor(scores), target).item(), expected.sum()
    )
    np.testing.assert_allclose(
        F.nll_loss(Tensor(log_probs), target, reduction="none").data, expected
    )
    prediction = np.random.default_rng(1).standard_normal((4, 3))
    np.testing.assert_allclose(
        nn.MSELoss()(Tensor(prediction), scores).item(), np.mean((prediction - scores) ** 2)
    )


def test_targets_as_numpy_list_or_tensor_agree():
    scores = _tensor((4, 3), seed=0)
    forms = [
        np.array([2, 0, 1, 1]),
        [2, 0, 1, 1],
        Tensor(np.array([2.0, 0.0, 1.0, 1.0])),
        Tensor(np.array([2, 0, 1, 1]), dtype=np.int64, trainable=False),
        Tensor(np.array([2, 0, 1, 1], dtype=np.int32), dtype=np.int32, trainable=False),
    ]
    values = [F.cross_entropy(scores, target).item() for target in forms]
    assert np.allclose(values, values[0])
