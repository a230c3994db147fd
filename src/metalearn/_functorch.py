"""Whether code runs inside a ``torch.func`` transform; fast paths depend on it."""

from __future__ import annotations

import torch

__all__ = ["under_functorch_transform"]


def under_functorch_transform() -> bool:
    """Whether the caller runs inside a ``torch.func`` transform (``vmap``, ``grad``, ...).

    Outside one, plain autograd and fused kernels (``torch.autograd.grad``, ``F.batch_norm``)
    are exact and faster; inside ``vmap`` some of them are not exact, so callers fall back to
    the ``torch.func`` path.
    """
    # Under torch.compile the query cannot be traced; the torch.func path is always correct,
    # and the compiled meta-gradient (Learner.compile) runs inside torch.func.grad anyway.
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    if is_compiling is not None and is_compiling():
        return True
    # torch has no public query for this; the private one is guarded so that a torch without
    # it takes the always-correct torch.func path.
    level = getattr(torch._C._functorch, "maybe_current_level", None)
    return level is None or level() is not None
