"""Implicit MAML (Rajeswaran et al. 2019): the meta-gradient of the inner solution, implicitly."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metalearn._checks import check_int
from metalearn.algorithms.base import Learner, _check_number
from metalearn.algorithms.custom_gradient import custom_meta_gradient
from metalearn.algorithms.implicit import conjugate_gradient, hvp
from metalearn.algorithms.inner import LossFn, Objective, Params, inner_loop
from metalearn.algorithms.updates import UpdateRule
from metalearn.tasks.batch import Split

__all__ = ["IMAML"]


class IMAML(Learner):
    """Implicit MAML: differentiate the solution of a proximal inner problem, not its steps.

    For each task the inner loop approximately solves
    ``theta* = argmin_theta L_support(theta) + (lam / 2) ||theta - phi||^2`` with
    ``inner_steps`` steps of the update rule (gradient descent by default) from ``phi`` on
    :meth:`inner_objective` (the proximal objective), keeping no graph. At the solution,
    ``d theta* / d phi = (I + H / lam)^{-1}`` with ``H`` the Hessian of the support loss at
    ``theta*``, so the task's meta-gradient is ``g = (I + H / lam)^{-1} grad L_query(theta*)``:
    solved with ``cg_steps`` conjugate-gradient iterations (:func:`conjugate_gradient`), each
    one Hessian-vector product (:func:`hvp`). The meta-loss is the query loss at ``theta*``,
    handed to ``loss.backward()`` with ``g`` as its gradient (:func:`custom_meta_gradient`).

    Memory does not grow with ``inner_steps`` (no graph through the inner loop: one support
    loss's double-backward at a time), so the inner loop can be long. The meta-gradient is
    exact when the inner problem is solved exactly and the linear system to ``cg_tol``; with
    few inner steps it is an approximation. Where the support loss is not convex enough
    (``I + H / lam`` not positive definite along a search direction, e.g. early in training
    on sine with a small ``lam``), the solve stops at that direction and keeps its iterate so
    far (the query gradient itself if it happens at once), as truncated Newton-CG does;
    a larger ``lam`` avoids it. The proximal term also applies when adapting for
    evaluation (:meth:`adapt`, :func:`metalearn.evaluate`), as in the paper; the fast weights
    :meth:`adapt` returns are constants (not differentiable with respect to phi).

    Every parameter adapts. Tasks run in a Python loop (the conjugate-gradient solve stops on
    data-dependent tests, which ``vmap`` cannot batch), each task's meta-gradient finished
    before the next, and :meth:`compile` is not supported.

    Args:
        model: the network whose initialisation phi is meta-learned.
        loss: ``loss(prediction, target) -> scalar``.
        inner_lr: step size of the inner gradient descent on the proximal objective; keep it
            below ``2 / (L + lam)`` for the support loss's curvature ``L``.
        inner_steps: inner steps (>= 0) during meta-training; more steps solve the inner
            problem more exactly.
        update: the inner update rule (:mod:`metalearn.updates`), default ``sgd(inner_lr)``.
        objective: ``objective(params, split) -> scalar``, the task loss (default the loss of
            the forward); the inner loop adds the proximal term to it, and its Hessian enters
            the implicit meta-gradient.
        lam: proximal strength (> 0): large keeps theta near phi (and ``I + H / lam`` well
            conditioned), small lets each task move further.
        cg_steps: conjugate-gradient iterations (>= 1) per task; the paper uses 5 or so.
        cg_tol: relative residual at which conjugate gradients stop early (>= 0).

    Raises:
        ValueError: for ``lam <= 0``, ``cg_steps < 1``, ``cg_tol < 0`` or the usual bad
            arguments.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> imaml = ml.IMAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01,
        ...                  inner_steps=10, lam=1.0, cg_steps=5)
        >>> opt = torch.optim.Adam(imaml.parameters(), lr=1e-3)
        >>> batch = ml.tasks.Sine(k_shot=10, k_query=10).sample(4)
        >>> out = imaml(batch); out.loss.backward(); opt.step(); opt.zero_grad()

    Reference:
        Rajeswaran, Finn, Kakade, Levine. Meta-Learning with Implicit Gradients. NeurIPS 2019.
        https://arxiv.org/abs/1909.04630
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 10,
        *,
        update: UpdateRule | None = None,
        objective: Objective | None = None,
        lam: float = 1.0,
        cg_steps: int = 5,
        cg_tol: float = 1e-10,
    ) -> None:
        super().__init__(
            model, loss, inner_lr, inner_steps, update=update, objective=objective, vectorize="loop"
        )
        self.lam = _check_number("lam", lam)
        if self.lam <= 0:
            raise ValueError(f"lam must be > 0 (the proximal strength), got {lam!r}")
        self.cg_steps = check_int("cg_steps", cg_steps, 1)
        self.cg_tol = _check_number("cg_tol", cg_tol)

    def inner_objective(self, params: Params, steps: int) -> Objective:
        """The proximal objective ``objective(theta, split) + (lam / 2) ||theta - phi||^2``.

        ``phi`` is ``params`` detached (the starting point of the inner loop); the distance is
        summed over its entries.
        """
        anchor = {k: v.detach() for k, v in params.items()}

        def proximal(theta: Params, split: Split) -> Tensor:
            distance = sum((theta[k] - anchor[k]).pow(2).sum() for k in anchor)
            return self.objective(theta, split) + 0.5 * self.lam * distance

        return proximal

    def inner(self, params: Params, support: Split, steps: int, first_order: bool, **kw) -> object:
        """The inner loop on :meth:`proximal_objective` from ``params``, without a graph.

        ``first_order`` is unused (no graph is ever kept); ``trajectory=True`` returns the
        ``steps + 1`` parameter dicts after ``0..steps`` steps (the evaluation contract).
        """
        anchor = {k: v.detach() for k, v in params.items()}
        # first_order=True: plain gradients on detached copies, so no graph outlives a step
        # and memory stays flat in the number of steps.
        return inner_loop(
            self.inner_objective(anchor, steps),
            anchor,
            support,
            steps=steps,
            update=self.update,
            first_order=True,
            **kw,
        )

    def implicit_gradient(self, theta: Params, support: Split, vector: Params) -> Params:
        """``(I + H / lam)^{-1} vector``, ``H`` the support loss's Hessian at ``theta``, by CG."""

        def support_loss(p: Params) -> Tensor:
            return self.objective(p, support)

        def matvec(v: Params) -> Params:
            product = hvp(support_loss, theta, v)
            return {k: v[k] + product[k] / self.lam for k in v}

        # A non-convex support loss can make I + H / lam indefinite along some direction
        # (sine MLPs early in training do): the solve then stops there, as truncated
        # Newton-CG does, instead of failing the training step.
        return conjugate_gradient(
            matvec, vector, max_iter=self.cg_steps, tol=self.cg_tol, negative_curvature="stop"
        )

    def task_loss(self, params: Params, support: Split, query: Split) -> tuple[Tensor, dict]:
        """Query loss at the proximal inner solution, with the implicit meta-gradient."""
        theta = self.inner(params, support, self.inner_steps, True)
        leaves = {k: v.detach().requires_grad_() for k, v in theta.items()}
        with torch.enable_grad():
            value, metrics = self.query_loss(leaves, query, self.inner_steps)
        if not torch.is_grad_enabled() or not any(p.requires_grad for p in params.values()):
            return value.detach(), metrics  # nothing will differentiate it: skip the solve
        query_grads = torch.autograd.grad(
            value, list(leaves.values()), allow_unused=True, materialize_grads=True
        )
        meta = self.implicit_gradient(theta, support, dict(zip(leaves, query_grads, strict=True)))
        return custom_meta_gradient(value, params, meta), metrics

    def compile(self, **options: Any) -> None:
        """Not supported: the conjugate-gradient solve stops on data-dependent tests."""
        raise ValueError(
            "IMAML does not compile: its meta-gradient is a conjugate-gradient solve with "
            "data-dependent stopping, outside torch.func.grad; use it eagerly"
        )

    def extra_repr(self) -> str:
        return (
            f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, lam={self.lam}, "
            f"cg_steps={self.cg_steps}, cg_tol={self.cg_tol}"
        )
