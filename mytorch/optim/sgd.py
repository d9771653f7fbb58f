"""`SGD`: stochastic gradient descent with optional momentum, dampening, Nesterov, weight decay."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np

from . import fused
from .optimizer import Optimizer, check_hyperparameter


class SGD(Optimizer):
    """torch.optim.SGD's update: the momentum buffer starts as the first gradient."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = {
            "lr": check_hyperparameter(lr, "learning rate"),
            "momentum": check_hyperparameter(momentum, "momentum value"),
            "dampening": float(dampening),
            "weight_decay": check_hyperparameter(weight_decay, "weight_decay value"),
            "nesterov": nesterov,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)
        # per (group, with momentum): its fused update, or False where numpy does it
        self._fused: dict[tuple[int, bool], fused.FusedSGD | Literal[False]] = {}

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update: p -= lr * (momentum-smoothed) (grad + weight_decay * p)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            dampening, weight_decay = group["dampening"], group["weight_decay"]
            if weight_decay == 0 and dampening == 0 and not group["nesterov"]:
                if self._fused_step(group, lr, momentum):
                    continue
            for param in group["params"]:
                if not param.trainable:
                    continue
                step = param.grad
                if weight_decay != 0:
                    step = step + weight_decay * param.data
                if momentum != 0:
                    state = self._state(param)
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = np.array(step, dtype=param.data.dtype)
                    else:
                        buf *= momentum
                        buf += step if dampening == 0 else (1.0 - dampening) * step
                    step = step + momentum * buf if group["nesterov"] else buf
                # In place, so anything holding param.data (a compiled graph) sees the update.
                param.data -= lr * step
        return loss

    def _fused_step(self, group: dict[str, Any], lr: float, momentum: float) -> bool:
        """The group's update in one native call (see `fused.py`); False when it cannot be, or
        on a first momentum step (the numpy path makes the buffers)."""
        arrays: list = []
        if momentum != 0:
            state = self.state
            for param in group["params"]:
                if param.trainable:
                    buf = state.get(id(param), {}).get("momentum_buffer")
                    if buf is None:
                        return False
                    arrays += (param.data, param.grad, buf)
        else:
            for param in group["params"]:
                if param.trainable:
                    arrays += (param.data, param.grad)
        key = (id(group), momentum != 0)
        update = self._fused.get(key)
        if update is False:
            return False
        if update is not None and update(lr, momentum, arrays):
            return True
        # First use, or the arrays changed (shapes, layouts): plan again; numpy from now on if
        # the new plan does not take them either.
        update = fused.plan(arrays, momentum != 0)
        if update is not None and update(lr, momentum, arrays):
            self._fused[key] = update
            return True
        self._fused[key] = False
        return False
