"""`Module` (the base of every layer) and `Parameter` (a trainable Tensor a Module owns)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

import mytorch.tensor as _tensor
from mytorch.tensor import Tensor


class Parameter(Tensor):
    """A trainable Tensor that a Module registers when it is assigned as an attribute."""

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = np.zeros((0,), dtype=np.float32)
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, trainable=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def shape_str(shape) -> str:
    """A shape as PyTorch prints it in messages: (2, 3)."""
    shape = tuple(shape)
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _addindent(text: str, num_spaces: int) -> str:
    """Indent every line but the first (how PyTorch nests child reprs)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    first = lines.pop(0)
    rest = [(" " * num_spaces) + line if line.strip() else "" for line in lines]
    return first + "\n" + "\n".join(rest)


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(..., strict=False)` could not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of all layers: registers Parameters and submodules assigned as attributes."""

    training: bool

    def __init__(self) -> None:
        # object.__setattr__ because our own __setattr__ needs these dicts to exist already.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())

    # ---- registration --------------------------------------------------------------------

    def _registries(self, name: str, value: Any) -> tuple[OrderedDict, OrderedDict]:
        params = self.__dict__.get("_parameters")
        modules = self.__dict__.get("_modules")
        if params is None or modules is None:
            raise AttributeError(
                f"cannot assign {type(value).__name__} to '{name}' before "
                f"{type(self).__name__}.__init__() called super().__init__()"
            )
        return params, modules

    # The registries are the source of truth; each entry is also kept in the instance's
    # __dict__, so that `self.weight` is a plain attribute read. Through `__getattr__` alone,
    # every such read first fails inside CPython, which makes and drops an AttributeError:
    # ~1.3 us, against ~0.1 us (8 reads per step of the tutorial's RNN, traced or eager).

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Parameter):
            params, modules = self._registries(name, value)
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params, modules = self._registries(name, value)
            params.pop(name, None)
            modules[name] = value
        elif name in self.__dict__.get("_parameters", {}):
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter '{name}' "
                    "(nn.Parameter or None expected)"
                )
            self._parameters[name] = None
        elif name in self.__dict__.get("_modules", {}):
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module '{name}' "
                    "(nn.Module or None expected)"
                )
            self._modules[name] = None
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: an entry put in a registry directly.
        for registry in ("_parameters", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in ("_parameters", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                del entries[name]
                self.__dict__.pop(name, None)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register `param` (or None, a placeholder) under `name`."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign {type(param).__name__} as parameter '{name}' "
                "(nn.Parameter or None expected)"
            )
        params, _ = self._registries(name, param)
        params[name] = param
        object.__setattr__(self, name, param)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register `module` (or None) as a child under `name`."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        _, modules = self._registries(name, module)
        modules[name] = module
        object.__setattr__(self, name, module)

    # ---- traversal -----------------------------------------------------------------------

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs in registration order; a shared Parameter appears once."""
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (module_prefix + "." + name if module_prefix else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every Parameter of this module and its submodules, once each, in registration order."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) for each direct submodule."""
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        """The direct submodules."""
        for _, module in self.named_children():
            yield module

    def named_modules(
        self, memo: set[int] | None = None, prefix: str = ""
    ) -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for this module and all submodules, depth first, once each."""
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            child_prefix = prefix + "." + name if prefix else name
            yield from module.named_modules(memo, child_prefix)

    def modules(self) -> Iterator[Module]:
        """This module and all its submodules, depth first, once each."""
        for _, module in self.named_modules():
            yield module

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call `fn` on every submodule, then on self (as PyTorch); returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients -------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every submodule; returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"training mode must be a bool, got {type(mode).__name__}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (Dropout off); returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zeros."""
        for param in self.parameters():
            param.zero_grad()

    # ---- calling -------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses override it."""
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing "forward"')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracer = _tensor._tracer
        if tracer is not None:  # (see Tracer.call_module: the source line of the module's ops)
            return tracer.call_module(self, args, kwargs)
        if kwargs:
            return self.forward(*args, **kwargs)
        return self.forward(*args)  # (without an empty dict to unpack: the common call)

    # ---- state ---------------------------------------------------------------------------

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """A copy of every parameter's data as a numpy array, keyed by dotted name."""
        return OrderedDict((name, param.data.copy()) for name, param in self.named_parameters())

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (numpy, Tensors, anything array-like) into the parameters, in place."""
        own = dict(self.named_parameters())
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        if strict and (missing or unexpected):
            problems = []
            if missing:
                problems.append("missing keys: " + ", ".join(repr(k) for k in missing))
            if unexpected:
                problems.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
            raise ValueError(
                f"error loading state_dict into {type(self).__name__}: " + "; ".join(problems)
            )
        # Check every shape before copying anything, so a failed load changes nothing.
        arrays = {}
        for name, param in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            array = value.data if isinstance(value, Tensor) else np.asarray(value)
            if tuple(array.shape) != tuple(param.data.shape):
                raise ValueError(
                    f"error loading state_dict into {type(self).__name__}: shape mismatch for "
                    f"'{name}': the checkpoint has {shape_str(array.shape)}, the parameter "
                    f"has {shape_str(param.data.shape)}"
                )
            arrays[name] = array
        for name, array in arrays.items():
            # In place, keeping the parameter's dtype, so anything holding p.data sees the load.
            own[name].data[...] = array
        return IncompatibleKeys(missing, unexpected)

    # ---- printing ------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's repr (its settings)."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [
            f"({name}): " + _addindent(repr(module), 2) for name, module in self._modules.items()
        ]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"
