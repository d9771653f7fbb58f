"""Optimizers, named as in `torch.optim`; they update `.data` in place from `.grad`."""

from .adam import Adam
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["SGD", "Adam", "Optimizer"]
