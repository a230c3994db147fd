"""The one differentiable inner loop, and the map of a per-task function over a task batch.

Every learner adapts through :func:`inner_loop`: an *objective* ``objective(params, split)``
(by default the loss of the model's forward), a parameter dict, which of those parameters
adapt, an *update rule* (:mod:`metalearn.updates`: ``sgd(lr)``, learned per-parameter or
per-step rates, Adam, ``chain(...)``) and the order of differentiation. Gradients come from
``torch.func.grad``, so the same code runs per task in a Python loop or vectorised over the
tasks of a meta-batch with ``torch.func.vmap`` (:func:`map_tasks`), and the adapted parameters
stay differentiable with respect to the initial ones (second order) unless
``first_order=True``. The same loop also runs on the ``higher`` library (``backend="higher"``,
:mod:`metalearn.algorithms._higher`, which receives the per-step objective and the rule).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metalearn._functorch import under_functorch_transform
from metalearn.algorithms._inner_leaves import inner_leaf
from metalearn.algorithms.updates import UpdateRule, check_rule
from metalearn.tasks.batch import Split, TaskBatch

__all__ = [
    "BACKENDS",
    "Forward",
    "LossFn",
    "Objective",
    "Params",
    "checked_loss",
    "functional_forward",
    "inner_loop",
    "map_tasks",
    "resolve_vectorize",
    "select_parameters",
    "support_gradients",
]

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
Forward = Callable[[Mapping[str, Tensor], Tensor], Tensor]
# objective(params, split) -> scalar tensor: what the inner loop descends (and, by default, the
# query loss of the meta-objective).
Objective = Callable[[Mapping[str, Tensor], Split], Tensor]
# The backends of the one inner loop: torch.func (vmap-able) or the `higher` library.
BACKENDS = ("func", "higher")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def functional_forward(model: nn.Module, backend: str = "func") -> Forward:
    """The model as a function ``forward(params, x)``.

    With ``backend="func"`` it is ``functional_call(model, params, (x,))``, or the model's
    own ``forward_with(params, x)`` when it has one (:class:`~metalearn.models.MLP` does); with
    ``backend="higher"`` the same model runs through ``higher.monkeypatch`` (see
    :mod:`metalearn.algorithms._higher`). Both take and give the same tensors.
    """
    if _check_backend(backend) == "higher":
        from metalearn.algorithms._higher import PatchedForward

        return PatchedForward(model)

    if _has_pure_forward(model):
        return model.forward_with

    def forward(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, params, (x,))

    return forward


def _has_pure_forward(model: nn.Module) -> bool:
    # A model may offer forward_with(params, x), a pure function equal to
    # functional_call(model, params, (x,)) but cheaper under torch.func transforms. Trust it
    # only when the class that defines it also defines the forward in use (a subclass that
    # overrides forward alone must not be served the parent's function) and no hooks would be
    # skipped.
    def owner(name: str) -> type | None:
        return next((c for c in type(model).__mro__ if name in c.__dict__), None)

    return (
        owner("forward_with") is not None
        and owner("forward_with") is owner("forward")
        and not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    )


def checked_loss(loss: LossFn, prediction: Tensor, target: Tensor) -> Tensor:
    """``loss(prediction, target)``, insisting that the loss is a scalar tensor."""
    value = loss(prediction, target)
    if not isinstance(value, Tensor):
        raise TypeError(f"loss must return a scalar tensor, got {type(value).__name__}")
    if value.dim() != 0:
        raise ValueError(
            f"loss must return a scalar, got shape {tuple(value.shape)}; "
            "use a reducing loss such as F.mse_loss (reduction='mean')"
        )
    return value


def support_gradients(
    support_loss: Callable[..., Tensor], fast: Params, first_order: bool, *args: object
) -> Params:
    """Gradients of ``support_loss(fast, *args)`` with respect to ``fast`` (name -> tensor).

    Second order (``first_order=False`` and gradients enabled), the gradients are
    differentiable functions of ``fast`` and of everything the loss closes over; first order
    they are constants. Outside a ``torch.func`` transform this is ``torch.autograd.grad``:
    with ``create_graph`` only when the second-order graph is wanted, on detached copies when
    it is not (so no graph of the inner gradient is built or kept), under ``enable_grad`` so
    that it also works in evaluation under ``torch.no_grad()``. Inside ``vmap`` it is
    ``torch.func.grad``, which ignores the outer no-grad mode itself. Both give the same
    numbers (tested); the autograd path avoids functorch's wrapper tensors, which cost about
    a third of a looped conv MAML step.
    """
    if under_functorch_transform():
        if first_order:
            # grad() ignores the outer no_grad, so this yields the gradient as a constant.
            with torch.no_grad():
                return grad(support_loss)(fast, *args)
        return grad(support_loss)(fast, *args)
    create_graph = not first_order and torch.is_grad_enabled()
    # Differentiate with respect to aliases, never the tensors themselves: the inner gradient
    # then stops at the alias, so hooks a user put on a parameter see only the meta-gradient,
    # as under torch.func.grad (and vmap).
    leaves = {
        k: v.view_as(v) if create_graph and v.requires_grad else inner_leaf(v)
        for k, v in fast.items()
    }
    with torch.enable_grad():
        value = support_loss(leaves, *args)
        grads = torch.autograd.grad(
            value,
            list(leaves.values()),
            create_graph=create_graph,
            allow_unused=True,
            materialize_grads=True,  # zeros for unused parameters, as torch.func.grad gives
        )
    return dict(zip(leaves, grads, strict=True))


def _objective_at(objective: Objective | Sequence[Objective], step: int) -> Objective:
    if isinstance(objective, Sequence):
        if step >= len(objective):
            raise ValueError(
                f"per-step objectives cover {len(objective)} steps, but step {step + 1} was "
                "asked for"
            )
        return objective[step]
    return objective


def _checked_objective(objective: Objective, params: Params, split: Split) -> Tensor:
    value = objective(params, split)
    if not isinstance(value, Tensor) or value.dim() != 0:
        got = f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"the inner objective must return a scalar tensor, got {got}; reduce it "
            "(e.g. .mean()) or use a reducing loss such as F.mse_loss"
        )
    return value


def inner_loop(
    objective: Objective | Sequence[Objective],
    params: Mapping[str, Tensor],
    support: Split,
    *,
    steps: int,
    update: UpdateRule,
    adapt: Sequence[str] | None = None,
    first_order: bool = False,
    trajectory: bool = False,
    backend: str = "func",
) -> Params | list[Params]:
    """Adapt ``params`` to one task with ``steps`` steps on its support set.

    Each step takes the gradient ``g`` of ``objective(theta, support)`` with respect to the
    parameters named in ``adapt``, turns it into updates with the update rule
    (``updates, state = update(g, state, step, theta)``; the state starts as
    ``update.init(theta)``) and applies ``theta <- theta + updates``: with
    ``update=metalearn.updates.sgd(lr)`` that is ``theta - lr * g``. The other parameters are
    held fixed (but stay differentiable for the outer loop, as ANIL's body does). With
    ``first_order=False`` the result is differentiable to second order with respect to
    ``params`` and anything the objective and the rule read (learned rates); with
    ``first_order=True`` the support gradients are constants (FOMAML), and no graph is built for
    them.

    Args:
        objective: ``objective(params, split) -> scalar tensor``, e.g.
            ``lambda p, s: F.mse_loss(forward(p, s.x), s.y)``; or a sequence with one per step
            (MAML++'s per-step BatchNorm), where step ``s`` uses ``objective[s]``.
        params: initial parameters (name -> tensor); per-task state (a context vector) is
            simply another entry that adapts.
        support: the task's support split, without a task dimension.
        steps: number of steps (0 returns ``params`` unchanged).
        update: the update rule (:mod:`metalearn.updates`), e.g. ``sgd(0.01)``.
        adapt: names of the entries that adapt; ``None`` adapts all.
        first_order: drop second-order terms.
        trajectory: return the parameters after every step (``steps + 1`` dicts) instead of the
            last ones only.
        backend: ``"func"`` (torch.func; works inside ``vmap``) or ``"higher"`` (the ``higher``
            library's differentiable optimizer steps; a Python loop only). Same numbers.

    Returns:
        The adapted parameter dict (every name of ``params``), or the list of them.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from metalearn import updates
        >>> from metalearn.models import MLP
        >>> from metalearn.tasks import Split
        >>> net = MLP([1, 8, 1]); params = dict(net.named_parameters())
        >>> forward = functional_forward(net)
        >>> def objective(p, split):
        ...     return F.mse_loss(forward(p, split.x), split.y)
        >>> support = Split(torch.randn(10, 1), torch.randn(10, 1))
        >>> fast = inner_loop(objective, params, support, steps=1, update=updates.sgd(0.01))
        >>> sorted(fast) == sorted(params)
        True
    """
    _check_backend(backend)
    check_rule(update)
    names = list(params) if adapt is None else list(adapt)
    chosen = set(names)
    fixed = {k: v for k, v in params.items() if k not in chosen}
    # First order: the support objective needs no graph to the fixed parameters either.
    support_fixed = {k: v.detach() for k, v in fixed.items()} if first_order else fixed

    def support_objective(fast_params: Params, step: int) -> Tensor:
        return _checked_objective(
            _objective_at(objective, step), {**support_fixed, **fast_params}, support
        )

    if backend == "higher":
        from metalearn.algorithms._higher import higher_inner_loop

        return higher_inner_loop(
            support_objective,
            dict(params),
            names,
            steps=steps,
            update=update,
            first_order=first_order,
            trajectory=trajectory,
        )
    fast = {k: params[k] for k in names}
    history = [dict(params)] if trajectory else []
    state = update.init(fast)
    for step in range(steps):
        grads = support_gradients(support_objective, fast, first_order, step)
        updates, state = update(grads, state, step, fast)
        fast = {k: v + updates[k] for k, v in fast.items()}
        if trajectory:
            history.append({**fixed, **fast})
    return history if trajectory else {**fixed, **fast}


def map_tasks(fn: Callable, batch: TaskBatch, vectorize: bool) -> object:
    """Apply ``fn(support, query)`` to every task of ``batch`` and stack the results.

    ``fn`` returns a tensor or a (nested) tuple/dict of tensors for one task. With
    ``vectorize=True`` it runs once under ``torch.func.vmap`` over the task dimension; otherwise
    in a Python loop. Both give the same values (tested).
    """
    if vectorize:

        def one(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor):
            return fn(Split(sx, sy), Split(qx, qy))

        return vmap(one, randomness="different")(*batch.support, *batch.query)
    results = [fn(task.support, task.query) for task in batch]
    return torch.utils._pytree.tree_map(lambda *xs: torch.stack(xs), *results)


def _has(model: nn.Module, kind: type | tuple[type, ...]) -> bool:
    return any(isinstance(m, kind) for m in model.modules())


def resolve_vectorize(vectorize: str, model: nn.Module, device: torch.device) -> bool:
    """Decide loop (False) or vmap (True) for ``vectorize`` in ``{"auto", "vmap", "loop"}``.

    ``"auto"`` vectorises on CUDA, and on CPU only for models without convolutions: on 2 CPU
    cores, vmap over Conv-4 tasks measured 2.5x slower with 7x the memory of a loop, while for
    the sine MLP it is several times faster (benchmarks/RESULTS.md). A model with
    ``torch.nn.BatchNorm`` layers loops, since vmap through ``F.batch_norm`` gives wrong
    second-order meta-gradients; on CUDA ``"auto"`` warns (once per process) that
    :func:`metalearn.models.convert_batchnorm` would let it vectorise (a Conv-4 meta-step
    measured 2.2x faster vectorised than looped on an H200).
    """
    if vectorize not in ("auto", "vmap", "loop"):
        raise ValueError(f"vectorize must be 'auto', 'vmap' or 'loop', got {vectorize!r}")
    if vectorize == "loop":
        return False
    use = vectorize == "vmap" or device.type == "cuda" or not _has(model, nn.modules.conv._ConvNd)
    if use and _has(model, nn.modules.batchnorm._BatchNorm):
        if vectorize == "vmap":
            raise ValueError(
                "vectorize='vmap' with torch.nn.BatchNorm layers gives wrong second-order "
                "meta-gradients (F.batch_norm under vmap); convert them with "
                "metalearn.models.convert_batchnorm(model) or use vectorize='loop'"
            )
        if device.type == "cuda":
            warnings.warn(
                "the model's torch.nn.BatchNorm layers make the inner loop run task by task on "
                "CUDA (vmap through F.batch_norm gives wrong second-order meta-gradients); "
                "metalearn.models.convert_batchnorm(model) swaps them for metalearn's "
                "BatchNorm (batch statistics, as MAML normalises; no running statistics), "
                "which vectorises over the tasks (a Conv-4 meta-step: 2.2x faster on an H200). "
                "vectorize='loop' keeps them and silences this",
                UserWarning,
                stacklevel=3,
            )
        return False
    return use


def select_parameters(
    model: nn.Module, adapt: str | Sequence[str] | Callable[[str], bool] | None
) -> list[str]:
    """Names of the parameters of ``model`` chosen by ``adapt``.

    Args:
        adapt: ``None`` (all), a name prefix such as ``"head"`` (matches ``head.weight``,
            ``head.bias``), a sequence of names/prefixes, or a predicate on the name. An empty
            sequence adapts no parameter (only per-task state adapts, as in CAVIA).

    Raises:
        ValueError: when the selector matches no parameter; the message lists the names.
    """
    names = [n for n, p in model.named_parameters()]
    if adapt is None:
        chosen = names
    elif callable(adapt):
        chosen = [n for n in names if adapt(n)]
    else:
        prefixes = [adapt] if isinstance(adapt, str) else list(adapt)
        if not prefixes:
            return []  # explicitly nothing: only per-task state adapts (CAVIA)
        if not all(isinstance(p, str) for p in prefixes):
            raise TypeError(
                f"adapt must be a prefix, a list of prefixes or a predicate, got {adapt!r}"
            )
        chosen = [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
    if not chosen:
        raise ValueError(f"adapt={adapt!r} selects no parameter; the model has {names}")
    return chosen
