"""SGD's fused native update (optim/fused.py): the numpy update to the bit, and numpy whenever
the arrays are not what it planned for."""

from __future__ import annotations

import numpy as np
import pytest

from mytorch import nn, optim
from mytorch.codegen import binder

# sizes around the update loop's blocks (64 float32s, 32 float64s) and its tail
SHAPES = [(7, 33), (33,), (2, 64), (), (0,)]


def _params(dtype, shapes=SHAPES) -> list[nn.Parameter]:
    rng = np.random.default_rng(0)
    return [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in shapes]


def _set_grads(params, step: int) -> None:
    rng = np.random.default_rng(100 + step)
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(p.dtype)


def _numpy_reference(params, lr, momentum, steps, buffers=None):
    """torch.optim.SGD's update written out with numpy, as the numpy path rounds it."""
    data = [p.data.copy() for p in params]
    buffers = {} if buffers is None else buffers
    for step in range(steps):
        _set_grads(params, step)
        for k, (d, p) in enumerate(zip(data, params, strict=True)):
            if not p.trainable:
                continue
            g = p.grad
            if momentum:
                if k not in buffers:
                    buffers[k] = g.copy()
                else:
                    buffers[k] *= momentum
                    buffers[k] += g
                g = buffers[k]
            d -= lr * g
    return data


def _fused_calls(opt) -> int:
    return sum(int(u.state[binder.CALLS]) for u in opt._fused.values() if u)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fused_update_is_the_numpy_update_to_the_bit(dtype, momentum):
    if not binder.available():
        pytest.skip("no native binder here")
    params = _params(dtype)
    params[1].requires_grad = False  # skipped by both
    reference = _params(dtype)
    reference[1].requires_grad = False
    expected = _numpy_reference(reference, 0.1, momentum, 4)
    opt = optim.SGD(params, lr=0.1, momentum=momentum)
    for step in range(4):
        _set_grads(params, step)
        opt.step()
    for p, e in zip(params, expected, strict=True):
        assert p.data.dtype == dtype
        np.testing.assert_array_equal(p.data, e)
    # every step fused, but a momentum step's first (it makes the buffers)
    assert _fused_calls(opt) == (3 if momentum else 4)


def test_a_changed_learning_rate_is_used():
    params = _params(np.float32)
    opt = optim.SGD(params, lr=0.1)
    _set_grads(params, 0)
    opt.step()
    before = [p.data.copy() for p in params]
    opt.param_groups[0]["lr"] = 0.5
    opt.step()
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.data, b - np.float32(0.5) * p.grad)


def test_arrays_it_does_not_take_go_the_numpy_way():
    params = _params(np.float32, [(6, 4), (4,)])
    opt = optim.SGD(params, lr=0.1, momentum=0.5)
    _set_grads(params, 0)
    opt.step()
    opt.step()
    # a new, transposed (not C-contiguous) array, then a read-only one
    params[0].data = np.ascontiguousarray(params[0].data.T).T
    params[0].grad = np.ones((6, 4), np.float32)
    frozen = np.ones(4, np.float32)
    frozen.flags.writeable = False
    params[1].grad = frozen
    data = [p.data.copy() for p in params]
    buffers = [opt.state[id(p)]["momentum_buffer"].copy() for p in params]
    opt.step()
    for p, d, b in zip(params, data, buffers, strict=True):
        b = b * np.float32(0.5) + p.grad
        np.testing.assert_array_equal(p.data, d - np.float32(0.1) * b)
    assert frozen.tolist() == [1.0] * 4  # the gradient is only read


def test_a_group_of_mixed_dtypes_and_no_binder_use_numpy(monkeypatch):
    params = _params(np.float32, [(3,)]) + _params(np.float64, [(2,)])
    opt = optim.SGD(params, lr=0.1)
    _set_grads(params, 0)
    opt.step()
    assert _fused_calls(opt) == 0
    monkeypatch.setattr(binder, "enabled", False)
    plain = _params(np.float32)
    expected = _numpy_reference(_params(np.float32), 0.1, 0.0, 2)
    opt = optim.SGD(plain, lr=0.1)
    for step in range(2):
        _set_grads(plain, step)
        opt.step()
    assert _fused_calls(opt) == 0
    for p, e in zip(plain, expected, strict=True):
        np.testing.assert_array_equal(p.data, e)
