"""The ``higher`` backend of the one inner loop (Grefenstette et al. 2019).

:func:`metalearn.algorithms.inner.inner_loop` dispatches here with ``backend="higher"``. The
model runs through ``higher.monkeypatch`` (a stateless copy of the module that takes its
parameters as a list) and every step is ``higher.optim.DifferentiableSGD.step``, which
computes the support gradient with ``torch.autograd.grad(create_graph=True)``. The update
rule (:mod:`metalearn.updates`: SGD, learned rates, Adam, chains) goes in as higher's
``grad_callback`` with a step size of -1, so higher adds the rule's updates. This module
receives the per-step objective and the rule from :func:`~metalearn.algorithms.inner.inner_loop`
and imports nothing from it. The numbers are those of the torch.func backend (tested to 1e-6
relative in float64).

``higher`` is optional: ``pip install metalearn[higher]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from metalearn.algorithms._inner_leaves import inner_leaf

__all__ = ["PatchedForward", "higher_inner_loop", "require_higher"]


def require_higher() -> ModuleType:
    """Import ``higher`` or explain how to install it."""
    try:
        import higher
    except ImportError as error:
        raise ImportError(
            "backend='higher' needs the higher package: pip install metalearn[higher] "
            "(or pip install higher), or use backend='func'"
        ) from error
    return higher


class PatchedForward:
    """``forward(params, x, *args)`` that runs ``model`` through ``higher.monkeypatch``.

    The patched module is built on first use and reused; it never owns the weights (each call
    passes the full parameter list, in ``model.named_parameters()`` order), and it forgets them
    after the call so no graph outlives a meta-step. Buffers are re-synced from ``model`` on
    every call, so ``.to(device)`` and ``load_state_dict`` on the learner are seen.
    """

    def __init__(self, model: nn.Module) -> None:
        require_higher()
        self.model = model
        self._patched: nn.Module | None = None

    def _patched_module(self) -> nn.Module:
        if self._patched is None:
            higher = require_higher()
            # track_higher_grads=False: the patched module keeps only the latest parameter list
            # instead of appending every call's to a history (which would leak graphs).
            self._patched = higher.monkeypatch(
                self.model, copy_initial_weights=True, track_higher_grads=False
            )
        elif any(True for _ in self.model.buffers()):
            require_higher().patch.buffer_sync(self.model, self._patched)
        return self._patched

    def __call__(self, params: Mapping[str, Tensor], x: Tensor, *args: Tensor) -> Tensor:
        patched = self._patched_module()
        try:
            ordered = [params[name] for name, _ in self.model.named_parameters()]
        except KeyError as error:
            raise KeyError(f"parameter {error} missing from the params passed to forward") from None
        try:
            return patched(x, *args, params=ordered)
        finally:
            # Drop the reference to this call's tensors (higher keeps the latest list in slot 0).
            patched._fast_params = [None]

    def __getstate__(self) -> dict[str, Any]:
        # The patched module is a dynamically created class: rebuild it after copy/pickle.
        return {"model": self.model, "_patched": None}


def _detach_all(result: Any) -> Any:
    if isinstance(result, list):
        return [_detach_all(r) for r in result]
    return {k: v.detach() for k, v in result.items()}


def higher_inner_loop(
    support_objective: Callable[[dict[str, Tensor], int], Tensor],
    params: dict[str, Tensor],
    names: Sequence[str],
    *,
    steps: int,
    update: Any,
    first_order: bool,
    trajectory: bool,
) -> dict[str, Tensor] | list[dict[str, Tensor]]:
    """The stepping of :func:`~metalearn.algorithms.inner.inner_loop` on ``higher``.

    ``support_objective(fast, step)`` is the checked scalar objective of step ``step`` at the
    adapted entries ``fast`` (the fixed ones already bound); ``update`` the update rule. Each
    step is ``DifferentiableSGD.step`` with ``lr = -1`` and the rule's updates as the
    gradients (higher's ``grad_callback``), so higher applies ``theta + updates``.
    """
    higher = require_higher()
    names = list(names)
    fixed = {k: v for k, v in params.items() if k not in set(names)}
    grad_enabled = torch.is_grad_enabled()
    with torch.enable_grad():
        # autograd.grad needs tensors that require grad (evaluation passes detached ones).
        # Aliases, as torch.func's support_gradients takes: an entry computed from another
        # (Proto-MAML's head from the body's prototypes) then starts the loop as a variable of
        # its own, and the inner gradient of the other does not run through it.
        fast = [
            params[k].view_as(params[k]) if params[k].requires_grad else inner_leaf(params[k])
            for k in names
        ]
        # The group holds placeholders: higher only uses them to know the layout.
        placeholders = [torch.zeros((), requires_grad=True) for _ in names]
        template = torch.optim.SGD([{"params": placeholders}], lr=0.0)
        optimizer = higher.optim.DifferentiableSGD(template, placeholders, track_higher_grads=True)

        def named(tensors: Sequence[Tensor]) -> dict[str, Tensor]:
            return dict(zip(names, tensors, strict=True))

        state = update.init(named(fast))
        history = [dict(params)] if trajectory else []

        def to_updates(grads: Sequence[Tensor | None], step: int, current: list[Tensor]):
            # higher's grad_callback: what it receives back is added to the parameters.
            nonlocal state
            out = named(
                [
                    torch.zeros_like(p) if g is None else g
                    for p, g in zip(current, grads, strict=True)
                ]
            )
            if first_order:
                out = {k: g.detach() for k, g in out.items()}
            out, state = update(out, state, step, named(current))
            return [out[k] for k in names]

        for step in range(steps):
            value = support_objective(named(fast), step)
            fast = optimizer.step(
                value,
                params=fast,
                override={"lr": [-1.0]},
                grad_callback=functools.partial(to_updates, step=step, current=fast),
            )
            if trajectory:
                history.append({**fixed, **named(fast)})
    result = history if trajectory else {**fixed, **named(fast)}
    return result if grad_enabled else _detach_all(result)
