"""Reptile (Nichol, Achiam, Schulman 2018), as a loss whose gradient is the Reptile step."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from metalearn.algorithms.base import AdaptSelector, Learner, task_metrics
from metalearn.algorithms.inner import LossFn, Params, checked_loss
from metalearn.tasks.batch import Split

__all__ = ["InnerAdam", "Reptile"]


class InnerAdam:
    """Adam as an update rule of the inner loop (a :class:`GradientTransform`), state per task.

    Gives the direction ``m_hat / (sqrt(v_hat) + eps)`` (the same arithmetic as
    ``torch.optim.Adam``), so the step is ``lr * direction``. The moments start at zero for
    every task. Functional, hence ``vmap``-safe.

    Args:
        betas: decay rates of the first and second moments; Reptile uses ``beta1 = 0``.
        eps: added to the root of the second moment.
    """

    def __init__(self, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8) -> None:
        try:
            beta1, beta2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair of numbers, got {betas!r}") from None
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.betas = (beta1, beta2)
        self.eps = float(eps)

    def init(self, params: Params) -> dict[str, tuple[Tensor, Tensor]]:
        return {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}

    def __call__(self, grads: Params, state: Any, step: int) -> tuple[Params, Any]:
        beta1, beta2 = self.betas
        t = step + 1
        correction1 = 1.0 - beta1**t
        root_correction2 = math.sqrt(1.0 - beta2**t)
        directions, new_state = {}, {}
        for k, g in grads.items():
            m, v = state[k]
            m = beta1 * m + (1.0 - beta1) * g
            v = beta2 * v + (1.0 - beta2) * g * g
            directions[k] = (m / correction1) / (v.sqrt() / root_correction2 + self.eps)
            new_state[k] = (m, v)
        return directions, new_state

    def __repr__(self) -> str:
        return f"InnerAdam(betas={self.betas}, eps={self.eps})"


class Reptile(Learner):
    """Reptile: adapt to each task, then move phi toward the adapted weights.

    Per task, theta is ``inner_steps`` steps of SGD (or Adam) on the support set, starting from
    phi and treated as a constant. The meta-loss is ``0.5 * ||phi - theta||^2`` summed over the
    adapted parameters and averaged over tasks, so its gradient is ``phi - mean(theta)``:
    ``torch.optim.SGD(lr=epsilon)`` on it is exactly the Reptile update
    ``phi <- phi + epsilon * (mean(theta) - phi)``, and any other optimizer or schedule can be
    used. No second-order terms are ever built. The reported ``metrics["loss"]`` is the query
    loss at theta (the query set is not used for the update).

    Args:
        model: the network whose initialisation is meta-learned.
        loss: ``loss(prediction, target) -> scalar``.
        inner_lr: inner step size.
        inner_steps: inner steps per task (Reptile needs more than one: with one step it is
            first-order MAML on the support set).
        inner_optimizer: ``"sgd"`` or ``"adam"`` (:class:`InnerAdam`, ``beta1 = 0`` as in the
            paper's few-shot experiments; fresh moments per task).
        adam_betas: Adam's betas when ``inner_optimizer="adam"``.
        adapt: which parameters adapt (default all).
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"``.
        backend: ``"func"`` (default) or ``"higher"``.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> reptile = ml.Reptile(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, 0.02, inner_steps=5)
        >>> opt = torch.optim.SGD(reptile.parameters(), lr=0.1)  # lr is Reptile's epsilon
        >>> out = reptile(ml.tasks.Sine(k_shot=10, k_query=10).sample(25))
        >>> out.loss.backward(); opt.step(); opt.zero_grad()

    Reference:
        Nichol, Achiam, Schulman. On First-Order Meta-Learning Algorithms. arXiv 2018.
        https://arxiv.org/abs/1803.02999
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 5,
        inner_optimizer: str = "sgd",
        adam_betas: tuple[float, float] = (0.0, 0.999),
        adapt: AdaptSelector = None,
        vectorize: str = "auto",
        backend: str = "func",
    ) -> None:
        super().__init__(
            model,
            loss,
            inner_lr,
            inner_steps,
            first_order=True,
            adapt=adapt,
            vectorize=vectorize,
            backend=backend,
        )
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        self.inner_optimizer = inner_optimizer
        self.transform = InnerAdam(adam_betas) if inner_optimizer == "adam" else None

    def inner(self, params: Params, support: Split, steps: int, first_order: bool, **kw) -> Any:
        return super().inner(params, support, steps, first_order, transform=self.transform, **kw)

    def task_loss(self, params: Params, support: Split, query: Split) -> tuple[Tensor, dict]:
        start = {k: v.detach() for k, v in params.items()}
        with torch.no_grad():
            theta = self.inner(start, support, self.inner_steps, True)
            prediction = self.predict(theta, query.x, self.inner_steps)
            metrics = task_metrics(
                prediction, query.y, checked_loss(self.loss, prediction, query.y)
            )
        value = sum(0.5 * (params[k] - theta[k]).pow(2).sum() for k in self.adapt_names)
        return value, metrics

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inner_optimizer={self.inner_optimizer!r}"
