"""The IR: SSA graphs of registry ops, their text form, verifier, tracer and interpreter."""

from . import loop  # noqa: F401  (registers the loop op)
from .graph import Graph, Node
from .parser import parse
from .verify import VerifyError, verify

__all__ = ["Graph", "Node", "VerifyError", "parse", "verify"]
