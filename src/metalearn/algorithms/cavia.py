"""CAVIA: fast context adaptation via meta-learning (Zintgraf et al. 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metalearn._checks import check_int
from metalearn.algorithms.base import Learner
from metalearn.algorithms.inner import LossFn, Objective, Params
from metalearn.algorithms.updates import UpdateRule
from metalearn.tasks.batch import Split

__all__ = ["CAVIA"]

#: The name of the context vector in the parameter dicts of the inner loop and of adapt().
CONTEXT = "context"


class CAVIA(Learner):
    """Adapt only a small context vector per task; meta-learn the whole network.

    For each task the context ``c`` starts at zero (:meth:`task_state`: fresh for every task,
    not a parameter of the learner, not in the optimizer or ``state_dict()``) and takes
    ``inner_steps`` steps of the update rule on the support loss, while the network's
    parameters stay at phi (``adapt=()``). The meta-loss is the query loss with the adapted
    context, and its gradient reaches phi through the network and through the context's
    adaptation (second order unless ``first_order=True``).

    How the context enters the model:

    - a model that takes it itself (a ``takes_context = True`` attribute, e.g.
      :class:`~metalearn.models.FiLMConv4`, whose FiLM layer turns it into per-channel scales
      and shifts of a conv block) is called ``model(x, context)``;
    - any other model gets it concatenated to every input vector: ``model(cat([x, c], -1))``,
      so inputs are ``[examples, features]`` and the model's first layer takes
      ``features + context_size`` (``MLP([1 + 5, 40, 40, 1])`` for sine with 5 context
      parameters), as in the paper's regression experiments.

    :meth:`adapt` returns the model's parameters plus ``"context"``; :meth:`predict` with a
    dict that lacks it uses the zero context (the meta-learned starting point).

    Args:
        model: the network whose parameters are meta-learned (see above for its input).
        loss: ``loss(prediction, target) -> scalar``.
        inner_lr: inner step size of the context (the paper uses 1.0).
        inner_steps: inner steps during meta-training.
        first_order: drop second-order terms of the meta-gradient.
        update: the inner update rule (:mod:`metalearn.updates`); default ``sgd(inner_lr)``.
        objective: ``objective(params, split) -> scalar``; default the loss of the forward.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"`` over the tasks of a batch.
        backend: ``"func"`` (default) or ``"higher"``; same meta-gradients.
        context_size: number of context parameters (>= 1).

    Raises:
        ValueError: for ``context_size < 1``, a context model whose ``context_size``
            differs, a model with a parameter named ``"context"``, or an input whose size does
            not fit the model's first layer (the message says what the model must take).

    Settings of the paper (sine, section 5.1 and the authors' code): two hidden layers of 40,
    5 context parameters at the input, ``inner_lr=1.0``, 1 inner step, 25 tasks per batch,
    Adam 1e-3; Mini-ImageNet: 100 context parameters through FiLM after the third conv block,
    ``inner_lr=1.0``, 2 inner steps, 16 tasks.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> net = ml.models.MLP([1 + 5, 40, 40, 1])
        >>> cavia = ml.CAVIA(net, F.mse_loss, inner_lr=1.0, context_size=5)
        >>> batch = ml.tasks.Sine(k_shot=10, k_query=10).sample(25)
        >>> cavia(batch).loss.backward()
        >>> cavia.adapt(batch.task(0).support)["context"].shape
        torch.Size([5])

    Reference:
        Zintgraf, Shiarlis, Kurin, Hofmann, Whiteson. Fast Context Adaptation via
        Meta-Learning. ICML 2019. https://arxiv.org/abs/1810.03642
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
        context_size: int,
    ) -> None:
        super().__init__(
            model, loss, inner_lr, inner_steps, first_order=first_order, adapt=(),
            update=update, objective=objective, vectorize=vectorize, backend=backend,
        )  # fmt: skip
        self.context_size = check_int("context_size", context_size, 1)
        if CONTEXT in self.params():
            raise ValueError(f"the model has a parameter named {CONTEXT!r}; rename it")
        self.takes_context = bool(getattr(model, "takes_context", False))
        if self.takes_context and getattr(model, "context_size", context_size) != context_size:
            raise ValueError(
                f"context_size={context_size} but the model takes a context of "
                f"{model.context_size}; pass context_size={model.context_size}"
            )
        if self.takes_context and backend == "higher":
            from metalearn.algorithms._higher import PatchedForward

            self._context_forward = PatchedForward(self.model)

    def task_state(self, support: Split) -> Params:
        """A zero context vector ``{"context": zeros(context_size)}``, fresh for every task."""
        return {CONTEXT: support.x.new_zeros(self.context_size)}

    def model_forward(self, params: Params, x: Tensor) -> Tensor:
        """The network under ``params`` (without ``"context"``), given the context of
        ``params["context"]`` (zeros when absent) as the class docstring describes."""
        weights = {k: v for k, v in params.items() if k != CONTEXT}
        context = params.get(CONTEXT)
        if context is None:
            context = x.new_zeros(self.context_size)
        if self.takes_context:
            if self.backend == "higher":
                return self._context_forward(weights, x, context)
            return functional_call(self.model, weights, (x, context))
        inputs = x
        try:
            return self._forward(weights, _concat(inputs, context))
        except RuntimeError as error:
            if "shape" not in str(error):
                raise
            raise ValueError(
                f"CAVIA concatenates the {self.context_size} context parameters to each input "
                f"of {inputs.shape[-1]} features, so the model must take "
                f"{inputs.shape[-1] + self.context_size} (e.g. MLP([{inputs.shape[-1]} + "
                f"{self.context_size}, ...])), or take the context itself "
                f"(takes_context = True); the model raised: {error}"
            ) from None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, context_size={self.context_size}"


def _concat(x: Tensor, context: Tensor) -> Tensor:
    return torch.cat([x, context.expand(*x.shape[:-1], context.shape[-1])], dim=-1)
