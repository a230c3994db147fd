"""Meta-SGD: learned per-parameter inner learning rates (Li et al. 2017)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from metalearn.algorithms.base import AdaptSelector, Learner
from metalearn.algorithms.inner import LossFn, Objective
from metalearn.algorithms.updates import parameter_key, per_parameter

__all__ = ["MetaSGD", "parameter_key"]


class MetaSGD(Learner):
    """MAML with an inner learning rate per parameter entry, meta-learned together with phi.

    MAML with the update rule :func:`metalearn.updates.per_parameter`: the inner step is
    ``theta <- theta - alpha * grad`` where ``alpha`` has the shape of each adapted parameter
    (elementwise product), starts at ``inner_lr`` and receives a meta-gradient like phi. The
    rule is the submodule ``self.update``; its rates live in ``self.update.rates`` (keyed by the
    parameter name with ``'.'`` replaced by ``'__'``; ``self.update.named_rates()`` gives them by
    name), so ``parameters()``, ``state_dict()`` and ``.to()`` include them. Checkpoints that
    stored them as ``inner_lrs.*`` (before update rules) still load.

    Args:
        model: the network whose initialisation is meta-learned.
        loss: ``loss(prediction, target) -> scalar``.
        inner_lr: initial value of every learned rate.
        inner_steps: inner steps during meta-training (the paper uses one).
        first_order: drop second-order terms (the rates still learn: the step is linear in them).
        adapt: which parameters adapt (default all); only those get rates.
        objective: ``objective(params, split) -> scalar``; default the loss of the forward.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"``.
        backend: ``"func"`` (default) or ``"higher"``.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> metasgd = ml.MetaSGD(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        >>> opt = torch.optim.Adam(metasgd.parameters(), lr=1e-3)  # phi and the rates
        >>> out = metasgd(ml.tasks.Sine(k_shot=10, k_query=10).sample(25))
        >>> metasgd.update.named_rates()["head.weight"].shape
        torch.Size([1, 40])

    Reference:
        Li, Zhou, Chen, Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning.
        arXiv 2017. https://arxiv.org/abs/1707.09835
    """

    _renamed_state: ClassVar[dict[str, str]] = {"inner_lrs.": "update.rates."}

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 1,
        *,
        first_order: bool = False,
        adapt: AdaptSelector = None,
        objective: Objective | None = None,
        vectorize: str = "auto",
        backend: str = "func",
    ) -> None:
        super().__init__(
            model,
            loss,
            inner_lr,
            inner_steps,
            first_order=first_order,
            adapt=adapt,
            objective=objective,
            vectorize=vectorize,
            backend=backend,
        )
        named = dict(model.named_parameters())
        self.update = per_parameter(
            {n: torch.full_like(named[n].detach(), self.inner_lr) for n in self.adapt_names}
        )
