"""The multi-task pretraining baseline that Finn et al. (2017) compare MAML with."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metalearn.algorithms.base import AdaptSelector, Learner
from metalearn.algorithms.inner import LossFn, Objective, Params
from metalearn.algorithms.updates import UpdateRule
from metalearn.tasks.batch import Split

__all__ = ["Pretrain"]


class Pretrain(Learner):
    """One model trained on the pooled data of all tasks; fine-tuned on a new task's support set.

    The training loss of a task is the loss on its support and query examples together, with no
    inner loop; at evaluation (:meth:`adapt`, :func:`metalearn.evaluate`) the model is
    fine-tuned with ``inner_lr`` like the other learners. This is the "pretrained" baseline of
    Finn et al. (2017), figure 2.

    Args:
        model: the network.
        loss: ``loss(prediction, target) -> scalar``.
        inner_lr: fine-tuning step size at evaluation.
        inner_steps: default fine-tuning steps for :meth:`adapt` (training uses none).
        adapt: which parameters fine-tune (default all).
        update: the fine-tuning update rule (:mod:`metalearn.updates`); default ``sgd(inner_lr)``.
        objective: ``objective(params, split) -> scalar``, trained on the pooled split and used
            for fine-tuning; default the loss of the forward.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"``.
        backend: ``"func"`` or ``"higher"`` for the fine-tuning steps.

    Example:
        >>> import torch.nn.functional as F, metalearn as ml
        >>> base = ml.Pretrain(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        >>> out = base(ml.tasks.Sine(k_shot=10, k_query=10).sample(25))

    Reference:
        Finn, Abbeel, Levine. ICML 2017, section 5.1.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 1,
        *,
        adapt: AdaptSelector = None,
        update: UpdateRule | None = None,
        objective: Objective | None = None,
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
            update=update,
            objective=objective,
            vectorize=vectorize,
            backend=backend,
        )

    def task_loss(self, params: Params, support: Split, query: Split) -> tuple[Tensor, dict]:
        pooled = Split(torch.cat([support.x, query.x]), torch.cat([support.y, query.y]))
        return self.query_loss(params, pooled, 0)
