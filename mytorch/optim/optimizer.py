"""`Optimizer`: parameter groups, per-parameter state and `zero_grad`, shared by SGD and Adam."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mytorch.tensor import Tensor


class Optimizer:
    """Base class: holds parameter groups (dicts with "params" and hyperparameters) and state.

    Subclasses implement `step()`, touching only each parameter's `.data` (in place) and `.grad`.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or "
                f"dicts, but got {type(params).__name__}"
            )
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        # Keyed by id(): Tensors compare elementwise, so they make poor dict keys.
        self.state: dict[int, dict[str, Any]] = {}
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group of parameters, with hyperparameters defaulting to the optimizer's."""
        if not isinstance(group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(group).__name__}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for param in params:
            if not isinstance(param, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but one of the params is "
                    f"{type(param).__name__}"
                )
        seen = {id(p) for p in self._all_params()}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear more than once in the optimizer's groups")
        full = dict(self.defaults)
        full.update(group)
        full["params"] = params
        self.param_groups.append(full)

    def _all_params(self) -> Iterator[Tensor]:
        for group in self.param_groups:
            yield from group["params"]

    def _state(self, param: Tensor) -> dict[str, Any]:
        return self.state.setdefault(id(param), {})

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zeros."""
        for param in self._all_params():
            param.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter once from its gradient; returns closure() if given."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def check_hyperparameter(value: float, name: str) -> float:
    """`value` as a float if it is non-negative, else a ValueError naming it."""
    if not value >= 0.0:
        raise ValueError(f"Invalid {name}: {value}")
    return float(value)
