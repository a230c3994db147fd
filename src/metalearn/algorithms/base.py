"""The learner base class: an ``nn.Module`` that turns a :class:`TaskBatch` into a meta-loss."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from metalearn._checks import check_int
from metalearn._functorch import under_functorch_transform
from metalearn.algorithms._evaluation import inner_trajectory
from metalearn.algorithms.inner import (
    BACKENDS,
    LossFn,
    Objective,
    Params,
    checked_loss,
    functional_forward,
    inner_loop,
    map_tasks,
    resolve_vectorize,
    select_parameters,
)
from metalearn.algorithms.updates import UpdateRule, check_rule, sgd
from metalearn.models.speedup import speedup
from metalearn.tasks.batch import Split, TaskBatch

__all__ = ["Learner", "MetaOutput"]

AdaptSelector = str | Sequence[str] | Callable[[str], bool] | None


class MetaOutput(NamedTuple):
    """What a learner returns for a task batch.

    Attributes:
        loss: the scalar meta-loss; ``loss.backward()`` leaves the meta-gradient in ``.grad``.
        metrics: detached scalars averaged over the tasks (``"loss"``, and ``"accuracy"`` for
            integer targets).
    """

    loss: Tensor
    metrics: dict[str, Tensor]


def task_metrics(prediction: Tensor, target: Tensor, loss: Tensor) -> dict[str, Tensor]:
    """Per-task metrics: the loss, and the accuracy when the targets are class labels."""
    out = {"loss": loss.detach()}
    if not target.is_floating_point() and prediction.dim() == target.dim() + 1:
        out["accuracy"] = (prediction.detach().argmax(-1) == target).float().mean()
    return out


def _check_number(name: str, value: float, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value}")
    return float(value)


def _check_steps(name: str, value: int) -> int:
    return check_int(name, value, 0)


class Learner(nn.Module):
    """Base of every learner: owns the model and configures the one inner loop.

    A learner is a choice of *objective* (what the inner loop descends and the query loss:
    ``objective=`` or an override of :meth:`objective`), *update rule* (``update=``, from
    :mod:`metalearn.updates`), what adapts (``adapt=``, plus any per-task state from
    :meth:`task_state`), and how the meta-gradient is taken (:meth:`task_loss`, second or first
    order). Calling the learner on a batch maps :meth:`task_loss` over its tasks (a Python
    loop, or ``torch.func.vmap``) and averages.

    The hooks a subclass may override, each public and documented below: :meth:`objective`,
    :meth:`inner_objective` (a different objective per inner step), :meth:`task_state`,
    :meth:`predict`, :meth:`query_loss`, :meth:`task_loss`, :meth:`inner` and
    :meth:`evaluate_batch`. :meth:`model_forward` is the model as a function of its parameters.

    A training call (gradients enabled) in a loop over tasks (the CPU default for conv
    models, and ``vectorize="loop"``) takes the meta-gradient in the forward: each task's
    meta-gradient is finished before the next task starts, so memory is one task's graph
    whatever the meta-batch, and ``out.loss.backward()`` hands the summed result to the
    parameters through one autograd node. The gradients are those of the whole graph (to float
    rounding, tested for every learner); ``.grad``, parameter hooks, gradient clipping,
    ``torch.autograd.grad(out.loss, ...)``, AMP and distributed gradient averaging work as
    before. Differences: ``out.loss`` cannot be differentiated twice (``create_graph=True``
    raises); float16 autocast, and a meta-loss that depends on a tensor that requires grad
    outside the learner (a learnable loss weight captured by the loss function; a warning says
    so), keep the whole graph as before. Under ``vmap`` the batch is one computation whatever
    the meta-batch, and the whole graph is kept for ``backward()``. On CPU, a small problem (no
    convolution, parameters x examples of the batch up to 4M, e.g. the sine MLP) runs its
    meta-loss and its backward on one intra-op thread, restored afterwards: thread hand-offs
    cost more than such work.

    Attributes:
        per_task_gradients: on the looped path, take the meta-gradient in the forward as
            above (default ``True``); ``False`` keeps every task's graph until ``backward()``
            (memory grows with the meta-batch; needed to differentiate the meta-loss twice).
        cpu_threads: intra-op threads for the meta-loss and its backward on CPU: ``"auto"``
            (default: one for small problems, else torch's setting) or a number.

    Args:
        model: the network; its parameters are the meta-parameters phi. Plain
            ``nn.MaxPool2d(2)`` layers in it become the bit-identical, faster
            :class:`~metalearn.models.MaxPool2x2` (:func:`metalearn.models.speedup`).
        loss: ``loss(prediction, target) -> scalar``, e.g. ``F.mse_loss``, ``F.cross_entropy``.
        inner_lr: inner-loop step size alpha (>= 0) of the default update rule ``sgd(inner_lr)``;
            unused when ``update`` is given.
        inner_steps: inner-loop steps during meta-training (>= 0).
        first_order: drop second-order terms of the meta-gradient.
        adapt: which parameters adapt in the inner loop: ``None`` (all), a name prefix, a list
            of prefixes, or a predicate on names.
        update: the inner update rule (:mod:`metalearn.updates`), e.g.
            ``ml.updates.adam(1e-3)``; default ``sgd(inner_lr)``. A rule that is an
            ``nn.Module`` becomes the submodule ``update``: its learned rates are parameters of
            the learner.
        objective: ``objective(params, split) -> scalar tensor``, the inner objective and query
            loss; default ``loss(model_forward(params, split.x), split.y)`` (see
            :meth:`objective`).
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"`` over the tasks of a batch.
        backend: ``"func"`` (torch.func, default) or ``"higher"`` (the ``higher`` library; tasks
            always in a loop). Same meta-gradients to float tolerance.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 1,
        *,
        first_order: bool = False,
        adapt: AdaptSelector = None,
        update: UpdateRule | None = None,
        objective: Objective | None = None,
        vectorize: str = "auto",
        backend: str = "func",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(f"loss must be callable (prediction, target) -> scalar, got {loss!r}")
        if objective is not None and not callable(objective):
            raise TypeError(
                f"objective must be callable (params, split) -> scalar tensor, got {objective!r}"
            )
        if vectorize not in ("auto", "vmap", "loop"):
            raise ValueError(f"vectorize must be 'auto', 'vmap' or 'loop', got {vectorize!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "higher" and vectorize == "vmap":
            raise ValueError(
                "backend='higher' cannot vmap over tasks; use vectorize='auto' or 'loop', "
                "or backend='func'"
            )
        # Bit-identical faster layers for a user's own model (nn.MaxPool2d(2) -> MaxPool2x2).
        self.model = speedup(model)
        self.loss = loss
        self.inner_lr = _check_number("inner_lr", inner_lr)
        self.inner_steps = _check_steps("inner_steps", inner_steps)
        self.first_order = bool(first_order)
        self.vectorize = vectorize
        self.backend = backend
        self.adapt_names = select_parameters(model, adapt)
        self.objective_fn = objective
        # Decided here, outside torch.compile's trace (which refuses class dicts).
        self._query_from_prediction = _objective_is_loss_of_predict(type(self))
        self.update = sgd(self.inner_lr) if update is None else check_rule(update)
        self._forward = functional_forward(model, backend)
        self._compile_options: dict[str, Any] | None = None
        self._compiled: Any = None  # built on first use, never pickled (see __getstate__)
        self.per_task_gradients = True
        self.cpu_threads: int | str = "auto"
        self._foreign_inputs: tuple | None = None

    # -- pieces subclasses configure ---------------------------------------------------------
    def params(self) -> Params:
        """The model's current parameters phi (name -> tensor, differentiable)."""
        return dict(self.model.named_parameters())

    def model_forward(self, params: Params, x: Tensor) -> Tensor:
        """The model as a function of its parameters: ``functional_call(model, params, x)``.

        On the ``higher`` backend the model runs through ``higher.monkeypatch``; same numbers.
        """
        return self._forward(params, x)

    def objective(self, params: Params, split: Split) -> Tensor:
        """The scalar objective of ``params`` on ``split``: what the inner loop descends on the
        support set, and the query loss of the meta-objective.

        ``self.objective_fn(params, split)`` when the learner was given ``objective=``, else
        ``loss(model_forward(params, split.x), split.y)``. Override it in a subclass for a
        regulariser or a proximal term; ``params`` holds every model parameter (adapted or not)
        and the per-task state of :meth:`task_state`.
        """
        if self.objective_fn is not None:
            return self.objective_fn(params, split)
        return checked_loss(self.loss, self.model_forward(params, split.x), split.y)

    def inner_objective(self, params: Params, steps: int) -> Objective | Sequence[Objective]:
        """What an inner loop of ``steps`` steps from ``params`` descends (default
        :meth:`objective`); a sequence gives one objective per step.

        Override it when the inner objective differs from the query's: a proximal pull toward
        the starting point ``params`` (iMAML), or one objective per step (MAML++'s per-step
        BatchNorm parameters).
        """
        return self.objective

    def task_state(self, support: Split) -> Params:
        """Per-task state that adapts in the inner loop but is not meta-learned (default none).

        The tensors returned (name -> tensor, e.g. CAVIA's context vector
        ``{"context": torch.zeros(4)}``) join the parameter dict at the start of every inner
        loop and adapt with the update rule; :meth:`objective`, :meth:`model_forward` overrides
        and :meth:`predict` see them in ``params``. They are not parameters of the learner (not
        in ``parameters()``, the optimizer or ``state_dict()``) and get no meta-gradient of
        their own; the meta-gradient flows through their adaptation. Names must not collide
        with parameter names. Called once per task (inside ``vmap`` when vectorised), with
        the task's support split.
        """
        return {}

    def inner(self, params: Params, support: Split, steps: int, first_order: bool, **kw) -> object:
        """Run the inner loop from ``params`` (plus :meth:`task_state`) on one task's support set.

        ``inner_loop(self.inner_objective(params, steps), params, support, update=self.update,
        ...)``;
        ``**kw`` (``trajectory=True`` in evaluation) goes to :func:`inner_loop`.
        """
        adapt = self.adapt_names
        state = self.task_state(support)
        if state:
            clash = sorted(set(state) & set(params))
            if clash:
                raise ValueError(
                    f"{type(self).__name__}.task_state returned {clash}, which are also "
                    "parameter names; give the per-task state other names"
                )
            params = {**params, **state}
            adapt = [*adapt, *state]
        return inner_loop(
            self.inner_objective(params, steps),
            params,
            support,
            steps=steps,
            update=self.update,
            adapt=adapt,
            first_order=first_order,
            backend=self.backend,
            **kw,
        )

    def query_loss(
        self, params: Params, query: Split, steps: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The query objective of (adapted) ``params`` and the task's metrics.

        The value is :meth:`objective` on the query, reported as the ``"loss"`` metric; the
        ``"accuracy"`` (for class labels) comes from :meth:`predict` ``(params, query.x,
        steps)``. With the default objective, the one prediction serves both.
        """
        if not self._custom_objective():
            prediction = self.predict(params, query.x, steps)
            value = checked_loss(self.loss, prediction, query.y)
            return value, task_metrics(prediction, query.y, value)
        value = self.objective(params, query)
        if not isinstance(value, Tensor) or value.dim() != 0:
            got = f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value)
            raise ValueError(
                f"{type(self).__name__}'s objective must return a scalar tensor, got {got}"
            )
        with torch.no_grad():
            prediction = self.predict(params, query.x, steps)
        return value, task_metrics(prediction, query.y, value)

    # Set in a class whose objective and predict agree (objective == loss of predict at the
    # query), so query_loss may compute the query's prediction once for both.
    _loss_of_predict = True

    def _custom_objective(self) -> bool:
        return self.objective_fn is not None or not self._query_from_prediction

    def task_loss(self, params: Params, support: Split, query: Split) -> tuple[Tensor, dict]:
        """Meta-loss of one task (MAML's: query loss after adapting on the support set)."""
        fast = self.inner(params, support, self.inner_steps, self.first_order)
        return self.query_loss(fast, query, self.inner_steps)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Checkpoints from before update rules kept learned rates under other names.
        for old, new in self._renamed_state.items():
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    #: old state_dict prefix -> new one (learned rates that moved into ``update``).
    _renamed_state: ClassVar[dict[str, str]] = {}

    # -- the public surface ------------------------------------------------------------------
    def use_vmap(self, batch: TaskBatch) -> bool:
        """Whether this batch runs vectorised (see :func:`resolve_vectorize`)."""
        if self.backend == "higher":
            return False
        return resolve_vectorize(self.vectorize, self.model, batch.support.x.device)

    def forward(self, batch: TaskBatch) -> MetaOutput:
        """Meta-loss of a task batch, averaged over its tasks."""
        if not isinstance(batch, TaskBatch):
            raise TypeError(f"expected a TaskBatch, got {type(batch).__name__}")
        if self._compile_options is not None and self._wants_compiled(batch):
            loss, metrics = self._compiled_meta_gradient()(self, batch)
            return MetaOutput(loss, metrics)
        return self._meta_loss(batch)

    def _meta_loss(self, batch: TaskBatch) -> MetaOutput:
        from metalearn.algorithms._meta_gradient import (
            backward_on_threads,
            intra_op_threads,
            per_task_meta_loss,
            warn_foreign,
        )

        # Inside a torch.func transform (the compiled trace) the caller owns the threads.
        threads = None if under_functorch_transform() else self._meta_gradient_threads(batch)
        with intra_op_threads(threads):
            if self._wants_per_task(batch):
                done = per_task_meta_loss(self, batch)
                if done is not None:
                    return MetaOutput(*done)
                # The meta-loss reaches a tensor outside the learner: remember it for these
                # settings (probing costs a task) and build the whole graph instead.
                self._foreign_inputs = self._connectivity_key()
                warn_foreign(self)
            params = self.params()
            losses, metrics = map_tasks(
                lambda s, q: self.task_loss(params, s, q), batch, self.use_vmap(batch)
            )
            loss = losses.mean()
        if threads is not None and loss.requires_grad:
            backward_on_threads(loss, threads)  # the whole graph's backward on those threads
        return MetaOutput(loss, {k: v.mean() for k, v in metrics.items()})

    def _wants_per_task(self, batch: TaskBatch) -> bool:
        # The meta-gradient is taken in the forward of a training call, per task, on the
        # looped path. Under vmap the batch is one computation whatever the meta-batch: the
        # whole graph is the same memory and one backward less. Inside a torch.func transform
        # (the compiled function's trace) the transform takes the gradient; without gradients
        # there is none to take. Float16 autocast keeps the whole graph: its loss scale, known
        # only at backward(), must reach the half-precision backward of every task.
        if not self.per_task_gradients or not torch.is_grad_enabled():
            return False
        if self.use_vmap(batch):
            return False
        if under_functorch_transform():
            return False
        if self._foreign_inputs is not None and self._foreign_inputs == self._connectivity_key():
            return False
        device = batch.support.x.device.type
        if _autocast_enabled(device) and _autocast_dtype(device) == torch.float16:
            return False
        return any(p.requires_grad for p in self.parameters())

    def _meta_gradient_threads(self, batch: TaskBatch) -> int | None:
        # Intra-op threads for the meta-loss and its backward (None: torch's setting). Tiny
        # tensors (the sine MLP) run faster on one thread: thread hand-offs cost more than the
        # work, and on a busy machine a second thread that is descheduled stalls every op.
        if self.cpu_threads != "auto":
            return check_int("cpu_threads", self.cpu_threads, 1)
        if batch.support.x.device.type != "cpu" or _has_conv(self.model):
            return None
        examples = batch.num_tasks * (batch.support.x.shape[1] + batch.query.x.shape[1])
        size = sum(p.numel() for p in self.parameters())
        return 1 if size * examples <= _SMALL_WORK else None

    def _connectivity_key(self) -> tuple:
        # What decides which parameters the meta-loss depends on; the compiled path checks
        # that again when it changes (a learner whose dependence changes otherwise, e.g. with
        # its training progress, extends it, as MAML++ does).
        return (self.first_order, self.inner_steps, tuple(self.adapt_names))

    def adapt(self, support: Split, steps: int | None = None) -> Params:
        """Fast weights for one task: ``steps`` (default ``inner_steps``) steps on ``support``.

        The result is differentiable with respect to phi when gradients are enabled (and to
        second order unless the learner is first order); under ``torch.no_grad()`` it is not.

        Args:
            support: one task's support split (no task dimension), e.g. ``batch.task(0).support``.
            steps: inner steps; evaluation often uses more than training.

        Returns:
            dict name -> tensor for every parameter of the model.
        """
        steps = self.inner_steps if steps is None else _check_steps("steps", steps)
        if support.x.shape[0] != support.y.shape[0]:
            raise ValueError(
                f"support.x has {support.x.shape[0]} examples but support.y has "
                f"{support.y.shape[0]}; pass one task's split, e.g. batch.task(0).support"
            )
        params = self.params()
        first_order = self.first_order or not torch.is_grad_enabled()
        if not torch.is_grad_enabled():
            # Parameters that do not adapt (ANIL's body) must come back detached too.
            params = {k: v.detach() for k, v in params.items()}
        return self.inner(params, Split(*support), steps, first_order)

    def predict(self, params: Params, x: Tensor, steps: int | None = None) -> Tensor:
        """Apply the model with the given (fast) weights: ``functional_call(model, params, x)``.

        Args:
            params: a parameter dict, e.g. from :meth:`adapt`.
            x: inputs.
            steps: how many inner steps produced ``params`` (default ``inner_steps``); only
                learners whose forward depends on the step (MAML++'s per-step BatchNorm) use it.
        """
        return self.model_forward(params, x)

    def evaluate_batch(self, batch: TaskBatch, steps: Sequence[int]) -> dict[str, Tensor]:
        """Query metrics of every task after each of ``steps`` inner steps (no meta-gradient).

        What it calls (the contract :func:`metalearn.evaluate` relies on): under
        ``torch.no_grad()``, for each task (looped or vmapped as in training), with
        ``params = {k: v.detach() for k, v in self.params().items()}`` and ``n = max(steps)``:
        ``path = self.inner(params, support, n, True, trajectory=True)``, which must return the
        ``n + 1`` parameter dicts after ``0..n`` steps; then for each ``s`` in ``steps``,
        ``prediction = self.predict(path[s], query.x, s)`` and the metrics of
        ``self.loss(prediction, query.y)``. An ``inner`` override must therefore accept
        ``**kw`` and pass it on to :func:`inner_loop` (a clear ``TypeError`` says so
        otherwise); a learner without an inner loop overrides this method instead.

        Returns:
            dict metric -> tensor ``[tasks, len(steps)]``.
        """
        wanted = sorted({_check_steps("steps", s) for s in steps})
        params = {k: v.detach() for k, v in self.params().items()}

        def one(support: Split, query: Split) -> dict[str, Tensor]:
            path = inner_trajectory(self, params, support, wanted[-1])
            rows = []
            for s in wanted:
                prediction = self.predict(path[s], query.x, s)
                rows.append(
                    task_metrics(prediction, query.y, checked_loss(self.loss, prediction, query.y))
                )
            return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}

        with torch.no_grad():
            out = map_tasks(one, batch, self.use_vmap(batch))
        index = [wanted.index(s) for s in steps]
        return {k: v[:, index] for k, v in out.items()}

    def compile(self, **options: Any) -> None:
        """Compute the meta-gradient with ``torch.compile`` from now on (in place).

        The whole meta-gradient of a training batch (inner loop, query loss and the
        second-order backward) becomes one compiled function: ``torch.func.grad`` of this
        learner's meta-loss, traced by ``torch.compile``, whose gradients ``loss.backward()``
        then hands to the parameters. Calling the learner, ``backward()`` and the optimizer
        work as before; the numbers agree with the eager ones to float rounding (tested for
        every learner). This replaces ``nn.Module.compile``, which cannot serve second-order
        meta-learning (a compiled gradient is not differentiable again).

        It pays where Python and kernel-launch overhead dominate: the sine MLP's meta-training
        step runs 2.5x faster on CPU (benchmarks/RESULTS.md), after ~17 s of compiling. A
        learner that loops over tasks (conv models on CPU) compiles one task's meta-gradient
        and reuses it per task, so only one task's graph is alive at a time: Conv-4 on CPU
        ran 5-30% faster with 0.2-0.5x the peak memory, after ~2.5 minutes of compiling. On CUDA,
        ``mode="reduce-overhead"`` also replays the step as a CUDA graph (fixed shapes). Only
        the training forward with gradients enabled is compiled; :meth:`adapt`,
        :meth:`evaluate_batch` and calls under ``torch.no_grad()`` run eagerly. A new batch
        shape or a change of the learner's settings recompiles. Not combinable with autocast
        (AMP): float16 loss scaling would not reach the inner gradients computed inside.

        Args:
            **options: passed to ``torch.compile`` (``mode``, ``backend``, ``dynamic`` ...);
                default ``fullgraph=True`` (fail loudly rather than fall back to a slow path)
                and ``dynamic=False``.

        Raises:
            ValueError: for a learner with ``backend="higher"`` (only ``"func"`` compiles).

        Example:
            >>> import torch.nn.functional as F, metalearn as ml
            >>> maml = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
            >>> maml.compile()        # the next maml(batch) compiles (seconds), later ones reuse it
        """
        if self.backend != "func":
            raise ValueError(
                f"learner.compile() needs backend='func' (torch.func), but this learner uses "
                f"backend={self.backend!r}, whose autograd calls cannot run inside the compiled "
                "torch.func.grad; build the learner with backend='func'"
            )
        self._compile_options = {"fullgraph": True, "dynamic": False, **options}
        self._compiled = None

    def _compiled_meta_gradient(self) -> Any:
        if self._compiled is None:
            from metalearn.algorithms._compiled import CompiledMetaGradient

            self._compiled = CompiledMetaGradient(self, dict(self._compile_options or {}))
        return self._compiled

    def _wants_compiled(self, batch: TaskBatch) -> bool:
        # Inside a torch.func transform (the compiled function's own trace among them) the
        # eager meta-loss is what is wanted; without gradients there is nothing to compile.
        if under_functorch_transform() or not torch.is_grad_enabled():
            return False
        if not any(p.requires_grad for p in self.parameters()):
            return False
        if _autocast_enabled(batch.support.x.device.type):
            raise RuntimeError(
                "a compiled learner (learner.compile()) cannot run under autocast: float16 "
                "loss scaling would not reach the inner gradients computed inside the compiled "
                "function; turn AMP off (train.amp: false) or do not compile"
            )
        return True

    def __getstate__(self) -> dict[str, Any]:
        # The compiled function closes over this very learner: a copy or an unpickled learner
        # builds its own on first use.
        state = self.__dict__.copy()
        state["_compiled"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Learners pickled before per-task meta-gradients existed get the default.
        state.setdefault("per_task_gradients", True)
        state.setdefault("cpu_threads", "auto")
        state.setdefault("_foreign_inputs", None)
        state.setdefault("objective_fn", None)
        state.setdefault("_query_from_prediction", _objective_is_loss_of_predict(type(self)))
        super().__setstate__(state)

    def set_epoch(self, epoch: int) -> None:
        """Tell the learner how far training has got (an epoch or iteration count).

        Learners with schedules (MAML++'s annealed multi-step loss and derivative order) use
        it; the default does nothing, so a trainer can call it on every learner.
        """
        _check_steps("epoch", epoch)

    def extra_repr(self) -> str:
        compiled = "" if self._compile_options is None else ", compiled=True"
        if not self.per_task_gradients:
            compiled += ", per_task_gradients=False"
        return (
            f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
            f"first_order={self.first_order}, vectorize={self.vectorize!r}, "
            f"backend={self.backend!r}{compiled}"
        )


def _objective_is_loss_of_predict(cls: type) -> bool:
    # True when the classes that define objective and predict both declare that they agree.
    owners = [
        next(c for c in cls.__mro__ if name in c.__dict__) for name in ("objective", "predict")
    ]
    return all(c.__dict__.get("_loss_of_predict", False) for c in owners)


# Parameters x examples of a batch up to which the CPU meta-gradient runs on one thread: the
# sine MLP (1,761 parameters, 25 tasks of 20 points: 0.9M) ran 1.2x faster on one thread than
# on two on a quiet 2-core machine, and several times faster on a busy one.
_SMALL_WORK = 2**22


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def _autocast_dtype(device_type: str) -> torch.dtype:
    try:
        return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):  # torch < 2.4
        if device_type == "cuda":
            return torch.get_autocast_gpu_dtype()
        return torch.get_autocast_cpu_dtype()


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        if device_type == "cuda":
            return torch.is_autocast_enabled()
        return torch.is_autocast_cpu_enabled()
