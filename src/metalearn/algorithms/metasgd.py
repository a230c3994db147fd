"""Meta-SGD: learned per-parameter inner learning rates (Li et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

from metalearn.algorithms.base import AdaptSelector, Learner
from metalearn.algorithms.inner import LossFn, Params

__all__ = ["MetaSGD", "parameter_key"]


def parameter_key(name: str) -> str:
    """A ``ParameterDict`` key for a parameter name (``'.'`` is not allowed in keys)."""
    return name.replace(".", "__")


def check_keys(names: list[str], what: str) -> None:
    keys = [parameter_key(n) for n in names]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"{what}: parameter names {names} collide once '.' is replaced by '__'; "
            "rename the modules so that no name contains '__'"
        )


class MetaSGD(Learner):
    """MAML with an inner learning rate per parameter entry, meta-learned together with phi.

    The inner step is ``theta <- theta - alpha * grad`` where ``alpha`` has the shape of each
    adapted parameter (elementwise product), starts at ``inner_lr`` and receives a
    meta-gradient like phi. The rates live in ``self.inner_lrs`` (an ``nn.ParameterDict``
    keyed by the parameter name with ``'.'`` replaced by ``'__'``), so ``parameters()``,
    ``state_dict()`` and ``.to()`` include them; :meth:`step_sizes` returns them by the
    original names.

    Args:
        model: the network whose initialisation is meta-learned.
        loss: ``loss(prediction, target) -> scalar``.
        inner_lr: initial value of every learned rate.
        inner_steps: inner steps during meta-training (the paper uses one).
        first_order: drop second-order terms (the rates still learn: the step is linear in them).
        adapt: which parameters adapt (default all); only those get rates.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"``.
        backend: ``"func"`` (default) or ``"higher"``.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> metasgd = ml.MetaSGD(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        >>> opt = torch.optim.Adam(metasgd.parameters(), lr=1e-3)  # phi and the rates
        >>> out = metasgd(ml.tasks.Sine(k_shot=10, k_query=10).sample(25))
        >>> metasgd.step_sizes()["head.weight"].shape
        torch.Size([1, 40])

    Reference:
        Li, Zhou, Chen, Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning.
        arXiv 2017. https://arxiv.org/abs/1707.09835
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 1,
        first_order: bool = False,
        adapt: AdaptSelector = None,
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
            vectorize=vectorize,
            backend=backend,
        )
        check_keys(self.adapt_names, "MetaSGD")
        named = dict(model.named_parameters())
        self.inner_lrs = nn.ParameterDict(
            {
                parameter_key(n): nn.Parameter(torch.full_like(named[n].detach(), self.inner_lr))
                for n in self.adapt_names
            }
        )

    def step_sizes(self) -> Params:
        """The learned rates: parameter name -> tensor of the parameter's shape."""
        return {n: self.inner_lrs[parameter_key(n)] for n in self.adapt_names}
