"""`Adam`: adaptive moment estimation with bias correction, as torch.optim.Adam."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer, check_hyperparameter


class Adam(Optimizer):
    """torch.optim.Adam's update (L2 weight decay added to the gradient; optional AMSGrad)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        beta1, beta2 = betas
        for index, beta in enumerate((beta1, beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        defaults = {
            "lr": check_hyperparameter(lr, "learning rate"),
            "betas": (float(beta1), float(beta2)),
            "eps": check_hyperparameter(eps, "epsilon value"),
            "weight_decay": check_hyperparameter(weight_decay, "weight_decay value"),
            "amsgrad": amsgrad,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam update of every parameter from its gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if not param.trainable:
                    continue
                grad = param.grad
                if weight_decay != 0:
                    grad = grad + weight_decay * param.data
                state = self._state(param)
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(param.data)
                    state["exp_avg_sq"] = np.zeros_like(param.data)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = np.zeros_like(param.data)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                # Same arithmetic as PyTorch: exp_avg.lerp_(grad, 1 - beta1), then addcmul_.
                exp_avg += (1.0 - beta1) * (grad - exp_avg)
                exp_avg_sq *= beta2
                exp_avg_sq += (1.0 - beta2) * grad * grad
                if group["amsgrad"]:
                    np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                else:
                    second = exp_avg_sq
                step_size = lr / (1.0 - beta1 ** state["step"])
                denom = np.sqrt(second) / math.sqrt(1.0 - beta2 ** state["step"]) + eps
                # In place, so anything holding param.data (a compiled graph) sees the update.
                param.data -= step_size * (exp_avg / denom)
        return loss
