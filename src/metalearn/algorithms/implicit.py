"""Pieces for implicit meta-gradients: Hessian-vector products and conjugate gradients on dicts.

Implicit MAML (Rajeswaran et al. 2019) needs ``(I + H / lam)^{-1} g``, where ``H`` is the
Hessian of the support loss at the adapted parameters: never formed, only multiplied with
vectors (:func:`hvp`) inside a conjugate-gradient solve (:func:`conjugate_gradient`). Both
work on parameter dicts (name -> tensor), like the rest of metalearn, so they compose with
:meth:`metalearn.Learner.adapt` and ``torch.func.functional_call``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["conjugate_gradient", "hvp"]

Params = dict[str, Tensor]


def hvp(
    loss_fn: Callable[[Params], Tensor],
    params: Mapping[str, Tensor],
    vector: Mapping[str, Tensor],
    *,
    create_graph: bool = False,
) -> Params:
    """The Hessian-vector product ``H v`` of a scalar ``loss_fn(params)``, on dicts.

    Reverse over reverse: the gradient is taken with a graph, then the gradient of
    ``<grad, v>``. Forward over reverse (``torch.func.jvp`` of ``grad``) is cheaper in theory,
    but on torch 2.13 it fails inside ``F.mse_loss`` and other losses with "ZeroTensors are
    immutable"; this works with every differentiable loss (``F.mse_loss``,
    ``F.cross_entropy``, ...). It runs under ``torch.enable_grad()``, so also inside
    ``torch.no_grad()`` code, and leaves ``.grad`` of the tensors untouched.

    Args:
        loss_fn: ``loss_fn(params) -> scalar``, e.g. the support loss of a task as a function
            of the model's parameters (``functional_call(model, params, x)`` then the loss).
        params: the point where the Hessian is taken (name -> tensor).
        vector: the vector ``v``, one tensor per name of ``params`` of the same shape.
        create_graph: keep the result differentiable with respect to ``params`` (and
            ``vector``) when they require grad; by default the result is detached.

    Returns:
        name -> tensor, ``H v`` in the layout of ``params`` (zeros for a parameter the loss
        does not depend on to second order).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from torch.func import functional_call
        >>> net = torch.nn.Linear(3, 1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> params = dict(net.named_parameters())
        >>> loss = lambda p: F.mse_loss(functional_call(net, p, (x,)), y)
        >>> v = {k: torch.ones_like(t) for k, t in params.items()}
        >>> hv = hvp(loss, params, v)
        >>> sorted(hv), hv["weight"].shape
        (['bias', 'weight'], torch.Size([1, 3]))

    Reference:
        Pearlmutter. Fast Exact Multiplication by the Hessian. Neural Computation 1994.
    """
    if set(vector) != set(params):
        raise ValueError(
            f"vector must have the names of params: params has {sorted(params)}, vector has "
            f"{sorted(vector)}"
        )
    # Differentiate with respect to aliases: a tensor that requires grad keeps its history
    # (create_graph), one that does not becomes a leaf; the caller's tensors stay untouched.
    leaves = {
        k: v.view_as(v) if create_graph and v.requires_grad else v.detach().requires_grad_()
        for k, v in params.items()
    }
    names = list(leaves)
    with torch.enable_grad():
        value = loss_fn(leaves)
        if not isinstance(value, Tensor) or value.dim() != 0:
            raise ValueError("loss_fn must return a scalar tensor")
        grads = torch.autograd.grad(
            value, [leaves[k] for k in names], create_graph=True, allow_unused=True
        )
        dot = sum((g * vector[k]).sum() for k, g in zip(names, grads, strict=True) if g is not None)
        if not isinstance(dot, Tensor) or not dot.requires_grad:
            # The loss is at most linear in params: its Hessian is zero.
            return {k: torch.zeros_like(leaves[k]) for k in names}
        products = torch.autograd.grad(
            dot,
            [leaves[k] for k in names],
            create_graph=create_graph,
            allow_unused=True,
            materialize_grads=True,
        )
    return dict(zip(names, products, strict=True))


def conjugate_gradient(
    matvec: Callable[[Params], Params],
    b: Mapping[str, Tensor],
    max_iter: int = 10,
    tol: float = 1e-10,
    *,
    negative_curvature: str = "raise",
) -> Params:
    """Solve ``A x = b`` for a symmetric positive-definite ``A`` given only ``matvec(v) = A v``.

    Vectors are parameter dicts (name -> tensor); inner products sum over every entry. Starts
    from ``x = 0`` and stops after ``max_iter`` iterations or when the residual
    ``||b - A x||`` falls to ``tol * ||b||``. In exact arithmetic it solves an ``n``-dimensional
    system in ``n`` iterations; implicit MAML uses a handful (5 to 20) on
    ``A = I + H / lam``.

    Args:
        matvec: ``v -> A v`` on dicts with the names of ``b`` (e.g. built on :func:`hvp`).
        b: the right-hand side.
        max_iter: the most iterations (calls of ``matvec``).
        tol: relative residual at which to stop.
        negative_curvature: what to do when ``A`` is not positive definite along a search
            direction (``p . A p <= 0``): ``"raise"`` (default) a ``ValueError``, or
            ``"stop"``: return the iterate so far, or ``b`` itself when it happens at the
            first iteration (truncated Newton-CG, Nocedal & Wright, Numerical Optimization,
            Algorithm 7.1), which keeps a solve on a non-convex loss usable.

    Returns:
        name -> tensor, the approximate solution ``x``.

    Raises:
        ValueError: with ``negative_curvature="raise"``, when ``A`` is not positive definite
            along a search direction (``p . A p <= 0``): the loss is not convex there; add
            damping, e.g. ``A = I + H / lam`` with a smaller ``H / lam``.

    Example:
        >>> import torch
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> x = conjugate_gradient(lambda v: {"x": A @ v["x"]}, {"x": torch.tensor([1.0, 2.0])})
        >>> torch.allclose(A @ x["x"], torch.tensor([1.0, 2.0]))
        True

    Reference:
        Hestenes, Stiefel. Methods of Conjugate Gradients for Solving Linear Systems. 1952.
        Rajeswaran, Finn, Kakade, Levine. Meta-Learning with Implicit Gradients. NeurIPS 2019.
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if negative_curvature not in ("raise", "stop"):
        raise ValueError(
            f"negative_curvature must be 'raise' or 'stop', got {negative_curvature!r}"
        )
    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r = dict(b)
    p = dict(b)
    rs = _dot(r, r)
    stop = tol**2 * rs
    for iteration in range(max_iter):
        if rs <= stop:
            break
        ap = matvec(p)
        curvature = _dot(p, ap)
        if curvature <= 0:
            if negative_curvature == "stop":
                return dict(b) if iteration == 0 else x
            raise ValueError(
                f"conjugate_gradient: matvec is not positive definite (p . A p = "
                f"{curvature.item():.3g} at iteration {iteration}); add damping to A"
            )
        alpha = rs / curvature
        x = {k: x[k] + alpha * p[k] for k in x}
        r = {k: r[k] - alpha * ap[k] for k in r}
        rs_new = _dot(r, r)
        p = {k: r[k] + (rs_new / rs) * p[k] for k in p}
        rs = rs_new
    return x


def _dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)
