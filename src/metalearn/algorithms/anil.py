"""ANIL: Almost No Inner Loop (Raghu et al. 2019)."""

from __future__ import annotations

from torch import nn

from metalearn.algorithms.base import AdaptSelector, Learner
from metalearn.algorithms.inner import LossFn, Objective
from metalearn.algorithms.updates import UpdateRule

__all__ = ["ANIL"]


class ANIL(Learner):
    """MAML where only the head adapts in the inner loop; the body is meta-learned only.

    For each task the head parameters take ``inner_steps`` gradient steps on the support set
    while the body stays at phi; the meta-loss is the query loss, and its gradient reaches the
    body through the features the adapted head reads (second order unless
    ``first_order=True``). Each inner step back-propagates through the head only, so a meta-step
    costs less than MAML's on the same model.

    Args:
        model: the network; ``head`` names the part that adapts.
        loss: ``loss(prediction, target) -> scalar``.
        inner_lr: inner step size of the head.
        inner_steps: inner steps during meta-training.
        first_order: drop second-order terms (the head's gradient is then treated as constant).
        update: the inner update rule (:mod:`metalearn.updates`); default ``sgd(inner_lr)``.
        objective: ``objective(params, split) -> scalar``; default the loss of the forward.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"`` over the tasks of a batch.
        backend: ``"func"`` (default) or ``"higher"``.
        head: the adapted parameters: a name prefix (``"head"`` matches ``head.weight`` and
            ``head.bias``; the default for :class:`~metalearn.models.MLP` and
            :class:`~metalearn.models.Conv4`), a list of prefixes, or a predicate on names.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> anil = ml.ANIL(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01, head="head")
        >>> out = anil(ml.tasks.Sine(k_shot=10, k_query=10).sample(25))
        >>> out.loss.backward()

    Reference:
        Raghu, Raghu, Bengio, Vinyals. Rapid Learning or Feature Reuse? Towards Understanding
        the Effectiveness of MAML. ICLR 2020 (arXiv 2019). https://arxiv.org/abs/1909.09157
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 1,
        *,
        first_order: bool = False,
        update: UpdateRule | None = None,
        objective: Objective | None = None,
        vectorize: str = "auto",
        backend: str = "func",
        head: AdaptSelector = "head",
    ) -> None:
        if head is None:
            raise ValueError(
                "head must name the adapted parameters (a prefix such as 'head', a list of "
                "prefixes or a predicate); to adapt every parameter use MAML"
            )
        try:
            super().__init__(
                model,
                loss,
                inner_lr,
                inner_steps,
                first_order=first_order,
                adapt=head,
                update=update,
                objective=objective,
                vectorize=vectorize,
                backend=backend,
            )
        except ValueError as error:
            if "selects no parameter" in str(error):
                raise ValueError(str(error).replace("adapt=", "head=", 1)) from None
            raise
        if len(self.adapt_names) == sum(1 for _ in model.parameters()):
            raise ValueError(
                f"head={head!r} selects every parameter of the model, which is MAML; "
                "name only the final layer(s), e.g. head='head'"
            )

    @property
    def head_names(self) -> list[str]:
        """Names of the parameters that adapt in the inner loop."""
        return list(self.adapt_names)
