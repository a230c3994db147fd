"""``metalearn.train``: the simple entry point to meta-training (a :class:`Trainer` underneath)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from metalearn.algorithms.base import Learner
from metalearn.tasks.batch import TaskSampler
from metalearn.training.trainer import Trainer

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
    **options: Any,
) -> list[dict[str, float]]:
    """Meta-train ``learner`` for ``iterations`` meta-batches drawn from ``sampler``.

    Each iteration samples ``meta_batch_size`` tasks from one generator seeded with ``seed``
    (so the same seed gives the same run on CPU), computes the meta-loss, backpropagates it and
    steps ``optimizer``. A NaN or infinite meta-loss or gradient stops the run with a
    :class:`~metalearn.training.DivergenceError`.

    Args:
        learner: the learner to train (its device decides where batches go).
        sampler: the meta-training task sampler.
        optimizer: a torch optimizer over ``learner.parameters()``.
        iterations: number of meta-updates.
        meta_batch_size: tasks per meta-update.
        seed: seed of the task stream.
        progress: show a tqdm progress bar with the running loss (and accuracy).
        callback: called as ``callback(iteration, metrics)`` after every meta-update
            (``iteration`` counts from 0).
        **options: any keyword argument of :class:`~metalearn.training.Trainer`: ``scheduler``,
            ``grad_clip``, ``amp``, ``validation``, ``validate_every``, ``test``, ``run_dir``,
            ``checkpoint_every``, ``distributed`` (data-parallel over a running
            ``torch.distributed`` process group; on by default when one is running) ...

    Returns:
        The metrics of every iteration (floats): ``meta_loss`` and the learner's metrics.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> maml = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        >>> opt = torch.optim.Adam(maml.parameters(), lr=1e-3)
        >>> history = ml.train(maml, ml.tasks.Sine(10, 10), opt, 10, 25, progress=False)
    """
    trainer = Trainer(
        learner,
        sampler,
        optimizer,
        iterations=iterations,
        meta_batch_size=meta_batch_size,
        seed=seed,
        progress=progress,
        callback=callback,
        **options,
    )
    return trainer.fit()
