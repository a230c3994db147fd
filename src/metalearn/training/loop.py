"""A plain meta-training loop: sample a meta-batch, meta-loss, backward, optimizer step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from metalearn.algorithms.base import Learner
from metalearn.tasks.batch import TaskSampler

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
        callback: called as ``callback(iteration, metrics)`` after every meta-update.

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
    history: list[dict[str, float]] = []
    bar = tqdm(range(iterations), disable=not progress, dynamic_ncols=True, desc="meta-train")
    learner.train()
    for it in bar:
        batch = sampler.sample(meta_batch_size, generator=generator)
        batch = batch.to(device=first.device, dtype=first.dtype)
        out = learner(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        metrics = {"meta_loss": out.loss.item(), **{k: v.item() for k, v in out.metrics.items()}}
        history.append(metrics)
        if progress and (it % 20 == 0 or it == iterations - 1):
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k != "meta_loss"})
        if callback is not None:
            callback(it, metrics)
    return history
