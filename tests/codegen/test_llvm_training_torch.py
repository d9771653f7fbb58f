"""Compiled training against PyTorch: outputs and every gradient of compiled recurrent layers
(native forward and native backward, llvm backend) equal torch's. Skipped without torch."""

from __future__ import annotations

import numpy as np
import pytest

import mytorch
from mytorch import nn

torch = pytest.importorskip("torch")

from tests.nn.test_nn_vs_torch import (  # noqa: E402, F401 (float64: a fixture)
    _inputs,
    _state,
    compare_with_torch,
    float64,
)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_hx", [False, True])
def test_compiled_recurrent_layers_match_torch(float64, kind, num_layers, with_hx):  # noqa: F811
    theirs = getattr(torch.nn, kind)(5, 6, num_layers=num_layers).double()
    compiled = mytorch.compile(getattr(nn, kind)(5, 6, num_layers=num_layers), fullgraph=True)
    args = [_inputs(7, 3, 5, batched=True, batch_first=False, seed=1)]
    if with_hx:
        state = _state(num_layers, 3, 6, batched=True, seed=2)
        args.append((state, state * 0.5) if kind == "LSTM" else state)
    compare_with_torch(compiled, theirs, *args)
    assert compiled.backward_graph is not None  # the gradients came from compiled code


def test_compiled_tutorial_cell_loop_matches_torch(float64):  # noqa: F811
    # torch's RNNCell is the tutorial's cell with the concat split: h = tanh(x W_ih' + h W_hh' + b)
    theirs = torch.nn.RNNCell(5, 6).double()
    cell = nn.RNNCell(5, 6)

    def run(xs, h):
        for t in range(xs.shape[0]):
            h = cell(xs[t], h)
        return h

    class Loop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = theirs

        def forward(self, xs, h):
            for t in range(xs.shape[0]):
                h = self.cell(xs[t], h)
            return h

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, xs, h):
            return run(xs, h)

    ours = mytorch.compile(Wrapped(), fullgraph=True)
    rng = np.random.default_rng(3)
    compare_with_torch(ours, Loop(), rng.standard_normal((9, 2, 5)), rng.standard_normal((2, 6)))
    assert "reverse=True" in str(ours.backward_graph)
