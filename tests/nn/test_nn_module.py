"""Module mechanics: registration, traversal, modes, state_dict and repr."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import mytorch
from mytorch import Tensor, nn


class Block(nn.Module):
    """A module with a child, a parameter and another child, assigned in that order."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.scale = nn.Parameter(np.ones(4, dtype=np.float32))
        self.act = nn.Tanh()
        self.second = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.act(self.first(x)) * self.scale)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Dropout(0.1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(x))


def test_parameters_follow_registration_order_with_dotted_names():
    model = Outer()
    names = [name for name, _ in model.named_parameters()]
    # A module's own parameters come before its children's, as in PyTorch.
    assert names == [
        "block.scale",
        "block.first.weight",
        "block.first.bias",
        "block.second.weight",
        "block.second.bias",
        "head.0.weight",
        "head.0.bias",
    ]
    params = list(model.parameters())
    assert [p.shape for p in params] == [(4,), (4, 3), (4,), (2, 4), (2,), (2, 2), (2,)]
    assert all(isinstance(p, nn.Parameter) and p.trainable for p in params)
    assert [n for n, _ in Block().named_parameters(recurse=False)] == ["scale"]


def test_shared_parameters_and_modules_appear_once():
    model = Block()
    model.second = nn.Linear(4, 4)
    model.second.weight = model.first.weight  # tie the weights
    model.again = model.first  # the same module under a second name
    params = list(model.parameters())
    assert len(params) == len({id(p) for p in params})
    assert sum(p is model.first.weight for p in params) == 1
    names = [n for n, _ in model.named_parameters()]
    assert names == ["scale", "first.weight", "first.bias", "second.bias"]
    assert len(list(model.modules())) == 4  # self, first, act, second (again is first)


def test_reassigning_an_attribute_moves_it_between_registries():
    model = Block()
    model.first = nn.Parameter(np.zeros(2, np.float32))  # module slot becomes a parameter
    assert "first" not in dict(model.named_children())
    assert "first" in dict(model.named_parameters())
    del model.first
    assert "first" not in dict(model.named_parameters())
    with pytest.raises(AttributeError):
        _ = model.first


def test_plain_tensor_into_parameter_slot_is_a_type_error():
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="weight"):
        model.weight = Tensor(np.zeros((2, 2)))
    model.bias = None  # None is allowed, as in PyTorch
    assert [n for n, _ in model.named_parameters()] == ["weight"]


def test_assigning_before_super_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_children_and_modules():
    model = Outer()
    children = list(model.children())
    assert children == [model.block, model.head]
    names = [name for name, _ in model.named_modules()]
    assert names == [
        "",
        "block",
        "block.first",
        "block.act",
        "block.second",
        "head",
        "head.0",
        "head.1",
        "head.2",
    ]
    assert list(model.modules())[0] is model


def test_train_and_eval_propagate_to_every_submodule():
    model = Outer()
    assert model.training and all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.block.train()
    assert model.block.first.training and not model.head.training
    model.train()
    assert all(m.training for m in model.modules())


def test_forward_and_call():
    model = Outer().eval()
    x = mytorch.randn(5, 3)
    assert np.array_equal(model(x).data, model.forward(x).data)
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(x)


def test_zero_grad_clears_every_parameter_gradient():
    mytorch.manual_seed(0)  # (unseeded, both ReLU units were sometimes dead: no gradient at all)
    model = Outer()
    model(mytorch.randn(5, 3)).sum().backward()
    assert any(np.any(p.grad != 0) for p in model.parameters())
    model.zero_grad()
    assert all(np.all(p.grad == 0) for p in model.parameters())


def test_state_dict_round_trip():
    mytorch.manual_seed(0)
    source, target = Outer().eval(), Outer().eval()
    x = mytorch.randn(4, 3)
    assert not np.allclose(source(x).data, target(x).data)
    state = source.state_dict()
    assert list(state) == [name for name, _ in source.named_parameters()]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    held = target.block.first.weight.data
    target.load_state_dict(state)
    np.testing.assert_array_equal(source(x).data, target(x).data)
    assert target.block.first.weight.data is held, "load_state_dict must copy in place"
    # The state dict is a snapshot, not a view of the live parameters.
    state["block.scale"][...] = 7.0
    assert not np.any(source.block.scale.data == 7.0)


def test_load_state_dict_keeps_the_parameter_dtype():
    model = nn.Linear(3, 2)
    state = {k: v.astype(np.float64) + 1.0 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert model.weight.dtype == np.float32
    np.testing.assert_allclose(model.weight.data, state["weight"], rtol=1e-6)
    model.load_state_dict({k: Tensor(v) for k, v in state.items()})  # Tensors work too


def test_load_state_dict_errors_name_the_keys_and_shapes():
    model = nn.Linear(3, 2)
    before = model.state_dict()
    state = model.state_dict()
    del state["bias"]
    with pytest.raises(ValueError, match="missing keys: 'bias'"):
        model.load_state_dict(state)
    state = dict(model.state_dict(), extra=np.zeros(1))
    with pytest.raises(ValueError, match="unexpected keys: 'extra'"):
        model.load_state_dict(state)
    state = {"weight": np.ones((2, 4)), "bias": np.ones(2)}
    with pytest.raises(ValueError, match=r"'weight'.*\(2, 4\).*\(2, 3\)"):
        model.load_state_dict(state)
    # A failed load changes nothing.
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_load_state_dict_non_strict_reports_what_did_not_match():
    model = nn.Linear(3, 2)
    result = model.load_state_dict({"weight": np.ones((2, 3)), "other": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["bias"]
    assert result.unexpected_keys == ["other"]
    assert np.all(model.weight.data == 1.0)


@pytest.mark.parametrize(
    "module, expected",
    [
        (lambda: nn.RNN(12, 4, 12), "RNN(12, 4, num_layers=12)"),
        (lambda: nn.RNN(12, 4), "RNN(12, 4)"),
        (lambda: nn.Linear(3, 4), "Linear(in_features=3, out_features=4, bias=True)"),
        (lambda: nn.Linear(3, 4, bias=False), "Linear(in_features=3, out_features=4, bias=False)"),
        (lambda: nn.RNNCell(3, 4), "RNNCell(3, 4)"),
        (
            lambda: nn.LSTM(3, 4, num_layers=2, batch_first=True),
            "LSTM(3, 4, num_layers=2, batch_first=True)",
        ),
        (lambda: nn.Tanh(), "Tanh()"),
        (lambda: nn.Module(), "Module()"),
    ],
)
def test_literal_reprs(module, expected):
    assert repr(module()) == expected


def _repr_cases(lib):
    """The same modules built from `lib` (mytorch.nn or torch.nn), for comparing reprs."""
    return [
        lib.RNN(12, 4, 12),
        lib.RNN(3, 4, nonlinearity="relu", bias=False, batch_first=True),
        lib.RNNCell(3, 4, bias=False, nonlinearity="relu"),
        lib.LSTM(3, 4, num_layers=2, batch_first=True),
        lib.LSTMCell(3, 4),
        lib.GRU(3, 4, num_layers=2, dropout=0.5),
        lib.GRUCell(3, 4, bias=False),
        lib.Linear(2, 5),
        lib.Embedding(10, 3),
        lib.Dropout(0.2),
        lib.Softmax(dim=1),
        lib.LogSoftmax(dim=-1),
        lib.Softmax(),
        lib.ReLU(),
        lib.Sigmoid(),
        lib.MSELoss(),
        lib.NLLLoss(),
        lib.CrossEntropyLoss(reduction="sum"),
        lib.Sequential(lib.Linear(3, 4), lib.Tanh(), lib.Sequential(lib.Linear(4, 4), lib.ReLU())),
        lib.ModuleList([lib.Linear(2, 2), lib.Linear(2, 2), lib.Tanh(), lib.Linear(2, 2)]),
        lib.ModuleList([]),
    ]


def test_reprs_match_torch():
    torch = pytest.importorskip("torch")
    for mine, reference in zip(_repr_cases(nn), _repr_cases(torch.nn), strict=True):
        assert repr(mine) == repr(reference)


def test_nested_custom_module_repr_matches_torch():
    torch = pytest.importorskip("torch")

    def build(lib):
        class Net(lib.Module):
            def __init__(self):
                super().__init__()
                self.embed = lib.Embedding(20, 8)
                self.rnn = lib.LSTM(8, 16, num_layers=2, batch_first=True)
                self.head = lib.Sequential(lib.Linear(16, 16), lib.ReLU(), lib.Linear(16, 5))
                self.drop = lib.Dropout(0.3)

        return Net()

    ours, theirs = build(nn), build(torch.nn)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]


def test_tutorial_style_subclass_with_its_own_repr():
    class RNN(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super().__init__()
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.output_size = output_size
            self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
            self.h2o = nn.Linear(hidden_size, output_size)

        def forward(self, input, hidden):
            combined = Tensor.cat((input, hidden), 1)
            hidden = mytorch.tanh(self.i2h(combined))
            return self.h2o(hidden), hidden

        def __repr__(self):
            return (
                f"RNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"output_size={self.output_size})"
            )

    model = RNN(12, 4, 3)
    assert repr(model) == "RNN(input_size=12, hidden_size=4, output_size=3)"
    assert [n for n, _ in model.named_parameters()] == [
        "i2h.weight",
        "i2h.bias",
        "h2o.weight",
        "h2o.bias",
    ]
    output, hidden = model(mytorch.randn(1, 12), mytorch.zeros(1, 4))
    assert output.shape == (1, 3) and hidden.shape == (1, 4)
    output.sum().backward()
    assert np.any(model.i2h.weight.grad != 0)


def test_parameter_is_a_trainable_tensor():
    param = nn.Parameter(np.arange(3.0))
    assert isinstance(param, Tensor) and param.trainable
    assert param.dtype == np.float64  # float arrays keep their dtype
    assert nn.Parameter(Tensor([1, 2])).dtype == np.float32
    assert not nn.Parameter(np.zeros(2), requires_grad=False).trainable
    assert repr(param).startswith("Parameter containing:\nTensor(data=")


def test_parameter_and_module_attributes_follow_every_change_of_the_registries():
    # Each registry entry is also a plain attribute (a fast read): both must agree after every
    # way of changing them.
    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    lin = seq[0]
    old = lin.weight
    lin.weight = nn.Parameter(np.ones((4, 3), np.float32))
    assert lin.weight is lin._parameters["weight"] is not old
    lin.bias = None
    assert lin.bias is None and lin._parameters["bias"] is None
    del lin.weight
    assert "weight" not in lin._parameters and not hasattr(lin, "weight")
    lin.register_parameter("weight", nn.Parameter(np.zeros((4, 3), np.float32)))
    assert lin.weight is lin._parameters["weight"]
    seq.add_module("head", nn.Linear(4, 2))
    assert seq.head is seq._modules["head"]
    seq.head = nn.Parameter(np.zeros(2, np.float32))  # a module's name taken by a parameter
    assert "head" not in seq._modules and seq.head is seq._parameters["head"]
    copied = copy.deepcopy(seq)
    assert copied[0].weight is copied[0]._parameters["weight"] is not lin.weight
    with pytest.raises(TypeError, match="'weight'"):
        lin.weight = 3
    assert lin.weight is lin._parameters["weight"]
