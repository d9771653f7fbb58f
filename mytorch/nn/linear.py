"""`Linear`: y = x @ W.T + b."""

from __future__ import annotations

from mytorch.tensor import Tensor

from . import init
from .module import Module, Parameter, shape_str


def check_size(value: int, what: str, owner: str) -> int:
    """`value` if it is a non-negative int, else a TypeError/ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{owner}: {what} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{owner}: {what} must be non-negative, got {value}")
    return value


class Linear(Module):
    """Affine map with weight (out_features, in_features) and bias (out_features,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = check_size(in_features, "in_features", "Linear")
        self.out_features = check_size(out_features, "out_features", "Linear")
        self.weight = Parameter(init.empty(out_features, in_features))
        if bias:
            self.bias = Parameter(init.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)) for both."""
        bound = init.fan_in_bound(self.in_features)
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(f"{self!r} expects a Tensor, got {type(input).__name__}")
        shape = input.shape
        if not shape or shape[-1] != self.in_features:
            raise ValueError(
                f"{self!r} got input of shape {shape_str(shape)}; "
                f"its last dim must be in_features={self.in_features}"
            )
        out = input @ self.weight.T
        bias = self.bias
        return out if bias is None else out + bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
