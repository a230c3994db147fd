"""MAML and first-order MAML (Finn et al. 2017)."""

from __future__ import annotations

from torch import nn

from metalearn.algorithms.base import AdaptSelector, Learner
from metalearn.algorithms.inner import LossFn, Objective
from metalearn.algorithms.updates import UpdateRule

__all__ = ["FOMAML", "MAML"]


class MAML(Learner):
    """Model-Agnostic Meta-Learning: learn an initialisation phi that adapts in a few steps.

    For each task, ``theta = phi - inner_lr * grad L_support(phi)`` (``inner_steps`` times);
    the meta-loss is the query loss at theta, averaged over the tasks of the batch, and its
    gradient flows through the inner loop (second order unless ``first_order=True``).

    Args:
        model: the network whose initial parameters are meta-learned.
        loss: ``loss(prediction, target) -> scalar`` (``F.mse_loss``, ``F.cross_entropy``).
        inner_lr: inner step size alpha.
        inner_steps: inner steps during meta-training.
        first_order: ignore second-order terms (FOMAML).
        adapt: which parameters adapt (default all); see :func:`select_parameters`.
        update: the inner update rule (:mod:`metalearn.updates`); default ``sgd(inner_lr)``.
        objective: ``objective(params, split) -> scalar``; default the loss of the forward.
        vectorize: ``"auto"`` (default), ``"vmap"`` or ``"loop"`` over the tasks of a batch.
        backend: ``"func"`` (torch.func, default) or ``"higher"``; same meta-gradients.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> maml = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        >>> opt = torch.optim.Adam(maml.parameters(), lr=1e-3)
        >>> batch = ml.tasks.Sine(k_shot=10, k_query=10).sample(25)
        >>> out = maml(batch); out.loss.backward(); opt.step(); opt.zero_grad()

    Reference:
        Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks. ICML 2017. https://arxiv.org/abs/1703.03400
    """

    # MAML is the base learner as it stands: Learner's constructor and MAML's task loss.


class FOMAML(MAML):
    """First-order MAML: MAML with the second-order terms dropped.

    The meta-gradient of a task is the query-loss gradient at the adapted parameters, which
    costs one backward pass through the query loss only. Same arguments as :class:`MAML`
    except ``first_order`` (always True).

    Example:
        >>> import torch.nn.functional as F, metalearn as ml
        >>> fomaml = ml.FOMAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)

    Reference:
        Finn, Abbeel, Levine. ICML 2017, section 5.2 (first-order approximation).
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
            model, loss, inner_lr, inner_steps, first_order=True, adapt=adapt, update=update,
            objective=objective, vectorize=vectorize, backend=backend,
        )  # fmt: skip
