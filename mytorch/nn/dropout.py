"""`Dropout`: random zeroing during training, identity in eval mode."""

from __future__ import annotations

from mytorch.tensor import Tensor

from . import functional as F
from .module import Module


class Dropout(Module):
    """Zero elements with probability p and scale the rest by 1/(1-p), in training mode only."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        # NOTE: `inplace` is accepted for PyTorch compatibility; mytorch always computes out of
        # place, which gives the same values.
        self.p = p
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
