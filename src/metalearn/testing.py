"""Checks for your own learner: the ones every built-in learner passes in metalearn's tests.

Each check takes a **learner factory**, ``make_learner(**options) -> Learner``: a function
that builds a fresh learner, passing ``options`` (``vectorize=``, ``backend=``) to its
constructor. The checks copy parameters between the learners they build, so the factory need
not seed anything. Each raises ``AssertionError`` with a message that names the parameter and
the numbers when the learner fails; nothing is returned when it passes. They run in float64
(the learner is converted with ``.double()``, the batch with ``.to(torch.float64)``; integer
labels stay integers) except :func:`check_deterministic`, which runs in the dtype given.

Example:
    >>> import torch.nn.functional as F, metalearn as ml
    >>> from metalearn import testing
    >>> def make(**options):
    ...     return ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.1, 2, **options)
    >>> batch = ml.tasks.Sine(5, 5).sample(2)
    >>> testing.check_meta_gradient(make, batch)
    >>> testing.check_loop_matches_vmap(make, batch)
    >>> testing.check_backends_agree(make, batch)      # needs `pip install metalearn[higher]`
    >>> testing.check_state_dict_round_trip(make, batch)
    >>> testing.check_deterministic(make, batch)

In pytest, call them from a parametrised test of your own, like
``tests/algorithms/test_learners.py`` does for every built-in learner.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from metalearn.algorithms.base import Learner
from metalearn.tasks.batch import TaskBatch

__all__ = [
    "check_backends_agree",
    "check_deterministic",
    "check_loop_matches_vmap",
    "check_meta_gradient",
    "check_state_dict_round_trip",
    "meta_gradient",
]

LearnerFactory = Callable[..., Learner]


def meta_gradient(learner: Learner, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
    """The meta-loss of ``batch`` and its gradient for every named parameter of ``learner``.

    Args:
        learner: any learner; its ``.grad`` fields are overwritten.
        batch: a task batch.

    Returns:
        ``(loss, gradients)``: the detached scalar meta-loss, and name -> gradient (zeros for a
        parameter the meta-loss does not reach).

    Example:
        >>> loss, grads = meta_gradient(maml, batch)  # doctest: +SKIP
        >>> grads["net.0.weight"].shape  # doctest: +SKIP
    """
    learner.zero_grad(set_to_none=True)
    out = learner(batch)
    out.loss.backward()
    grads = {
        name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        for name, p in learner.named_parameters()
    }
    return out.loss.detach(), grads


def check_meta_gradient(
    make_learner: LearnerFactory,
    batch: TaskBatch,
    *,
    directions: int | str = 2,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    seed: int = 0,
    **options: object,
) -> None:
    """Check the meta-gradient against central finite differences of the meta-loss, in float64.

    The analytic directional derivative ``<grad, d>`` must match
    ``(L(phi + eps d) - L(phi - eps d)) / (2 eps)`` to ``atol + rtol * |numeric|`` (the
    defaults suit float64 and ``eps=1e-6``: the difference quotient is accurate to about
    ``1e-9`` relative). Random directions ``d`` span all parameters at once (cheap: two
    meta-losses each); when one fails, each parameter is checked alone so that the message
    names the one that is wrong. Only learners whose meta-gradient is the exact gradient of
    their meta-loss pass: first-order approximations (FOMAML, Reptile) do not, by design.

    Args:
        make_learner: ``make_learner(**options) -> Learner``; built once with
            ``vectorize="loop"`` unless ``options`` says otherwise.
        batch: the task batch whose meta-loss is differentiated (a few small tasks).
        directions: the number of random directions, or ``"all"`` for every coordinate of
            every parameter (one finite difference each: only for tiny models).
        eps: the finite-difference step.
        rtol: relative tolerance of each directional derivative.
        atol: absolute tolerance of each directional derivative.
        seed: seeds the random directions.
        **options: passed to ``make_learner``.

    Raises:
        AssertionError: naming the parameter (and coordinate) and both numbers.

    Example:
        >>> check_meta_gradient(make, batch)  # doctest: +SKIP
    """
    options.setdefault("vectorize", "loop")
    with _float64():
        learner = make_learner(**options).double()
        batch = batch.to(torch.float64)
        _, gradient = meta_gradient(learner, batch)
        params = dict(learner.named_parameters())
        probes = _probes(params, directions, seed)
        for label, direction in probes:
            analytic, numeric = _directional(learner, batch, params, gradient, direction, eps)
            if abs(analytic - numeric) <= atol + rtol * abs(numeric):
                continue
            if len(direction) > 1:  # name the culprit: each parameter alone along d
                for name in direction:
                    one = {name: direction[name]}
                    a, n = _directional(learner, batch, params, gradient, one, eps)
                    if abs(a - n) > atol + rtol * abs(n):
                        _fail_gradient(f"parameter {name!r}", a, n, rtol, atol)
            _fail_gradient(label, analytic, numeric, rtol, atol)


def _probes(
    params: dict[str, Tensor], directions: int | str, seed: int
) -> Iterator[tuple[str, dict[str, Tensor]]]:
    if directions == "all":
        for name, p in params.items():
            for i in range(p.numel()):
                unit = torch.zeros_like(p).view(-1)
                unit[i] = 1.0
                yield f"parameter {name!r} entry {i}", {name: unit.view_as(p)}
        return
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions must be a positive int or 'all', got {directions!r}")
    generator = torch.Generator().manual_seed(seed)
    for k in range(directions):
        yield (
            f"random direction {k} over all parameters",
            {
                name: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                for name, p in params.items()
            },
        )


def _directional(
    learner: Learner,
    batch: TaskBatch,
    params: dict[str, Tensor],
    gradient: dict[str, Tensor],
    direction: dict[str, Tensor],
    eps: float,
) -> tuple[float, float]:
    # In-place moves under no_grad, undone exactly after: the learner's parameters must stay
    # the same objects (optimizers, hooks and the learner's own references point at them).
    with torch.no_grad():
        for name, d in direction.items():
            params[name].add_(eps * d)
        plus = learner(batch).loss.item()
        for name, d in direction.items():
            params[name].sub_(2 * eps * d)
        minus = learner(batch).loss.item()
        for name, d in direction.items():
            params[name].add_(eps * d)
    analytic = sum((gradient[name] * d).sum().item() for name, d in direction.items())
    return analytic, (plus - minus) / (2 * eps)


def _fail_gradient(where: str, analytic: float, numeric: float, rtol: float, atol: float) -> None:
    raise AssertionError(
        f"meta-gradient disagrees with finite differences along {where}: analytic "
        f"{analytic:.10g}, numeric {numeric:.10g} (difference {abs(analytic - numeric):.3g}, "
        f"allowed {atol + rtol * abs(numeric):.3g}); is a path to the meta-parameters "
        "detached, or does the learner claim second order while dropping it?"
    )


def check_loop_matches_vmap(
    make_learner: LearnerFactory,
    batch: TaskBatch,
    *,
    rtol: float = 1e-9,
    steps: Sequence[int] = (2,),
    **options: object,
) -> None:
    """Check that the tasks of a batch give the same numbers in a Python loop and under vmap.

    Builds the learner with ``vectorize="loop"`` and ``vectorize="vmap"`` (same parameters) and
    compares, in float64, the meta-loss and meta-gradient (relative error of the whole
    gradient below ``rtol``) and :meth:`Learner.evaluate_batch` losses after ``steps``. A
    learner fails when its ``task_loss`` or ``inner`` is not a pure function of its inputs
    (in-place updates, ``.item()``, Python branches on tensor values).

    Args:
        make_learner: ``make_learner(**options) -> Learner``.
        batch: a task batch.
        rtol: relative tolerance (float64 rounding is ~1e-15; the default leaves room for the
            different summation orders of batched kernels).
        steps: inner step counts compared through ``evaluate_batch``.
        **options: passed to ``make_learner`` with ``vectorize``.

    Raises:
        AssertionError: naming the quantity (and parameter) and both numbers.

    Example:
        >>> check_loop_matches_vmap(make, batch)  # doctest: +SKIP
    """
    with _float64():
        loop = make_learner(vectorize="loop", **options).double()
        vmap = _same_parameters(make_learner(vectorize="vmap", **options).double(), loop)
        batch = batch.to(torch.float64)
        if not vmap.use_vmap(batch) or loop.use_vmap(batch):
            raise AssertionError(
                f"vectorize='vmap' gave use_vmap={vmap.use_vmap(batch)} and vectorize='loop' "
                f"gave use_vmap={loop.use_vmap(batch)}; does make_learner pass vectorize on?"
            )
        _compare_runs(("loop", loop), ("vmap", vmap), batch, rtol, 0.0, steps)


def check_backends_agree(
    make_learner: LearnerFactory,
    batch: TaskBatch,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-10,
    adapt_steps: int = 3,
    steps: Sequence[int] = (0, 1, 3),
    **options: object,
) -> None:
    """Check that ``backend="func"`` (torch.func) and ``backend="higher"`` give the same numbers.

    Compares, in float64 with the same parameters, the meta-loss, the meta-gradient (relative
    error of the whole gradient below ``rtol``), the fast weights of :meth:`Learner.adapt`
    after ``adapt_steps`` on the first task, and :meth:`Learner.evaluate_batch` losses.

    Args:
        make_learner: ``make_learner(**options) -> Learner``; built with ``backend="func",
            vectorize="loop"`` and with ``backend="higher"``.
        batch: a task batch.
        rtol: relative tolerance (the two backends sum in different orders).
        atol: absolute tolerance of the fast weights and evaluation losses.
        adapt_steps: inner steps of the compared fast weights.
        steps: inner step counts compared through ``evaluate_batch``.
        **options: passed to ``make_learner``.

    Raises:
        ImportError: when the ``higher`` library is not installed
            (``pip install 'metalearn[higher]'``); skip the check then.
        AssertionError: naming the quantity (and parameter) and both numbers.

    Example:
        >>> check_backends_agree(make, batch)  # doctest: +SKIP
    """
    if importlib.util.find_spec("higher") is None:
        raise ImportError(
            "check_backends_agree needs the higher library: pip install 'metalearn[higher]'"
        )
    with _float64():
        func = make_learner(backend="func", vectorize="loop", **options).double()
        higher = _same_parameters(make_learner(backend="higher", **options).double(), func)
        if higher.backend != "higher":
            raise AssertionError(
                f"make_learner(backend='higher') built backend={higher.backend!r}; pass it on"
            )
        batch = batch.to(torch.float64)
        _compare_runs(("func", func), ("higher", higher), batch, rtol, atol, steps)
        support = batch.task(0).support
        fast_func = func.adapt(support, steps=adapt_steps)
        fast_higher = higher.adapt(support, steps=adapt_steps)
        for name, value in fast_func.items():
            _assert_close(
                f"adapt(steps={adapt_steps})[{name!r}]", fast_higher[name], value, rtol, atol
            )


def _compare_runs(
    first: tuple[str, Learner],
    second: tuple[str, Learner],
    batch: TaskBatch,
    rtol: float,
    atol: float,
    steps: Sequence[int],
) -> None:
    (name_a, a), (name_b, b) = first, second
    loss_a, grad_a = meta_gradient(a, batch)
    loss_b, grad_b = meta_gradient(b, batch)
    _assert_close(f"meta-loss ({name_b} vs {name_a})", loss_b, loss_a, rtol, atol)
    flat_a = torch.cat([g.flatten() for g in grad_a.values()])
    flat_b = torch.cat([g.flatten() for g in grad_b.values()])
    error = _relative_error(flat_b, flat_a)
    if error >= rtol:
        worst = max(grad_a, key=lambda k: _relative_error(grad_b[k], grad_a[k]))
        raise AssertionError(
            f"meta-gradients differ ({name_b} vs {name_a}): relative error {error:.3g} > "
            f"{rtol:.3g}; worst parameter {worst!r}: {name_a} norm "
            f"{grad_a[worst].norm().item():.10g}, {name_b} norm {grad_b[worst].norm().item():.10g}"
            f", relative error {_relative_error(grad_b[worst], grad_a[worst]):.3g}"
        )
    eval_a, eval_b = a.evaluate_batch(batch, list(steps)), b.evaluate_batch(batch, list(steps))
    _assert_close(
        f"evaluate_batch loss at steps {list(steps)}", eval_b["loss"], eval_a["loss"], rtol, atol
    )


def _assert_close(what: str, actual: Tensor, expected: Tensor, rtol: float, atol: float) -> None:
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol):
        difference = (actual - expected).abs().max().item()
        raise AssertionError(
            f"{what} differs: {actual.detach().flatten()[:6].tolist()} vs "
            f"{expected.detach().flatten()[:6].tolist()} (largest difference {difference:.3g}, "
            f"rtol={rtol:g}, atol={atol:g})"
        )


def check_state_dict_round_trip(
    make_learner: LearnerFactory, batch: TaskBatch, *, epoch: int = 2, **options: object
) -> None:
    """Check that ``state_dict()`` and ``copy.deepcopy`` carry everything the meta-loss uses.

    Takes one SGD step and ``set_epoch(epoch)`` on a learner, loads its ``state_dict()`` into a
    fresh learner whose parameters are moved away first, and requires the same keys, a
    bit-identical meta-loss and meta-gradient, and the same meta-loss from a deep copy. A
    learner fails when meta-learned or scheduled state lives in plain attributes (put it in
    ``nn.Parameter``/buffers, or save it with ``get_extra_state``/``set_extra_state``).

    Args:
        make_learner: ``make_learner(**options) -> Learner``.
        batch: a task batch.
        epoch: passed to ``set_epoch`` before saving.
        **options: passed to ``make_learner``.

    Raises:
        AssertionError: naming the key or the parameter and both numbers.

    Example:
        >>> check_state_dict_round_trip(make, batch)  # doctest: +SKIP
    """
    with _float64():
        learner = make_learner(**options).double()
        batch = batch.to(torch.float64)
        optimizer = torch.optim.SGD(learner.parameters(), lr=0.05)
        learner(batch).loss.backward()
        optimizer.step()
        learner.set_epoch(epoch)
        clone = make_learner(**options).double()
        with torch.no_grad():  # a factory may seed itself: make sure loading has work to do
            for p in clone.parameters():
                p.add_(0.1)
        clone.load_state_dict(learner.state_dict())
        keys, clone_keys = set(learner.state_dict()), set(clone.state_dict())
        if keys != clone_keys:
            raise AssertionError(
                f"state_dict keys differ after loading: missing {sorted(keys - clone_keys)}, "
                f"extra {sorted(clone_keys - keys)}"
            )
        loss, grads = meta_gradient(learner, batch)
        loss_clone, grads_clone = meta_gradient(clone, batch)
        if loss_clone.item() != loss.item():
            raise AssertionError(
                f"the meta-loss after load_state_dict is {loss_clone.item()!r}, the original's "
                f"{loss.item()!r}: state the meta-loss depends on is not in state_dict()"
            )
        for name, g in grads.items():
            if not torch.equal(grads_clone[name], g):
                raise AssertionError(
                    f"meta-gradient of {name!r} differs after load_state_dict (norms "
                    f"{grads_clone[name].norm().item()!r} vs {g.norm().item()!r})"
                )
        copied = meta_gradient(copy.deepcopy(learner), batch)[0]
        if copied.item() != loss.item():
            raise AssertionError(
                f"the meta-loss of copy.deepcopy(learner) is {copied.item()!r}, the original's "
                f"{loss.item()!r}"
            )


def check_deterministic(
    make_learner: LearnerFactory,
    batch: TaskBatch,
    *,
    seed: int = 0,
    iterations: int = 2,
    lr: float = 1e-2,
    **options: object,
) -> None:
    """Check that the same seed gives bit-identical parameters after a few training steps.

    Twice: ``torch.manual_seed(seed)``, build the learner, take ``iterations`` Adam steps on
    ``batch``; the parameters must be equal to the bit. Runs in the dtype of the learner and
    batch as given. A learner fails when it draws randomness outside torch's seeded generator
    or keeps state between instances.

    Args:
        make_learner: ``make_learner(**options) -> Learner``.
        batch: a task batch.
        seed: the seed of both runs.
        iterations: meta-training steps per run.
        lr: Adam's learning rate.
        **options: passed to ``make_learner``.

    Raises:
        AssertionError: naming the first parameter that differs and its largest difference.

    Example:
        >>> check_deterministic(make, batch)  # doctest: +SKIP
    """
    runs = []
    for _ in range(2):
        torch.manual_seed(seed)
        learner = make_learner(**options)
        optimizer = torch.optim.Adam(learner.parameters(), lr=lr)
        for _ in range(iterations):
            optimizer.zero_grad()
            learner(batch).loss.backward()
            optimizer.step()
        runs.append({k: v.detach().clone() for k, v in learner.named_parameters()})
    for name, value in runs[0].items():
        if not torch.equal(runs[1][name], value):
            difference = (runs[1][name] - value).abs().max().item()
            raise AssertionError(
                f"two runs with seed {seed} end with different {name!r} (largest difference "
                f"{difference:.3g} after {iterations} steps): the learner is not deterministic"
            )


def _same_parameters(learner: Learner, source: Learner) -> Learner:
    learner.load_state_dict(source.state_dict())
    return learner


def _relative_error(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@contextlib.contextmanager
def _float64() -> Iterator[None]:
    # Tensors a learner creates inside its forward follow the default dtype.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
