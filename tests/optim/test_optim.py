"""SGD and Adam: torch.optim's exact updates, in place on `.data`, from any iterable of params."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import nn, optim

SHAPES = [(3, 4), (4,), ()]


def _params(dtype=np.float64) -> list[nn.Parameter]:
    rng = np.random.default_rng(0)
    return [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def _gradients(step: int, dtype=np.float64) -> list[np.ndarray]:
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.05, "weight_decay": 0.01},
    {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True},
]
ADAM_CASES = [
    {},
    {"lr": 0.01, "betas": (0.8, 0.99)},
    {"lr": 0.01, "eps": 1e-3},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.01, "amsgrad": True},
]


def _run_against_torch(ours_cls, theirs_cls, kwargs, steps: int = 6, dtype=np.float64, tol=1e-12):
    torch = pytest.importorskip("torch")
    ours = _params(dtype)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    our_opt = ours_cls(ours, **kwargs)
    their_opt = theirs_cls(theirs, **kwargs)
    for step in range(steps):
        for mine, reference, grad in zip(ours, theirs, _gradients(step, dtype), strict=True):
            mine.grad = grad.copy()
            reference.grad = torch.from_numpy(grad.copy())
        our_opt.step()
        their_opt.step()
        for mine, reference in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(
                mine.data,
                reference.detach().numpy(),
                rtol=tol,
                atol=tol,
                err_msg=f"after step {step + 1}",
            )


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    _run_against_torch(optim.SGD, torch.optim.SGD, kwargs)


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    _run_against_torch(optim.Adam, torch.optim.Adam, kwargs)


@pytest.mark.parametrize(
    "cls, kwargs", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.01})]
)
def test_float32_matches_torch(cls, kwargs):
    torch = pytest.importorskip("torch")
    _run_against_torch(
        getattr(optim, cls), getattr(torch.optim, cls), kwargs, dtype=np.float32, tol=1e-5
    )


def test_sgd_momentum_with_constant_gradient_follows_the_closed_form():
    # The buffer starts as the first gradient, so after k steps it is g * (1 - m^k) / (1 - m).
    lr, m = 0.1, 0.9
    param = nn.Parameter(np.array([1.0, -2.0]))
    grad = np.array([0.5, 0.25])
    start = param.data.copy()
    opt = optim.SGD([param], lr=lr, momentum=m)
    for _ in range(5):
        param.grad = grad.copy()
        opt.step()
    total = sum((1 - m**k) / (1 - m) for k in range(1, 6))
    np.testing.assert_allclose(param.data, start - lr * total * grad)


def test_adam_with_constant_gradient_moves_lr_per_step():
    # With bias correction, m_hat = g and v_hat = g^2 exactly, so each step is lr * g / (|g| + eps).
    lr, eps = 0.01, 1e-8
    param = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    grad = np.array([0.5, -4.0, 1e-3])
    start = param.data.copy()
    opt = optim.Adam([param], lr=lr, eps=eps)
    for _ in range(7):
        param.grad = grad.copy()
        opt.step()
    np.testing.assert_allclose(param.data, start - 7 * lr * grad / (np.abs(grad) + eps), rtol=1e-9)


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.5), optim.Adam])
def test_updates_data_in_place_and_zero_grad(make):
    model = nn.Linear(3, 2)
    held = [p.data for p in model.parameters()]
    before = [p.data.copy() for p in model.parameters()]
    opt = make(model.parameters())  # a generator is fine
    model(mytorch.randn(4, 3)).sum().backward()
    opt.step()
    for param, array, old in zip(model.parameters(), held, before, strict=True):
        assert param.data is array, "the optimizer must update .data in place"
        assert not np.array_equal(param.data, old)
        assert param.dtype == np.float32
    opt.zero_grad()
    assert all(np.all(p.grad == 0) for p in model.parameters())


def test_optimizers_train_a_linear_regression():
    mytorch.manual_seed(0)
    x = mytorch.randn(64, 2)
    y = x @ mytorch.tensor([[2.0], [-1.0]]) + 0.5
    for make in (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.05)):
        model = nn.Linear(2, 1)
        opt = make(model.parameters())
        loss_fn = nn.MSELoss()
        for _ in range(200):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        assert loss.item() < 1e-3
        np.testing.assert_allclose(model.weight.data, [[2.0, -1.0]], atol=0.05)


def test_param_groups_and_closure():
    first, second = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.SGD([{"params": [first]}, {"params": second, "lr": 1.0}], lr=0.1)
    first.grad = np.ones(2)
    second.grad = np.ones(2)
    result = opt.step(lambda: "loss")
    assert result == "loss"
    np.testing.assert_allclose(first.data, [0.9, 0.9])
    np.testing.assert_allclose(second.data, [0.0, 0.0])


def test_bad_optimizer_arguments():
    param = nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([param], lr=-1.0)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        optim.Adam([param], betas=(0.9, 1.5))
    with pytest.raises(TypeError, match="iterable"):
        optim.Adam(param)
    with pytest.raises(TypeError, match="ndarray"):
        optim.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([param, param], lr=0.1)
