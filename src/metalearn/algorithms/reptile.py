"""Reptile (Nichol, Achiam, Schulman 2018), as a loss whose gradient is the Reptile step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metalearn.algorithms.base import AdaptSelector, Learner
from metalearn.algorithms.inner import LossFn, Objective, Params
from metalearn.algorithms.updates import UpdateRule
from metalearn.tasks.batch import Split

__all__ = ["Reptile"]

_REMOVED = (
    "Reptile's inner_optimizer and adam_betas are gone: pass the update rule instead, "
    "update=metalearn.updates.adam(inner_lr, betas=(0.0, 0.999)) (in a YAML config: "
    "update: {name: adam, lr: 0.001, betas: [0.0, 0.999]}); plain SGD is the default"
)


class Reptile(Learner):
    """Reptile: adapt to each task, then move phi toward the adapted weights.

    Per task, theta is ``inner_steps`` steps of the update rule (SGD by default, or Adam:
    ``update=ml.updates.adam(lr, betas=(0.0, 0.999))``) on the support set, starting from
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
        adapt: which parameters adapt (default all).
        update: the inner update rule (:mod:`metalearn.updates`), default ``sgd(inner_lr)``;
            the paper's few-shot experiments use Adam with ``beta1 = 0``,
            ``metalearn.updates.adam(inner_lr, betas=(0.0, 0.999))`` (fresh moments per task).
        objective: ``objective(params, split) -> scalar``; default the loss of the forward.
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
        *,
        adapt: AdaptSelector = None,
        update: UpdateRule | None = None,
        objective: Objective | None = None,
        vectorize: str = "auto",
        backend: str = "func",
        **removed: Any,
    ) -> None:
        if "inner_optimizer" in removed or "adam_betas" in removed:
            raise TypeError(_REMOVED)
        if removed:
            raise TypeError(f"Reptile got unexpected keyword arguments {sorted(removed)}")
        super().__init__(
            model,
            loss,
            inner_lr,
            inner_steps,
            first_order=True,
            adapt=adapt,
            update=update,
            objective=objective,
            vectorize=vectorize,
            backend=backend,
        )

    def task_loss(self, params: Params, support: Split, query: Split) -> tuple[Tensor, dict]:
        start = {k: v.detach() for k, v in params.items()}
        with torch.no_grad():
            theta = self.inner(start, support, self.inner_steps, True)
            _, metrics = self.query_loss(theta, query, self.inner_steps)
        value = sum(0.5 * (params[k] - theta[k]).pow(2).sum() for k in self.adapt_names)
        return value, metrics
