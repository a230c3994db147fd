"""A meta-training run you can leave running: validation, best model, checkpoints, resume.

One iteration of :class:`Trainer` is the loop every learner fits (see ``docs/architecture.md``)::

    batch = sampler.sample(meta_batch_size, generator)      # the run's seeded task stream
    out = learner(batch)                                     # MetaOutput(loss, metrics)
    out.loss.backward(); clip; optimizer.step(); scheduler.step()

around which the trainer adds what a long run needs: AMP on CUDA, the batch in chunks whose
meta-gradients add up (``chunk_size``, for a meta-batch larger than memory), a NaN/inf check
that stops the run (:class:`DivergenceError`), periodic validation on a fixed task set with
the best state kept, atomic checkpoints that resume bit-identically, a metrics log, plots, and
a final test.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metalearn._checks import check_int
from metalearn.algorithms.base import Learner
from metalearn.runtime import tune_cpu_allocator
from metalearn.tasks.batch import TaskBatch, TaskSampler
from metalearn.training import distributed as dist
from metalearn.training.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from metalearn.training.evaluate import Evaluation, evaluate
from metalearn.training.log import MetricsLog
from metalearn.training.task_stream import TaskStream

__all__ = ["BEST_FILE", "CHECKPOINT_FILE", "DivergenceError", "EvalProtocol", "Trainer"]

#: File names inside a run folder.
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
TEST_FILE = "test.json"

SampleBatch = Callable[[TaskSampler, int, torch.Generator], TaskBatch]


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite meta-loss or gradient; the update was not applied.

    Attributes:
        iteration: the meta-update (1-based) whose loss or gradient was not finite.
        quantity: ``"meta-loss"`` or ``"gradient norm"``.
        value: the offending value.
        checkpoint: the last checkpoint written before it (``None`` if none was).
    """

    def __init__(
        self, iteration: int, quantity: str, value: float, checkpoint: Path | None
    ) -> None:
        self.iteration = iteration
        self.quantity = quantity
        self.value = value
        self.checkpoint = checkpoint
        where = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint is not None
            else "no checkpoint was written before it"
        )
        super().__init__(
            f"training diverged at iteration {iteration}: the {quantity} is {value}; the update "
            f"was not applied and {where}. Lower the learning rates, set a gradient clip "
            "(grad_clip) or check the data, then resume from the checkpoint."
        )

    def __reduce__(self):  # picklable across processes despite the custom signature
        return (type(self), (self.iteration, self.quantity, self.value, self.checkpoint))


@dataclass(frozen=True)
class EvalProtocol:
    """A fixed evaluation task set: what :func:`metalearn.evaluate` runs for validation or test.

    Args:
        sampler: the task sampler of the split (validation or test classes).
        num_tasks: tasks in the fixed set (600 for the papers' test numbers).
        steps: inner step count(s) to report; the last one is the headline number (and the one
            validation selects on). Default: the learner's ``inner_steps``.
        seed: fixes the task set (use different seeds for validation and test).
        batch_size: tasks adapted at once (memory only).

    Example:
        >>> import metalearn as ml
        >>> test = EvalProtocol(ml.tasks.Sine(10, 100), num_tasks=600, steps=[0, 1, 10], seed=2)
    """

    sampler: TaskSampler
    num_tasks: int = 600
    steps: int | Sequence[int] | None = None
    seed: int = 0
    batch_size: int = 25

    def run(self, learner: Learner) -> Evaluation:
        """Evaluate ``learner`` on this task set (in eval mode; the mode is restored after)."""
        was_training = learner.training
        learner.eval()
        try:
            return evaluate(
                learner, self.sampler, self.num_tasks, self.steps, self.seed, self.batch_size
            )
        finally:
            learner.train(was_training)


def _summary_record(result: Evaluation, steps: int | None = None) -> dict[str, float]:
    steps = result.steps[-1] if steps is None else steps
    record: dict[str, Any] = {"steps": steps, "num_tasks": result.num_tasks}
    for metric in sorted(result.per_task):
        mean, ci = result.summary(metric, steps)
        record[metric] = mean
        record[f"{metric}_ci95"] = ci
    return record


class Trainer:
    """Meta-train a learner for a fixed number of iterations, surviving kills and divergence.

    Each iteration samples ``meta_batch_size`` tasks from one generator seeded with ``seed``,
    computes the meta-loss (under ``torch.autocast`` when ``amp`` and on CUDA), backpropagates,
    checks that loss and gradient are finite, clips, steps the optimizer and the scheduler
    (schedulers step once per meta-update). Every ``validate_every`` iterations the learner is
    evaluated on a fixed task set and the best state is kept; every ``checkpoint_every``
    iterations (and at the end) a checkpoint is written atomically to ``run_dir``. At the end the
    best state is restored and, if ``test`` is given, evaluated on the test task set.

    If the learner has a method ``on_iteration(iteration)``, it is called before every
    meta-update with the number of meta-updates done so far (0 for the first); learners whose
    behaviour follows training progress (MAML++'s annealing) use it. Whatever it sets must be a
    function of that number (or live in the learner's ``state_dict``) for resume to be exact.

    Run folder (when ``run_dir`` is given; written by the main process only):
    ``checkpoint.pt`` (latest), ``best.pt`` (best learner by validation), ``metrics.jsonl``,
    ``tensorboard/`` (if installed), ``test.json`` and ``plots/*.png``.

    Args:
        learner: the learner to train; its parameters' device and dtype decide the batches'.
        sampler: the meta-training task sampler.
        optimizer: a torch optimizer over ``learner.parameters()``.
        iterations: total meta-updates of the run (a resumed run continues up to it).
        meta_batch_size: tasks per meta-update.
        seed: seed of the task stream.
        scheduler: optional learning-rate scheduler, stepped after every meta-update.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        amp: mixed precision with ``torch.autocast`` on CUDA (a no-op on CPU).
        amp_dtype: ``torch.float16`` (with a gradient scaler) or ``torch.bfloat16``.
        validation: the fixed validation task set (``None``: no validation; the final state is
            the best).
        validate_every: iterations between validations.
        select_metric: validation metric to select on; default ``"accuracy"`` (higher is better)
            when the evaluation reports it, else ``"loss"`` (lower is better).
        test: the final test task set, evaluated with the best state at the end of :meth:`fit`.
        run_dir: folder for checkpoints, metrics and plots (``None``: nothing is written).
        checkpoint_every: iterations between checkpoints.
        plot: write learning-curve PNGs at the end (needs matplotlib).
        tensorboard: ``None`` logs to TensorBoard when installed, ``True`` requires it.
        progress: show a tqdm progress bar with loss and accuracy.
        callback: called as ``callback(index, metrics)`` after every meta-update, with the
            0-based index of the update.
        metadata: plain data stored in every checkpoint (the CLI stores the config).
        restore_best: load the best validated state into the learner at the end of :meth:`fit`.
        is_main_process: only the main process writes files and shows progress (distributed).
        sample_batch: replaces ``sampler.sample(meta_batch_size, generator=generator)``; called
            as ``sample_batch(sampler, meta_batch_size, generator)`` and returns the batch this
            process trains on (e.g. its shard of the meta-batch).
        distributed: data-parallel over the ranks of the running ``torch.distributed`` process
            group (``docs/distributed.md``). ``None`` (default) turns it on when a process group
            is running. When on: rank 0's weights are broadcast at the start, each rank trains
            on its share of meta-batch ``t`` of the rank-invariant
            :class:`~metalearn.training.task_stream.TaskStream` (so 1 and N ranks, and a resumed
            run, see the same tasks), gradients and metrics are averaged across ranks, and only
            rank 0 writes files and shows progress. ``True`` without a process group runs the
            same task stream in one process.
        tune_allocator: on CPU, call :func:`metalearn.tune_cpu_allocator` (reuse freed
            blocks under 32 MiB instead of paying page faults for them again; over a quarter
            of a Conv-4 step). Affects the whole process.
        reduce_gradients: called as ``reduce_gradients(learner)`` after every backward, before
            the gradient is checked and clipped (e.g. an all-reduce that averages across ranks).
        chunk_size: run the meta-batch through the learner this many tasks at a time, each
            chunk's meta-gradient accumulated (weighted by its share of the tasks) before the
            next chunk is moved to the device. The tasks and the update are those of the whole
            batch (up to float rounding); peak memory is one chunk's graph and device data.
            A sampler with ``sample_chunks`` (:class:`~metalearn.tasks.FewShot`) reads each
            chunk's images only when its turn comes, so host memory holds one chunk's images
            too (not with ``sample_batch``). For a meta-batch that does not fit on the GPU, for
            the vmapped inner loop (which holds the graph of every task it runs at once), and
            for large images. ``None``: the whole batch.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> maml = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        >>> trainer = Trainer(
        ...     maml, ml.tasks.Sine(10, 10), torch.optim.Adam(maml.parameters(), 1e-3),
        ...     iterations=20, meta_batch_size=5, progress=False,
        ...     validation=EvalProtocol(ml.tasks.Sine(10, 10), num_tasks=20, seed=1),
        ...     validate_every=10)
        >>> history = trainer.fit()
        >>> trainer.best_iteration in (10, 20)
        True
    """

    def __init__(
        self,
        learner: Learner,
        sampler: TaskSampler,
        optimizer: torch.optim.Optimizer,
        *,
        iterations: int,
        meta_batch_size: int,
        seed: int = 0,
        scheduler: Any = None,
        grad_clip: float | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype = torch.float16,
        validation: EvalProtocol | None = None,
        validate_every: int = 1000,
        select_metric: str | None = None,
        test: EvalProtocol | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1000,
        plot: bool = True,
        tensorboard: bool | None = None,
        progress: bool = True,
        callback: Callable[[int, dict[str, float]], None] | None = None,
        metadata: dict[str, Any] | None = None,
        restore_best: bool = True,
        is_main_process: bool = True,
        sample_batch: SampleBatch | None = None,
        reduce_gradients: Callable[[Learner], None] | None = None,
        distributed: bool | None = None,
        tune_allocator: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(learner, torch.nn.Module):
            raise TypeError(f"learner must be a metalearn Learner, got {type(learner).__name__}")
        if not hasattr(sampler, "sample"):
            raise TypeError(
                f"sampler must have sample(num_tasks, generator) -> TaskBatch, got {sampler!r}"
            )
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch optimizer, got {type(optimizer).__name__}")
        self.iterations = check_int("iterations", iterations, 1)
        self.meta_batch_size = check_int("meta_batch_size", meta_batch_size, 1)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, 1)
        self.validate_every = check_int("validate_every", validate_every, 1)
        self.checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
        if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip!r}")
        if amp_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"amp_dtype must be torch.float16 or torch.bfloat16, got {amp_dtype}")
        for name, protocol in (("validation", validation), ("test", test)):
            if protocol is not None and not isinstance(protocol, EvalProtocol):
                raise TypeError(f"{name} must be an EvalProtocol, got {type(protocol).__name__}")
        self.learner = learner
        self.sampler = sampler
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.seed = seed
        self.grad_clip = grad_clip
        self.validation = validation
        self.select_metric = select_metric
        self.test = test
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.plot = plot
        self.tensorboard = tensorboard
        self.progress = progress
        self.callback = callback
        self.metadata = dict(metadata or {})
        self.restore_best = restore_best
        self.distributed = dist.is_distributed() if distributed is None else bool(distributed)
        # Drawing the batch chunk by chunk (tasks identical to the whole batch's), when the
        # batch is ours to draw and the sampler can.
        self._sample_chunks: Callable[[], tuple[Iterator[TaskBatch], int]] | None = None
        if sample_batch is None and callable(getattr(sampler, "sample_chunks", None)):
            self._sample_chunks = lambda: (
                sampler.sample_chunks(self.meta_batch_size, self.chunk_size, self.generator),
                self.meta_batch_size,
            )
        if self.distributed:
            stream = TaskStream(sampler, meta_batch_size, seed=seed)
            # Meta-batch t depends only on (seed, t): nothing to checkpoint, exact on resume.
            if sample_batch is None:
                self._sample_chunks = lambda: (
                    stream.sample_chunks(self.iteration, self.chunk_size),
                    stream.local_batch_size,
                )
            sample_batch = sample_batch or (lambda s, n, g: stream.sample(self.iteration))
            reduce_gradients = reduce_gradients or dist.average_gradients
            is_main_process = is_main_process and dist.is_main_process()
        self.is_main_process = is_main_process
        self.sample_batch = sample_batch or (lambda s, n, g: s.sample(n, generator=g))
        self.reduce_gradients = reduce_gradients

        first = next(learner.parameters(), None)
        if first is None:
            raise ValueError("the learner has no parameters to train")
        self.device, self.dtype = first.device, first.dtype
        if tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()
        self.amp = bool(amp) and self.device.type == "cuda"
        self.amp_dtype = amp_dtype
        use_scaler = self.amp and amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

        self.generator = torch.Generator().manual_seed(seed)
        #: Meta-updates done so far (a resumed run starts from the checkpoint's).
        self.iteration = 0
        #: Metrics of every meta-update run by :meth:`fit` in this process.
        self.history: list[dict[str, float]] = []
        self.best_iteration: int | None = None
        self.best_score: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_checkpoint: Path | None = None
        self.test_result: Evaluation | None = None
        self._resumed = False
        self._extra: dict[str, float] = {}
        self._log: MetricsLog | None = None

    # -- one meta-update ---------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _diverged(self, quantity: str, value: float) -> DivergenceError:
        return DivergenceError(self.iteration + 1, quantity, value, self.last_checkpoint)

    def _gradient_norm(self) -> float:
        params = [p for p in self.learner.parameters() if p.grad is not None]
        if self.grad_clip is not None:
            return float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        if not params:
            return 0.0
        norms = torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params])
        return float(torch.linalg.vector_norm(norms))

    def _chunks(self) -> tuple[Iterable[TaskBatch], int]:
        """This step's tasks, in chunks of ``chunk_size`` (one chunk without), and their number."""
        if self.chunk_size is not None and self._sample_chunks is not None:
            return self._sample_chunks()  # each chunk's images read when its turn comes
        batch = self.sample_batch(self.sampler, self.meta_batch_size, self.generator)
        whole = self.chunk_size is None or self.chunk_size >= batch.num_tasks
        return [batch] if whole else batch.chunk(self.chunk_size), batch.num_tasks

    def _forward_backward(
        self, chunks: Iterable[TaskBatch], num_tasks: int
    ) -> tuple[float, dict[str, float]]:
        """Meta-loss and metrics of the tasks, their meta-gradient added to the ``.grad``s.

        In chunks, each meta-loss is weighted by the chunk's share of the tasks: the sum of the
        chunks' gradients is the batch's.
        """
        meta_loss, metrics = 0.0, {}
        for chunk in chunks:
            share = chunk.num_tasks / num_tasks
            whole = share == 1
            chunk = chunk.to(device=self.device, dtype=self.dtype)
            with self._autocast():
                out = self.learner(chunk)
            loss = out.loss if whole else out.loss * share
            meta_loss += share * out.loss.item()
            for k, v in out.metrics.items():
                metrics[k] = metrics.get(k, 0.0) + share * v.item()
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            del out, loss, chunk  # this chunk's graph and device data go before the next's
        return meta_loss, metrics

    def step(self) -> dict[str, float]:
        """Run one meta-update (iteration ``self.iteration + 1``) and return its metrics.

        Raises:
            DivergenceError: when the meta-loss or the gradient norm is NaN or infinite; the
                parameters are left as they were.
        """
        self.learner.train()
        on_iteration = getattr(self.learner, "on_iteration", None)
        if callable(on_iteration):
            on_iteration(self.iteration)
        chunks, num_tasks = self._chunks()
        self.optimizer.zero_grad(set_to_none=True)
        meta_loss, task_metrics = self._forward_backward(chunks, num_tasks)
        if self.reduce_gradients is not None:
            # Before any check, so that every rank reaches the collective and a NaN on one
            # rank reaches all of them through the averaged gradient.
            self.reduce_gradients(self.learner)
        if not math.isfinite(meta_loss):
            raise self._diverged("meta-loss", meta_loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = self._gradient_norm()
        # With float16 AMP an overflowing gradient is routine: the scaler skips the step and
        # lowers its scale. Without a scaler it means the run has diverged.
        if not math.isfinite(grad_norm) and self.scaler is None:
            raise self._diverged("gradient norm", grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.iteration += 1
        metrics = {"meta_loss": meta_loss, **task_metrics}
        if self.distributed:
            metrics = dist.average_metrics(metrics)
        self._extra = {"lr": float(lr), "grad_norm": grad_norm}
        return metrics

    # -- validation and best state -----------------------------------------------------------
    def _selection(self, result: Evaluation) -> tuple[str, bool]:
        metric = self.select_metric
        if metric is None:
            metric = "accuracy" if "accuracy" in result.per_task else "loss"
        if metric not in result.per_task:
            raise ValueError(
                f"select_metric={metric!r} is not reported by the validation; "
                f"have {sorted(result.per_task)}"
            )
        return metric, metric != "loss"

    def validate(self) -> Evaluation:
        """Evaluate on the validation set, log it, and keep the state if it is the best so far."""
        if self.validation is None:
            raise ValueError("this trainer has no validation task set (validation=None)")
        result = self.validation.run(self.learner)
        metric, higher_is_better = self._selection(result)
        score, _ = result.summary(metric)
        # A NaN or infinite score (a diverged adaptation) is never the best, and any finite
        # score beats a non-finite best kept by an older version.
        if not math.isfinite(score):
            warnings.warn(
                f"validation at iteration {self.iteration}: the mean {metric} is {score}; "
                "this state is not kept as the best",
                stacklevel=2,
            )
            better = False
        elif self.best_score is None or not math.isfinite(self.best_score):
            better = True
        else:
            better = score > self.best_score if higher_is_better else score < self.best_score
        if better:
            self._keep_best(score)
        if self._log is not None:
            self._log.write("val", self.iteration, _summary_record(result))
        return result

    def _keep_best(self, score: float | None) -> None:
        self.best_iteration = self.iteration
        self.best_score = score
        self.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in self.learner.state_dict().items()
        }
        if self.run_dir is not None and self.is_main_process:
            save_checkpoint(
                {
                    "format": CHECKPOINT_FORMAT,
                    "kind": "learner",
                    "iteration": self.iteration,
                    "score": score,
                    "learner": self.best_state,
                    "metadata": self.metadata,
                },
                self.run_dir / BEST_FILE,
            )

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (``weights_only``-loadable)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": "trainer",
            "iteration": self.iteration,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng_state(self.generator),
            "best": {
                "iteration": self.best_iteration,
                "score": self.best_score,
                "learner": self.best_state,
            },
            "metadata": self.metadata,
        }

    def load_state_dict(
        self, state: dict[str, Any], *, optimizer: bool = True, scheduler: bool = True
    ) -> None:
        """Restore a :meth:`state_dict`: learner, optimizer, scheduler, scaler, RNGs, best.

        Args:
            state: a :meth:`state_dict`.
            optimizer: restore the optimizer's state; ``False`` keeps the trainer's fresh
                optimizer (a resumed run whose optimizer changed, e.g. Adam to SGD).
            scheduler: likewise for the learning-rate scheduler.

        Raises:
            ValueError: when ``state`` is not a trainer checkpoint of this format, lacks a
                part, or a part does not fit this trainer's learner, optimizer or scheduler.
        """
        if state.get("kind") != "trainer":
            raise ValueError(
                "not a trainer checkpoint (a best.pt holds the learner only; resume from "
                "checkpoint.pt)"
            )
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint format {state.get('format')!r} is not supported "
                f"(this version writes {CHECKPOINT_FORMAT})"
            )
        parts = ("iteration", "learner", "optimizer", "scheduler", "rng", "best")
        missing = [key for key in parts if key not in state]
        if missing:
            raise ValueError(f"the checkpoint lacks {', '.join(missing)}; it cannot be resumed")
        if scheduler and (state["scheduler"] is None) != (self.scheduler is None):
            raise ValueError(
                "the checkpoint and this trainer disagree on having a learning-rate scheduler"
            )
        # Checked before anything is loaded, so a refused checkpoint leaves the trainer as it was.
        restore = [("learner", self.learner, state["learner"])]
        if optimizer:
            restore.append(("optimizer", self.optimizer, state["optimizer"]))
        if scheduler and self.scheduler is not None:
            restore.append(("scheduler", self.scheduler, state["scheduler"]))
        if self.scaler is not None and state.get("scaler") is not None:
            restore.append(("scaler", self.scaler, state["scaler"]))
        for name, target, part in restore:
            try:
                target.load_state_dict(part)
            except (KeyError, ValueError, RuntimeError, TypeError) as e:
                raise ValueError(
                    f"the checkpoint's {name} state does not fit this run's {name} ({e!r})"
                ) from e
        try:
            restore_rng_state(state["rng"], self.generator)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"the checkpoint's random states are unreadable ({e!r})") from e
        self.iteration = int(state["iteration"])
        best = state["best"]
        self.best_iteration = best["iteration"]
        self.best_score = best["score"]
        self.best_state = best["learner"]

    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write :meth:`state_dict` atomically (default ``run_dir/checkpoint.pt``)."""
        if path is None:
            if self.run_dir is None:
                raise ValueError("pass a path, or give the trainer a run_dir")
            path = self.run_dir / CHECKPOINT_FILE
        path = save_checkpoint(self.state_dict(), path)
        self.last_checkpoint = path
        return path

    def resume(
        self,
        path: str | os.PathLike[str],
        *,
        optimizer: bool = True,
        scheduler: bool = True,
    ) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`.

        Loads with ``torch.load(weights_only=True)``. The learner, optimizer and scheduler must
        be built as for the original run; their states, the iteration and every RNG state are
        then restored, so the remaining iterations give exactly the numbers of an uninterrupted
        run (on CPU). ``optimizer`` and ``scheduler`` as in :meth:`load_state_dict`.

        Raises:
            ValueError: naming ``path`` when it cannot be resumed.
        """
        self.resume_from_state(
            load_checkpoint(path, map_location="cpu"),
            path,
            optimizer=optimizer,
            scheduler=scheduler,
        )

    def resume_from_state(
        self,
        state: dict[str, Any],
        path: str | os.PathLike[str],
        *,
        optimizer: bool = True,
        scheduler: bool = True,
    ) -> None:
        """:meth:`resume` from a checkpoint already read from ``path``."""
        try:
            self.load_state_dict(state, optimizer=optimizer, scheduler=scheduler)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        self.last_checkpoint = Path(path)
        self._resumed = True

    # -- the run -----------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        """Train up to ``iterations`` meta-updates (from the resumed iteration, if any).

        Returns:
            The metrics of every meta-update run by this call (``meta_loss`` and the learner's
            metrics, e.g. ``loss`` and ``accuracy``).

        Raises:
            DivergenceError: on a NaN/inf meta-loss or gradient, naming the last checkpoint.
        """
        if self.distributed:
            dist.broadcast_parameters(self.learner)  # every rank starts from rank 0's state
        writes = self.run_dir is not None and self.is_main_process
        if writes:
            self._log = MetricsLog(self.run_dir, tensorboard=self.tensorboard)
            # A resumed run redoes what was logged after its checkpoint; a fresh one starts over.
            self._log.truncate_after(self.iteration if self._resumed else 0)
        bar = tqdm(
            total=self.iterations,
            initial=self.iteration,
            disable=not (self.progress and self.is_main_process),
            dynamic_ncols=True,
            desc="meta-train",
        )
        start = time.monotonic()
        try:
            while self.iteration < self.iterations:
                index = self.iteration
                metrics = self.step()
                self.history.append(metrics)
                if self._log is not None:
                    record = {**metrics, **self._extra, "time": time.monotonic() - start}
                    self._log.write("train", self.iteration, record)
                done = self.iteration == self.iterations
                if self.validation is not None and (
                    self.iteration % self.validate_every == 0 or done
                ):
                    self.validate()
                if self.iteration % self.checkpoint_every == 0 or done:
                    self._checkpoint()
                bar.update(1)
                if index % 20 == 0 or done:
                    shown = {k: f"{v:.4g}" for k, v in metrics.items() if k != "meta_loss"}
                    if self.best_score is not None:
                        shown["best"] = f"{self.best_score:.4g}"
                    bar.set_postfix(shown)
                if self.callback is not None:
                    self.callback(index, metrics)
            self._finish()
        finally:
            bar.close()
            if self._log is not None:
                self._log.close()
                self._log = None
        return self.history

    def _checkpoint(self) -> None:
        if self.run_dir is None:
            return
        if self.is_main_process:
            self.save_checkpoint()
        else:  # the main process writes it; the others need its name for error messages
            self.last_checkpoint = self.run_dir / CHECKPOINT_FILE

    def _finish(self) -> None:
        if self.validation is None and self.best_state is None:
            self.best_iteration = self.iteration
        elif self.best_state is None:
            warnings.warn(
                "no validation gave a finite score; the final state is the one tested",
                stacklevel=2,
            )
        if self.restore_best and self.best_state is not None:
            self.learner.load_state_dict(self.best_state)
        if self.test is not None:
            self.test_result = self.evaluate_test()
        if self._log is not None:
            self._log.close()  # flushed before the plots read it
            self._log = None
        if self.plot and self.run_dir is not None and self.is_main_process:
            from metalearn.training.plot import plot_run

            try:
                plot_run(self.run_dir)
            except ImportError as e:  # matplotlib is optional
                warnings.warn(f"no plots written: {e}", stacklevel=2)

    def evaluate_test(self, protocol: EvalProtocol | None = None) -> Evaluation:
        """Evaluate the learner's current state on the test set (``self.test`` by default).

        Writes ``test.json`` (every step count's mean and 95% CI) and a ``"test"`` record to the
        metrics log when the trainer has a run folder.
        """
        protocol = protocol or self.test
        if protocol is None:
            raise ValueError("no test task set: pass an EvalProtocol or give the trainer test=")
        result = protocol.run(self.learner)
        if self.run_dir is not None and self.is_main_process:
            summary = {
                "iteration": self.best_iteration if self.restore_best else self.iteration,
                "seed": protocol.seed,
                **result.to_dict(),
            }
            (self.run_dir / TEST_FILE).write_text(json.dumps(summary, indent=2) + "\n")
            if self._log is not None:
                self._log.write("test", self.iteration, _summary_record(result))
            else:
                log = MetricsLog(self.run_dir, tensorboard=False)
                log.write("test", self.iteration, _summary_record(result))
                log.close()
        return result

    def __repr__(self) -> str:
        return (
            f"Trainer(iteration={self.iteration}/{self.iterations}, "
            f"meta_batch_size={self.meta_batch_size}, run_dir={self.run_dir})"
        )
