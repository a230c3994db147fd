"""The meta-training task stream: the same tasks for any number of ranks, and on resume.

Task ``j`` of meta-batch ``t`` depends only on ``(seed, t, j)``, so a run launched on 1 or N
ranks, or resumed at iteration ``t``, trains on exactly the same tasks (``docs/distributed.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from metalearn._checks import check_int
from metalearn.tasks.batch import TaskBatch, TaskSampler
from metalearn.training import distributed
from metalearn.training.evaluate import sample_fixed

__all__ = ["TaskStream", "train_task_seed"]


def train_task_seed(seed: int, iteration: int, index: int) -> int:
    """Seed of task ``index`` of meta-batch ``iteration`` in the training stream.

    A hash of ``(seed, iteration, index)``: independent of the world size, the batch
    size of any other iteration, and of the evaluation task seeds.
    """
    text = f"metalearn.train:{seed}:{iteration}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class TaskStream:
    """The meta-training task stream, cut into equal contiguous shards, one per rank.

    Task ``j`` of meta-batch ``t`` is drawn with its own generator seeded by
    :func:`train_task_seed` ``(seed, t, j)``, so the global meta-batch is the same for any
    number of ranks, and resuming at iteration ``t`` needs no sampler state. Rank ``r`` of
    ``W`` takes tasks ``r * B/W .. (r + 1) * B/W - 1``.

    Args:
        sampler: any task sampler (``sample(num_tasks, generator) -> TaskBatch``).
        meta_batch_size: tasks per meta-update over all ranks; must divide by the world size.
        seed: seed of the stream.
        rank: this process's rank (default: from the process group, 0 if none).
        world_size: number of ranks (default: from the process group, 1 if none).

    Example:
        >>> import metalearn as ml
        >>> stream = TaskStream(ml.tasks.Sine(10, 10), meta_batch_size=4, rank=1, world_size=2)
        >>> stream.sample(0).num_tasks          # tasks 2 and 3 of meta-batch 0
        2
    """

    def __init__(
        self,
        sampler: TaskSampler,
        meta_batch_size: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(f"sampler must have a sample(num_tasks, generator) method: {sampler!r}")
        size = distributed.world_size() if world_size is None else world_size
        me = distributed.rank() if rank is None else rank
        meta_batch_size = check_int("meta_batch_size", meta_batch_size, 1)
        size = check_int("world_size", size, 1)
        if check_int("rank", me, 0) >= size:
            raise ValueError(f"rank must be an int in [0, {size}), got {me!r}")
        seed = check_int("seed", seed)
        if meta_batch_size % size:
            lower = max(size, meta_batch_size - meta_batch_size % size)
            raise ValueError(
                f"meta_batch_size={meta_batch_size} must be divisible by the world size {size} "
                f"(every rank takes an equal share of the meta-batch); use e.g. {lower} or "
                f"{lower + size}"
            )
        self.sampler = sampler
        self.meta_batch_size = meta_batch_size
        self.seed = seed
        self.rank = me
        self.world_size = size

    @property
    def local_batch_size(self) -> int:
        """Tasks each rank computes per meta-update."""
        return self.meta_batch_size // self.world_size

    def indices(self, iteration: int) -> range:
        """Indices within the global meta-batch of this rank's tasks (the same for every t)."""
        check_int("iteration", iteration, 0)
        start = self.rank * self.local_batch_size
        return range(start, start + self.local_batch_size)

    def sample(self, iteration: int) -> TaskBatch:
        """This rank's share of meta-batch ``iteration``."""
        seeds = [train_task_seed(self.seed, iteration, j) for j in self.indices(iteration)]
        return sample_fixed(self.sampler, seeds)

    def sample_chunks(self, iteration: int, chunk_size: int) -> Iterator[TaskBatch]:
        """This rank's share of meta-batch ``iteration``, ``chunk_size`` tasks at a time.

        Each chunk is drawn when the iterator reaches it; concatenated, the chunks are
        :meth:`sample` ``(iteration)``.
        """
        check_int("chunk_size", chunk_size, 1)
        seeds = [train_task_seed(self.seed, iteration, j) for j in self.indices(iteration)]
        return (
            sample_fixed(self.sampler, seeds[start : start + chunk_size])
            for start in range(0, len(seeds), chunk_size)
        )

    def global_batch(self, iteration: int) -> TaskBatch:
        """All ``meta_batch_size`` tasks of meta-batch ``iteration`` (every rank's shares)."""
        self.indices(iteration)
        seeds = [train_task_seed(self.seed, iteration, j) for j in range(self.meta_batch_size)]
        return sample_fixed(self.sampler, seeds)

    def __repr__(self) -> str:
        return (
            f"TaskStream({self.sampler!r}, meta_batch_size={self.meta_batch_size}, "
            f"seed={self.seed}, rank={self.rank}, world_size={self.world_size})"
        )
