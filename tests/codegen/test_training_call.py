"""The repeated training call (compiler.py `_TrainingCall`, `CompiledBackward.run`): what it
keeps from the first call must not stand in for what changes per call."""

from __future__ import annotations

import numpy as np

import mytorch
from mytorch import Tensor, nn


def test_a_new_trainable_input_each_call_gets_its_gradient_through_its_tape():
    mytorch.manual_seed(0)
    layer = nn.Linear(5, 3)
    loss_of = mytorch.compile(lambda x: (layer(x) ** 2).mean(), fullgraph=True)
    rng = np.random.default_rng(0)
    for call in range(3):  # the later calls take the repeated-call path
        leaf = Tensor(rng.standard_normal((4, 5)).astype(np.float32))
        x = leaf * 2.0  # not a leaf: its backward must run after the compiled one
        loss_of(x).backward()
        layer.zero_grad()
        eager_leaf = Tensor(leaf.data.copy())
        (layer(eager_leaf * 2.0) ** 2).mean().backward()
        np.testing.assert_allclose(leaf.grad, eager_leaf.grad, rtol=1e-5, err_msg=f"call {call}")


def test_a_loss_over_parameters_only_reaches_them_every_call():
    mytorch.manual_seed(0)
    layer = nn.Linear(5, 3)
    loss_of = mytorch.compile(lambda x: (layer(x) ** 2).mean(), fullgraph=True)
    x = Tensor(np.ones((2, 5), np.float32), trainable=False)
    grads = []
    for _ in range(3):
        layer.zero_grad()
        loss_of(x).backward()
        grads.append([p.grad.copy() for p in layer.parameters()])
    layer.zero_grad()
    (layer(x) ** 2).mean().backward()
    for got in grads:
        for g, p in zip(got, layer.parameters(), strict=True):
            np.testing.assert_allclose(g, p.grad, rtol=1e-5)
