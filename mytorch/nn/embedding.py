"""`Embedding`: a lookup table of learnable vectors indexed by integers."""

from __future__ import annotations

from typing import Any

from mytorch.tensor import Tensor, apply

from . import init
from .functional import as_index_tensor, check_index_range
from .linear import check_size
from .module import Module, Parameter


class Embedding(Module):
    """`num_embeddings` vectors of size `embedding_dim`, initialised N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings = check_size(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = check_size(embedding_dim, "embedding_dim", "Embedding")
        self.weight = Parameter(init.empty(num_embeddings, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: N(0, 1)."""
        init.normal_(self.weight)

    def forward(self, input: Any) -> Tensor:
        indices = as_index_tensor(input, f"{self!r} indices")
        check_index_range(
            indices,
            self.num_embeddings,
            f"index {{index}} is out of range for {self!r} (valid indices are "
            f"0..{self.num_embeddings - 1})",
        )
        return apply("embedding", self.weight, indices)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
