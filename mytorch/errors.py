"""Exceptions shared across mytorch."""


class CompileError(Exception):
    """A function (or an op in it) cannot be traced or compiled; the message says why and where."""
