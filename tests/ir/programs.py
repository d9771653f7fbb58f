"""Programs the IR tests trace: the tutorial's RNN (cell In [7]) and its own `cat` (cell In [4]),
written exactly as the tutorial writes them, plus helpers to run them over T steps."""

from __future__ import annotations

import numpy as np

import mytorch
from mytorch import Tensor, nn

TUTORIAL_SIZES = (12, 4, 3)  # input_size, hidden_size, output_size


def cat(tensors, dim=0):
    """The tutorial's own cat (cell In [4]): it reads `.data`, so it cannot be traced."""
    assert all(isinstance(t, Tensor) for t in tensors), "所有输入必须是Tensor对象"
    data = [t.data for t in tensors]
    concatenated_data = np.concatenate(data, axis=dim)

    out = Tensor(concatenated_data, _prev=tuple(tensors), _op="cat")

    def _backward():
        grad_splits = np.split(
            out.grad, np.cumsum([t.data.shape[dim] for t in tensors[:-1]]), axis=dim
        )
        for t, grad in zip(tensors, grad_splits, strict=True):
            t.grad += grad

    out._backward = _backward
    return out


class RNN(nn.Module):
    """The tutorial's RNN (cell In [7])."""

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)

    def forward(self, input, hidden):
        combined = Tensor.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        hidden = mytorch.tanh(hidden)
        output = self.h2o(hidden)
        return output, hidden

    def __repr__(self):
        return (
            f"RNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size})"
        )


class TutorialCatRNN(RNN):
    """The tutorial RNN using the tutorial's own `cat` (which reads `.data`)."""

    def forward(self, input, hidden):
        combined = cat((input, hidden), 1)
        hidden = mytorch.tanh(self.i2h(combined))
        return self.h2o(hidden), hidden


def tutorial_rnn(seed: int = 0) -> RNN:
    mytorch.manual_seed(seed)
    return RNN(*TUTORIAL_SIZES)


def unrolled(rnn: RNN, steps: int):
    """A function running `rnn` over `steps` steps with a Python loop (unrolled by tracing)."""

    def run_sequence(xs, hidden):
        output = None
        for t in range(steps):
            output, hidden = rnn(xs[t], hidden)
        return output, hidden

    return run_sequence


def stacked_sequence(rnn: RNN, batch: int, h0_input: bool = False):
    """`rnn` over every step of xs (T, B, I) from h = 0 (zeros made inside, a constant of the
    graph, as bench.common.make_seq) or from an input h0: every step's output stacked, and the
    final h."""

    def run(xs, h0=None):
        h = h0 if h0_input else mytorch.zeros(batch, rnn.hidden_size)
        outs = []
        for t in range(xs.shape[0]):
            out, h = rnn(xs[t], h)
            outs.append(out)
        return mytorch.stack(outs), h

    return run


def sequence_inputs(steps: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    """xs (steps, 1, I) and a zero hidden state (1, H) for the tutorial RNN."""
    rng = np.random.default_rng(seed)
    input_size, hidden_size, _ = TUTORIAL_SIZES
    xs = Tensor(rng.standard_normal((steps, 1, input_size)).astype(np.float32), trainable=False)
    return xs, Tensor(np.zeros((1, hidden_size), np.float32), trainable=False)


def mlp(seed: int = 0) -> nn.Sequential:
    """A small MLP: Linear(3, 5), ReLU, Linear(5, 2)."""
    mytorch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
