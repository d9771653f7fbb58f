"""mytorch: a teachable PyTorch-like framework on numpy."""

from . import nn, ops, optim
from .compiler import compile, explain, trace
from .errors import CompileError
from .functions import (
    arange,
    cat,
    exp,
    from_numpy,
    log,
    log_softmax,
    manual_seed,
    matmul,
    ones,
    ones_like,
    rand,
    randn,
    relu,
    sigmoid,
    softmax,
    stack,
    tanh,
    tensor,
    zeros,
    zeros_like,
)
from .parallel import get_num_threads, set_num_threads
from .tensor import Tensor, get_default_dtype, is_grad_enabled, no_grad, set_default_dtype

__all__ = [
    "CompileError",
    "Tensor",
    "compile",
    "trace",
    "nn",
    "optim",
    "arange",
    "cat",
    "exp",
    "explain",
    "from_numpy",
    "get_default_dtype",
    "get_num_threads",
    "is_grad_enabled",
    "log",
    "log_softmax",
    "manual_seed",
    "matmul",
    "no_grad",
    "ones",
    "ones_like",
    "ops",
    "rand",
    "randn",
    "relu",
    "set_default_dtype",
    "set_num_threads",
    "sigmoid",
    "softmax",
    "stack",
    "tanh",
    "tensor",
    "zeros",
    "zeros_like",
]

__version__ = "0.1.0"
