"""Recurrent layers with PyTorch's parameters, shapes and semantics: RNN, LSTM and GRU (and cells).

Every step is written with plain Tensor ops: the input and hidden products stay separate,
`x @ W_ih.T + b_ih + h @ W_hh.T + b_hh`, because the compiler pattern-matches that shape.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mytorch.tensor import Tensor

from . import functional as F
from . import init
from .linear import check_size
from .module import Module, Parameter, shape_str

_NONLINEARITIES = ("tanh", "relu")
# Rows of the stacked gate weights per hidden unit, as PyTorch lays them out.
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# ---- one time step ---------------------------------------------------------------------------


def _affine(x: Tensor, h: Tensor, w_ih, w_hh, b_ih, b_hh) -> Tensor:
    """x @ W_ih.T + b_ih + h @ W_hh.T + b_hh (without the biases when there are none)."""
    if b_ih is None:
        return x @ w_ih.T + h @ w_hh.T
    return x @ w_ih.T + b_ih + h @ w_hh.T + b_hh


def rnn_step(x: Tensor, h: Tensor, w_ih, w_hh, b_ih, b_hh, nonlinearity: str = "tanh") -> Tensor:
    """One Elman RNN step: act(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)."""
    pre = _affine(x, h, w_ih, w_hh, b_ih, b_hh)
    return pre.tanh() if nonlinearity == "tanh" else pre.relu()


def lstm_step(x: Tensor, h: Tensor, c: Tensor, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Tensor]:
    """One LSTM step with PyTorch's gate order (input, forget, cell, output); returns (h, c)."""
    hidden = h.shape[-1]
    gates = _affine(x, h, w_ih, w_hh, b_ih, b_hh)
    i = gates[:, 0:hidden].sigmoid()
    f = gates[:, hidden : 2 * hidden].sigmoid()
    g = gates[:, 2 * hidden : 3 * hidden].tanh()
    o = gates[:, 3 * hidden : 4 * hidden].sigmoid()
    c_next = f * c + i * g
    h_next = o * c_next.tanh()
    return h_next, c_next


def gru_step(x: Tensor, h: Tensor, w_ih, w_hh, b_ih, b_hh) -> Tensor:
    """One GRU step with PyTorch's gate order (reset, update, new)."""
    hidden = h.shape[-1]
    # The hidden product is kept apart from the input's: the reset gate scales only its n part.
    gi = x @ w_ih.T
    gh = h @ w_hh.T
    if b_ih is not None:
        gi = gi + b_ih
        gh = gh + b_hh
    r = (gi[:, 0:hidden] + gh[:, 0:hidden]).sigmoid()
    z = (gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden]).sigmoid()
    n = (gi[:, 2 * hidden : 3 * hidden] + r * gh[:, 2 * hidden : 3 * hidden]).tanh()
    return (1.0 - z) * n + z * h


# ---- helpers ---------------------------------------------------------------------------------


def _zeros(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """The default initial state: zeros with `like`'s dtype, not trainable."""
    return Tensor(np.zeros(shape, dtype=like.dtype), trainable=False)


def _check_nonlinearity(nonlinearity: str) -> str:
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; select from 'tanh' or 'relu'")
    return nonlinearity


def _check_input(module: Module, input: Any, ranks: tuple[int, int], input_size: int) -> None:
    """TypeError/ValueError unless `input` is a Tensor of an allowed rank ending in input_size."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{module!r} expects a Tensor input, got {type(input).__name__}")
    unbatched, batched = ranks
    if input.ndim not in ranks:
        raise ValueError(
            f"{module!r}: expected input to be {unbatched}-D (unbatched) or {batched}-D "
            f"(batched), got {input.ndim}-D input of shape {shape_str(input.shape)}"
        )
    if input.shape[-1] != input_size:
        raise ValueError(
            f"{module!r}: input.size(-1) must be equal to input_size. Expected {input_size}, "
            f"got {input.shape[-1]} (input of shape {shape_str(input.shape)})"
        )


def _check_state(module: Module, state: Any, expected: tuple[int, ...], what: str) -> None:
    """TypeError/ValueError unless the given state is a Tensor of the expected shape."""
    if not isinstance(state, Tensor):
        raise TypeError(f"{module!r}: {what} must be a Tensor, got {type(state).__name__}")
    if tuple(state.shape) != tuple(expected):
        raise ValueError(
            f"{module!r}: expected {what} of shape {shape_str(expected)}, "
            f"got {shape_str(state.shape)}"
        )


def _split_lstm_state(module: Module, hx: Any) -> tuple[Any, Any]:
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{module!r}: hx must be a tuple (h, c), got {type(hx).__name__}")
    return hx[0], hx[1]


# ---- cells -----------------------------------------------------------------------------------


class _RNNCellBase(Module):
    mode = "RNN_TANH"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = check_size(input_size, "input_size", name)
        self.hidden_size = check_size(hidden_size, "hidden_size", name)
        self.bias = bias
        rows = _GATES[self.mode] * hidden_size
        self.weight_ih = Parameter(init.empty(rows, input_size))
        self.weight_hh = Parameter(init.empty(rows, hidden_size))
        if bias:
            self.bias_ih = Parameter(init.empty(rows))
            self.bias_hh = Parameter(init.empty(rows))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: every parameter U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        bound = init.fan_in_bound(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param, -bound, bound)

    def _weights(self) -> tuple:
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def _prepare(self, input: Any, state: Any, what: str) -> tuple[Tensor, bool]:
        """Check input and one state tensor; return the input as a batch and whether it was one."""
        _check_input(self, input, (1, 2), self.input_size)
        batched = input.ndim == 2
        if state is not None:
            _check_state(self, state, self._state_shape(input), what)
        return (input if batched else input.unsqueeze(0)), batched

    def _state_shape(self, input: Tensor) -> tuple[int, ...]:
        return (input.shape[0], self.hidden_size) if input.ndim == 2 else (self.hidden_size,)

    def _initial(self, state: Tensor | None, x: Tensor, batched: bool) -> Tensor:
        if state is None:
            return _zeros((x.shape[0], self.hidden_size), x)
        return state if batched else state.unsqueeze(0)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        return text


class RNNCell(_RNNCellBase):
    """One Elman RNN step: h' = act(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"
    ) -> None:
        _check_nonlinearity(nonlinearity)
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._prepare(input, hx, "hx")
        h = self._initial(hx, x, batched)
        h = rnn_step(x, h, *self._weights(), self.nonlinearity)
        return h if batched else h.squeeze(0)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.nonlinearity != "tanh":
            text += f", nonlinearity={self.nonlinearity}"
        return text


class LSTMCell(_RNNCellBase):
    """One LSTM step: (h', c') from input and (h, c)."""

    mode = "LSTM"

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        h0, c0 = (None, None) if hx is None else _split_lstm_state(self, hx)
        x, batched = self._prepare(input, h0, "h")
        if c0 is not None:
            _check_state(self, c0, self._state_shape(input), "c")
        h, c = lstm_step(
            x, self._initial(h0, x, batched), self._initial(c0, x, batched), *self._weights()
        )
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_RNNCellBase):
    """One GRU step: h' from input and h."""

    mode = "GRU"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._prepare(input, hx, "hx")
        h = gru_step(x, self._initial(hx, x, batched), *self._weights())
        return h if batched else h.squeeze(0)


# ---- multi-layer sequence modules ------------------------------------------------------------


class _RNNBase(Module):
    mode = "RNN_TANH"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = check_size(input_size, "input_size", name)
        self.hidden_size = check_size(hidden_size, "hidden_size", name)
        self.num_layers = check_size(num_layers, "num_layers", name)
        if num_layers < 1:
            raise ValueError(f"{name}: num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout={dropout} only acts between layers, and num_layers=1",
                stacklevel=3,
            )
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        rows = _GATES[self.mode] * hidden_size
        # Registered in PyTorch's order, so parameters() and state_dict() line up with torch.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            setattr(self, f"weight_ih_l{layer}", Parameter(init.empty(rows, layer_input)))
            setattr(self, f"weight_hh_l{layer}", Parameter(init.empty(rows, hidden_size)))
            if bias:
                setattr(self, f"bias_ih_l{layer}", Parameter(init.empty(rows)))
                setattr(self, f"bias_hh_l{layer}", Parameter(init.empty(rows)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: every parameter U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        bound = init.fan_in_bound(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param, -bound, bound)

    def _layer_weights(self, layer: int) -> tuple:
        names = (
            ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            if self.bias
            else ("weight_ih", "weight_hh")
        )
        weights = tuple(getattr(self, f"{name}_l{layer}") for name in names)
        return weights if self.bias else weights + (None, None)

    def _prepare(self, input: Any) -> tuple[Tensor, bool]:
        """The input as (seq, batch, feature) and whether it was batched."""
        _check_input(self, input, (2, 3), self.input_size)
        if input.shape[0 if input.ndim == 2 or not self.batch_first else 1] == 0:
            raise ValueError(
                f"{self!r}: got an empty sequence, input of shape {shape_str(input.shape)}"
            )
        if input.ndim == 2:  # unbatched (seq, feature), whatever batch_first says
            return input.unsqueeze(1), False
        return (input.transpose(0, 1) if self.batch_first else input), True

    def _initial_states(self, state: Any, x: Tensor, batched: bool, what: str) -> list[Tensor]:
        """Per-layer initial states of shape (batch, hidden): the given ones, or zeros."""
        batch = x.shape[1]
        if state is None:
            return [_zeros((batch, self.hidden_size), x) for _ in range(self.num_layers)]
        if batched:
            expected = (self.num_layers, batch, self.hidden_size)
        else:
            expected = (self.num_layers, self.hidden_size)
        _check_state(self, state, expected, what)
        if not batched:
            state = state.unsqueeze(1)
        return [state[layer] for layer in range(self.num_layers)]

    def _between_layers(self, output: Tensor, layer: int) -> Tensor:
        if self.dropout and self.training and layer < self.num_layers - 1:
            return F.dropout(output, self.dropout, True)
        return output

    def _finish(self, output: Tensor, batched: bool, *finals: list[Tensor]) -> tuple[Tensor, ...]:
        """Restore the caller's layout: the output, then each list of final states, stacked."""
        states = [Tensor.stack(per_layer, 0) for per_layer in finals]
        if not batched:
            return (output.squeeze(1), *(state.squeeze(1) for state in states))
        return (output.transpose(0, 1) if self.batch_first else output), *states

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        if self.batch_first is not False:
            text += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            text += f", dropout={self.dropout}"
        return text


class RNN(_RNNBase):
    """Multi-layer Elman RNN: forward(input, hx=None) -> (output, h_n), as torch.nn.RNN."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
    ) -> None:
        _check_nonlinearity(nonlinearity)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, batched = self._prepare(input)
        h0 = self._initial_states(hx, x, batched, "hidden state hx")
        finals = []
        for layer in range(self.num_layers):
            weights = self._layer_weights(layer)
            h = h0[layer]
            outputs = []
            for t in range(x.shape[0]):
                h = rnn_step(x[t], h, *weights, self.nonlinearity)
                outputs.append(h)
            finals.append(h)
            x = self._between_layers(Tensor.stack(outputs, 0), layer)
        return self._finish(x, batched, finals)


class LSTM(_RNNBase):
    """Multi-layer LSTM: forward(input, (h0, c0)=None) -> (output, (h_n, c_n)), as torch.nn.LSTM."""

    mode = "LSTM"

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x, batched = self._prepare(input)
        h_given, c_given = (None, None) if hx is None else _split_lstm_state(self, hx)
        h0 = self._initial_states(h_given, x, batched, "hidden state h0")
        c0 = self._initial_states(c_given, x, batched, "cell state c0")
        h_finals, c_finals = [], []
        for layer in range(self.num_layers):
            weights = self._layer_weights(layer)
            h, c = h0[layer], c0[layer]
            outputs = []
            for t in range(x.shape[0]):
                h, c = lstm_step(x[t], h, c, *weights)
                outputs.append(h)
            h_finals.append(h)
            c_finals.append(c)
            x = self._between_layers(Tensor.stack(outputs, 0), layer)
        output, h_n, c_n = self._finish(x, batched, h_finals, c_finals)
        return output, (h_n, c_n)


class GRU(_RNNBase):
    """Multi-layer GRU: forward(input, hx=None) -> (output, h_n), as torch.nn.GRU."""

    mode = "GRU"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, batched = self._prepare(input)
        h0 = self._initial_states(hx, x, batched, "hidden state hx")
        finals = []
        for layer in range(self.num_layers):
            weights = self._layer_weights(layer)
            h = h0[layer]
            outputs = []
            for t in range(x.shape[0]):
                h = gru_step(x[t], h, *weights)
                outputs.append(h)
            finals.append(h)
            x = self._between_layers(Tensor.stack(outputs, 0), layer)
        return self._finish(x, batched, finals)
