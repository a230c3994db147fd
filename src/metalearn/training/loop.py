"""A plain meta-training loop: sample a meta-batch, meta-loss, backward, optimizer step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from metalearn.algorithms.base import Learner
from metalearn.tasks.batch import TaskSampler
from metalearn.training import distributed as dist_utils

__all__ = ["train"]


def train(
    learner: Learner,
    sampler: TaskSampler,
    optimizer: torch.optim.Optimizer,
    iterations: int,
    meta_batch_size: int,
    *,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    distributed: bool | None = None,
) -> list[dict[str, float]]:
    """Meta-train ``learner`` for ``iterations`` meta-batches drawn from ``sampler``.

    Each iteration samples ``meta_batch_size`` tasks from one generator seeded with ``seed``
    (so the same seed gives the same run on CPU), computes the meta-loss, backpropagates it and
    steps ``optimizer``.

    Args:
        learner: the learner to train (its device decides where batches go).
        sampler: the meta-training task sampler.
        optimizer: a torch optimizer over ``learner.parameters()``.
        iterations: number of meta-updates.
        meta_batch_size: tasks per meta-update.
        seed: seed of the task stream.
        progress: show a tqdm progress bar with the running loss (and accuracy).
        callback: called as ``callback(iteration, metrics)`` after every meta-update (on
            every rank when distributed, with the same global metrics: guard writes with
            ``metalearn.training.is_main_process()``).
        distributed: data-parallel over the ranks of the running ``torch.distributed``
            process group (see ``docs/distributed.md``): rank 0's weights are broadcast,
            each rank samples its share of the meta-batch from the rank-invariant
            :class:`~metalearn.training.distributed.TaskStream`, gradients and metrics are
            averaged, and only rank 0 shows progress. ``None`` (default) turns it on when a
            process group is running; ``True`` without one uses the same task stream in a
            single process (so 1 and N ranks give the same run); ``False`` samples every
            meta-batch from one generator seeded with ``seed``.

    Returns:
        The metrics of every iteration (floats).

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> maml = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        >>> opt = torch.optim.Adam(maml.parameters(), lr=1e-3)
        >>> history = ml.train(maml, ml.tasks.Sine(10, 10), opt, 10, 25, progress=False)
    """
    for name, value in (("iterations", iterations), ("meta_batch_size", meta_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    first = next(learner.parameters())
    generator = torch.Generator().manual_seed(seed)
    # Distributed hook (issue 7): rank-invariant task stream, rank 0's initial weights.
    if distributed is None:
        distributed = dist_utils.is_distributed()
    stream = None
    if distributed:
        stream = dist_utils.TaskStream(sampler, meta_batch_size, seed=seed)
        dist_utils.broadcast_parameters(learner)
        progress = progress and dist_utils.is_main_process()
    history: list[dict[str, float]] = []
    bar = tqdm(range(iterations), disable=not progress, dynamic_ncols=True, desc="meta-train")
    learner.train()
    for it in bar:
        if stream is not None:
            batch = stream.sample(it)
        else:
            batch = sampler.sample(meta_batch_size, generator=generator)
        batch = batch.to(device=first.device, dtype=first.dtype)
        out = learner(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if stream is not None:
            dist_utils.average_gradients(learner)
        optimizer.step()
        metrics = {"meta_loss": out.loss.item(), **{k: v.item() for k, v in out.metrics.items()}}
        if stream is not None:
            metrics = dist_utils.average_metrics(metrics)
        history.append(metrics)
        if progress and (it % 20 == 0 or it == iterations - 1):
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k != "meta_loss"})
        if callback is not None:
            callback(it, metrics)
    return history
