"""Layers and losses against PyTorch: same weights (via state_dict) give the same outputs and the
same gradients for every parameter and input."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn
from mytorch.nn import functional as F

torch = pytest.importorskip("torch")

F64 = {"rtol": 1e-10, "atol": 1e-12}
F32 = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture
def float64():
    """Build modules with float64 parameters for the duration of a test."""
    previous = mytorch.get_default_dtype()
    mytorch.set_default_dtype("float64")
    yield
    mytorch.set_default_dtype(previous)


def _convert(args: Any, make: Callable[[np.ndarray], Any]) -> Any:
    """Map `make` over the arrays in a (possibly nested) tuple of arguments; None stays None."""
    if args is None:
        return None
    if isinstance(args, tuple):
        return tuple(_convert(a, make) for a in args)
    return make(args)


def _flatten(out: Any) -> Iterator[Any]:
    if isinstance(out, (tuple, list)):
        for item in out:
            yield from _flatten(item)
    else:
        yield out


def compare_with_torch(ours: nn.Module, theirs: Any, *args: Any, tol: dict = F64) -> None:
    """Load `theirs` weights into `ours`, run both on `args`, compare outputs and all gradients."""
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state)
    our_leaves, their_leaves = [], []

    def ours_from(array: np.ndarray) -> Any:
        if array.dtype.kind in "iu":
            return array
        leaf = Tensor(array.copy())
        our_leaves.append(leaf)
        return leaf

    def theirs_from(array: np.ndarray) -> Any:
        if array.dtype.kind in "iu":
            return torch.from_numpy(array)
        leaf = torch.tensor(array, requires_grad=True)
        their_leaves.append(leaf)
        return leaf

    our_out = list(_flatten(ours(*_convert(args, ours_from))))
    their_out = list(_flatten(theirs(*_convert(args, theirs_from))))
    assert len(our_out) == len(their_out)
    rng = np.random.default_rng(123)
    our_loss, their_loss = 0, 0
    for mine, reference in zip(our_out, their_out, strict=True):
        assert mine.shape == tuple(reference.shape)
        np.testing.assert_allclose(mine.data, reference.detach().numpy(), **tol)
        weights = rng.standard_normal(mine.shape).astype(mine.dtype)
        our_loss = our_loss + (mine * Tensor(weights)).sum()
        their_loss = their_loss + (reference * torch.from_numpy(weights)).sum()
    our_loss.backward()
    their_loss.backward()
    their_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        np.testing.assert_allclose(
            param.grad, their_params[name].grad.numpy(), **tol, err_msg=f"grad of {name}"
        )
    for index, (mine, reference) in enumerate(zip(our_leaves, their_leaves, strict=True)):
        np.testing.assert_allclose(
            mine.grad, reference.grad.numpy(), **tol, err_msg=f"grad of input {index}"
        )


def _inputs(seq: int, batch: int, features: int, batched: bool, batch_first: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    if not batched:
        return rng.standard_normal((seq, features))
    shape = (batch, seq, features) if batch_first else (seq, batch, features)
    return rng.standard_normal(shape)


def _state(layers: int, batch: int, hidden: int, batched: bool, seed: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((layers, batch, hidden) if batched else (layers, hidden))


# ---- recurrent layers ------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("with_hx", [False, True])
def test_rnn(float64, num_layers, batch_first, batched, nonlinearity, with_hx):
    torch.manual_seed(0)
    kwargs = dict(num_layers=num_layers, nonlinearity=nonlinearity, batch_first=batch_first)
    theirs = torch.nn.RNN(5, 6, **kwargs).double()
    ours = nn.RNN(5, 6, **kwargs)
    x = _inputs(4, 3, 5, batched, batch_first)
    hx = _state(num_layers, 3, 6, batched, seed=1) if with_hx else None
    compare_with_torch(ours, theirs, x, hx)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_lstm(float64, num_layers, batch_first, batched, with_hx):
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(5, 6, num_layers=num_layers, batch_first=batch_first).double()
    ours = nn.LSTM(5, 6, num_layers=num_layers, batch_first=batch_first)
    x = _inputs(4, 3, 5, batched, batch_first)
    hx = None
    if with_hx:
        hx = (_state(num_layers, 3, 6, batched, seed=1), _state(num_layers, 3, 6, batched, seed=2))
    compare_with_torch(ours, theirs, x, hx)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_gru(float64, num_layers, batch_first, batched, with_hx):
    torch.manual_seed(0)
    theirs = torch.nn.GRU(5, 6, num_layers=num_layers, batch_first=batch_first).double()
    ours = nn.GRU(5, 6, num_layers=num_layers, batch_first=batch_first)
    x = _inputs(4, 3, 5, batched, batch_first)
    hx = _state(num_layers, 3, 6, batched, seed=1) if with_hx else None
    compare_with_torch(ours, theirs, x, hx)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_without_bias(float64, kind):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(5, 6, num_layers=2, bias=False).double()
    ours = getattr(nn, kind)(5, 6, num_layers=2, bias=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    compare_with_torch(ours, theirs, _inputs(4, 3, 5, True, False))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_in_float32(kind):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(5, 6, num_layers=2)
    ours = getattr(nn, kind)(5, 6, num_layers=2)
    x = _inputs(7, 3, 5, True, False).astype(np.float32)
    compare_with_torch(ours, theirs, x, tol=F32)
    assert all(p.dtype == np.float32 for p in ours.parameters())


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_parameter_names_shapes_and_init_match_torch(kind):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(5, 6, num_layers=3)
    ours = getattr(nn, kind)(5, 6, num_layers=3)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in theirs.named_parameters()
    ]
    bound = 1 / np.sqrt(6)
    values = np.concatenate([p.data.ravel() for p in ours.parameters()])
    assert np.all(np.abs(values) <= bound) and np.abs(values).max() > 0.9 * bound


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_cell(float64, batched, with_hx, nonlinearity, bias):
    torch.manual_seed(0)
    theirs = torch.nn.RNNCell(5, 6, bias=bias, nonlinearity=nonlinearity).double()
    ours = nn.RNNCell(5, 6, bias=bias, nonlinearity=nonlinearity)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5) if batched else (5,))
    hx = rng.standard_normal((3, 6) if batched else (6,)) if with_hx else None
    compare_with_torch(ours, theirs, x, hx)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_lstm_cell(float64, batched, with_hx):
    torch.manual_seed(0)
    theirs = torch.nn.LSTMCell(5, 6).double()
    ours = nn.LSTMCell(5, 6)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5) if batched else (5,))
    shape = (3, 6) if batched else (6,)
    hx = (rng.standard_normal(shape), rng.standard_normal(shape)) if with_hx else None
    compare_with_torch(ours, theirs, x, hx)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_gru_cell(float64, batched, with_hx):
    torch.manual_seed(0)
    theirs = torch.nn.GRUCell(5, 6).double()
    ours = nn.GRUCell(5, 6)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5) if batched else (5,))
    hx = rng.standard_normal((3, 6) if batched else (6,)) if with_hx else None
    compare_with_torch(ours, theirs, x, hx)


def test_torch_float32_state_dict_loads_and_keeps_float32():
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 4, num_layers=2)
    ours = nn.LSTM(3, 4, num_layers=2)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    for name, value in theirs.state_dict().items():
        assert ours.state_dict()[name].dtype == np.float32
        np.testing.assert_array_equal(ours.state_dict()[name], value.numpy())


# ---- other layers ----------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5), (5,)])
def test_linear(float64, bias, shape):
    torch.manual_seed(0)
    theirs = torch.nn.Linear(5, 3, bias=bias).double()
    ours = nn.Linear(5, 3, bias=bias)
    compare_with_torch(ours, theirs, np.random.default_rng(0).standard_normal(shape))


def test_sequential(float64):
    torch.manual_seed(0)

    def build(lib):
        return lib.Sequential(
            lib.Linear(4, 8),
            lib.Tanh(),
            lib.Linear(8, 8),
            lib.ReLU(),
            lib.Linear(8, 3),
            lib.Sigmoid(),
            lib.LogSoftmax(dim=1),
        )

    ours, theirs = build(nn), build(torch.nn).double()
    compare_with_torch(ours, theirs, np.random.default_rng(0).standard_normal((5, 4)))


def test_embedding(float64):
    torch.manual_seed(0)
    theirs = torch.nn.Embedding(10, 4).double()
    ours = nn.Embedding(10, 4)
    indices = np.array([[1, 2, 2], [9, 0, 1]], dtype=np.int64)  # repeats accumulate gradients
    compare_with_torch(ours, theirs, indices)


@pytest.mark.parametrize("num_classes", [-1, 6])
def test_one_hot(num_classes):
    indices = np.array([[1, 2, 2], [4, 0, 1]], dtype=np.int64)
    ours = F.one_hot(Tensor(indices, dtype=np.int64, trainable=False), num_classes)
    theirs = torch.nn.functional.one_hot(torch.from_numpy(indices), num_classes)
    assert ours.dtype == np.int64 and ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.data, theirs.numpy())


# ---- losses ----------------------------------------------------------------------------------


def _loss_inputs(shape: tuple[int, ...], classes_dim: int = 1):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(shape)
    num_classes = shape[classes_dim] if len(shape) > 1 else shape[0]
    target_shape = shape[:classes_dim] + shape[classes_dim + 1 :] if len(shape) > 1 else ()
    target = rng.integers(0, num_classes, size=target_shape)
    return scores, target


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 4), (4,), (3, 4, 2)])
@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_class_losses(reduction, shape, name):
    scores, target = _loss_inputs(shape)
    ours_in, theirs_in = Tensor(scores.copy()), torch.tensor(scores, requires_grad=True)
    if name == "nll_loss":  # NLL takes log-probabilities
        class_dim = 0 if len(shape) == 1 else 1
        ours_arg, theirs_arg = ours_in.log_softmax(class_dim), theirs_in.log_softmax(class_dim)
    else:
        ours_arg, theirs_arg = ours_in, theirs_in
    mine = getattr(F, name)(ours_arg, target, reduction=reduction)
    reference = getattr(torch.nn.functional, name)(
        theirs_arg, torch.from_numpy(np.asarray(target)), reduction=reduction
    )
    assert mine.shape == tuple(reference.shape)
    np.testing.assert_allclose(mine.data, reference.detach().numpy(), **F64)
    weights = np.random.default_rng(1).standard_normal(mine.shape)
    (mine * Tensor(weights)).sum().backward()
    (reference * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(ours_in.grad, theirs_in.grad.numpy(), **F64)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_modules(reduction):
    scores, target = _loss_inputs((5, 3))
    for ours, theirs, arg in [
        (nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, scores),
        (nn.NLLLoss, torch.nn.NLLLoss, scores),
    ]:
        mine = ours(reduction=reduction)(Tensor(arg), target)
        reference = theirs(reduction=reduction)(torch.from_numpy(arg), torch.from_numpy(target))
        np.testing.assert_allclose(mine.data, reference.numpy(), **F64)
    prediction = np.random.default_rng(2).standard_normal((5, 3))
    mine = nn.MSELoss(reduction=reduction)(Tensor(prediction), scores)
    reference = torch.nn.MSELoss(reduction=reduction)(
        torch.from_numpy(prediction), torch.from_numpy(scores)
    )
    np.testing.assert_allclose(mine.data, reference.numpy(), **F64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_gradients(reduction):
    rng = np.random.default_rng(0)
    prediction, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    ours_p, ours_t = Tensor(prediction.copy()), Tensor(target.copy())
    theirs_p = torch.tensor(prediction, requires_grad=True)
    theirs_t = torch.tensor(target, requires_grad=True)
    mine = F.mse_loss(ours_p, ours_t, reduction=reduction)
    reference = torch.nn.functional.mse_loss(theirs_p, theirs_t, reduction=reduction)
    np.testing.assert_allclose(mine.data, reference.detach().numpy(), **F64)
    weights = rng.standard_normal(mine.shape)
    (mine * Tensor(weights)).sum().backward()
    (reference * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(ours_p.grad, theirs_p.grad.numpy(), **F64)
    np.testing.assert_allclose(ours_t.grad, theirs_t.grad.numpy(), **F64)


def test_cross_entropy_with_class_probabilities():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((4, 3))
    probs = np.exp(rng.standard_normal((4, 3)))
    probs /= probs.sum(axis=1, keepdims=True)
    mine = F.cross_entropy(Tensor(scores), Tensor(probs))
    reference = torch.nn.functional.cross_entropy(torch.from_numpy(scores), torch.from_numpy(probs))
    np.testing.assert_allclose(mine.data, reference.numpy(), **F64)


def test_float32_loss_matches_torch():
    scores, target = _loss_inputs((8, 5))
    scores = scores.astype(np.float32)
    mine = F.cross_entropy(Tensor(scores), target)
    assert mine.dtype == np.float32
    reference = torch.nn.functional.cross_entropy(
        torch.from_numpy(scores), torch.from_numpy(target)
    )
    np.testing.assert_allclose(mine.data, reference.numpy(), **F32)


# ---- functional activations and utilities ----------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("relu", {}),
        ("tanh", {}),
        ("sigmoid", {}),
        ("softmax", {"dim": 1}),
        ("log_softmax", {"dim": 0}),
    ],
)
def test_functional_activations(name, kwargs):
    x = np.random.default_rng(0).standard_normal((3, 4))
    mine = getattr(F, name)(Tensor(x), **kwargs)
    reference = getattr(torch.nn.functional, name)(torch.from_numpy(x), **kwargs)
    np.testing.assert_allclose(mine.data, reference.numpy(), **F64)


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)) * 3, rng.standard_normal(5)]
    ours = [nn.Parameter(np.zeros_like(g)) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for mine, reference, g in zip(ours, theirs, grads, strict=True):
        mine.grad = g.copy()
        reference.grad = torch.from_numpy(g.copy())
    total = nn.utils.clip_grad_norm_(ours, 1.5)
    reference_total = torch.nn.utils.clip_grad_norm_(theirs, 1.5)
    np.testing.assert_allclose(total.item(), reference_total.item(), rtol=1e-12)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine.grad, reference.grad.numpy(), rtol=1e-12)
