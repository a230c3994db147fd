"""A learner's own meta-gradient, handed to ``loss.backward()`` through one autograd node.

Some learners know their meta-gradient without a graph to differentiate: implicit MAML solves
a linear system for it, an analytic model writes it down. :func:`custom_meta_gradient` turns
``(loss value, parameters, gradients)`` into a scalar whose backward delivers exactly those
gradients to those parameters, so such a learner still fits the one training loop:
``out.loss.backward()``, ``torch.autograd.grad(out.loss, params)``, gradient clipping, hooks
and the base learner's per-task meta-gradients (which differentiate each task's loss in the
forward) all work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from metalearn._functorch import under_functorch_transform

__all__ = ["custom_meta_gradient"]

_TWICE = (
    "a loss from custom_meta_gradient carries its gradient as a constant, so it cannot be "
    "differentiated twice (create_graph=True): the second-order terms would be silently zero"
)


class _GivenGradient(torch.autograd.Function):
    """``apply(value, count, *grads, *inputs)``: a copy of ``value`` whose backward hands
    ``grad_output * grads[i]`` to ``inputs[i]`` (``count`` = number of inputs)."""

    # The backward is plain tensor arithmetic, so vmap can batch it for us.
    generate_vmap_rule = True

    @staticmethod
    def forward(value: Tensor, count: int, *tensors: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, count, *tensors = inputs
        # Saved (not attributes) so a backward without retain_graph frees them, as elsewhere.
        ctx.save_for_backward(*tensors[:count])
        ctx.count = count

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        # Inside a torch.func transform grad mode is on for every backward, not only for a
        # create_graph one; there the constants are what torch.func.grad asks for.
        if torch.is_grad_enabled() and not under_functorch_transform():
            raise RuntimeError(_TWICE)
        grads = ctx.saved_tensors
        return (None, None, *(None for _ in grads), *(grad_output * g for g in grads))


def custom_meta_gradient(
    loss_value: Tensor,
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor | None],
) -> Tensor:
    """A scalar equal to ``loss_value`` whose gradient with respect to ``params`` is ``grads``.

    Return it as a task's meta-loss (from :meth:`~metalearn.Learner.task_loss`) when the
    learner computes its meta-gradient itself. The backward of the result hands
    ``grad_output * grads[name]`` to ``params[name]`` and nothing else: ``loss_value`` is
    detached, so any graph it carries is ignored. Averaging such losses over tasks averages
    their gradients, so the base learner's meta-batch mean, its per-task meta-gradients
    (looped, one task's memory at a time) and ``per_task_gradients = False`` all give the
    mean of the tasks' ``grads``. ``.grad``, parameter hooks, ``torch.autograd.grad``,
    gradient clipping and DDP see it as any other gradient. The gradient is a constant: a
    backward with ``create_graph=True`` raises rather than silently dropping second-order
    terms. Works inside ``torch.func.grad`` and ``vmap`` too.

    Args:
        loss_value: the scalar to report (e.g. the query loss at the adapted weights).
        params: the tensors that receive the gradient (name -> tensor), normally the
            ``params`` a learner's ``task_loss`` received (one that does not require grad
            receives nothing).
        grads: name -> gradient of the same shape as ``params[name]``; a missing name or
            ``None`` gives that parameter no gradient (``.grad`` stays ``None``). Detached.

    Returns:
        A scalar tensor with the value of ``loss_value``.

    Raises:
        ValueError: for a non-scalar ``loss_value``, a name of ``grads`` that is not in
            ``params``, or a gradient whose shape differs from its parameter's.

    Example:
        >>> import torch
        >>> w = torch.ones(3, requires_grad=True)
        >>> given = torch.tensor([1.0, 2.0, 3.0])
        >>> loss = custom_meta_gradient(torch.tensor(0.5), {"w": w}, {"w": given})
        >>> loss.backward(); w.grad
        tensor([1., 2., 3.])
    """
    if not isinstance(loss_value, Tensor) or loss_value.dim() != 0:
        raise ValueError(f"loss_value must be a scalar tensor, got {_describe(loss_value)}")
    unknown = sorted(set(grads) - set(params))
    if unknown:
        raise ValueError(f"grads names {unknown} that are not in params ({sorted(params)})")
    inputs, given = [], []
    for name, g in grads.items():
        p = params[name]
        if g is None:
            continue
        if g.shape != p.shape:
            raise ValueError(
                f"grads[{name!r}] has shape {tuple(g.shape)}, but the parameter has "
                f"{tuple(p.shape)}"
            )
        inputs.append(p)
        given.append(g.detach())
    value = loss_value.detach()
    if not inputs:
        return value
    return _GivenGradient.apply(value, len(inputs), *given, *inputs)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
