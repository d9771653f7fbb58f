"""Graph passes (plugins): the standard ones and the RNN passes, in DESIGN.md's order."""

from . import (  # noqa: F401  (each module registers its pass)
    batch_steps,
    const_fold,
    cse,
    dce,
    fuse_rnn_cell,
    hoist_input_projection,
    one_hot_lookup,
    peel,
    reroll,
    roll,
    simplify,
    split_concat,
    unroll,
)
from .base import PIPELINES, PassManager, PassResult, add_pass, register_pass, resolve_pipeline

__all__ = [
    "PIPELINES",
    "PassManager",
    "PassResult",
    "add_pass",
    "register_pass",
    "resolve_pipeline",
]
