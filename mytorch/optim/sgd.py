"""`SGD`: stochastic gradient descent with optional momentum, dampening, Nesterov, weight decay."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

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

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update: p -= lr * (momentum-smoothed) (grad + weight_decay * p)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            dampening, weight_decay = group["dampening"], group["weight_decay"]
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
