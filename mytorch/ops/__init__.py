"""The op registry: each op defined once (reference kernel, shape rule, gradient rule)."""

from . import elementwise, linalg, nn, random, reduce, shape  # noqa: F401  (registers the ops)
from .registry import OPS, OpDef, TensorType, bind, def_op, get_op

__all__ = ["OPS", "OpDef", "TensorType", "bind", "def_op", "get_op"]
