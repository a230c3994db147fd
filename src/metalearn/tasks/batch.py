"""Task batches: the one data structure every sampler produces and every learner consumes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Split", "TaskBatch", "TaskSampler"]


class Split(NamedTuple):
    """Inputs ``x`` and targets ``y`` of a support or query set.

    In a :class:`TaskBatch` both carry a leading task dimension (``[tasks, shots, ...]``); the
    split of a single task (``batch.task(i).support``) has none (``[shots, ...]``).
    """

    x: Tensor
    y: Tensor

    def to(self, *args: Any, **kwargs: Any) -> Split:
        """Move ``x`` and ``y`` like :meth:`torch.Tensor.to`; integer targets keep their dtype."""
        return Split(self.x.to(*args, **kwargs), _move_targets(self.y, *args, **kwargs))


def _move_targets(y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    # A dtype change (e.g. .to(torch.float64)) must not turn class labels into floats.
    if y.is_floating_point():
        return y.to(*args, **kwargs)
    device = kwargs.get("device")
    for a in args:
        if isinstance(a, (str, torch.device)):
            device = a
        elif isinstance(a, Tensor):
            device = a.device
    return y if device is None else y.to(device)


@dataclass(frozen=True)
class TaskBatch:
    """A meta-batch of tasks: a support split to adapt on and a query split to evaluate on.

    ``support.x`` is ``[tasks, k_support, *input_shape]`` and ``support.y`` is
    ``[tasks, k_support, *target_shape]``; the query split is the same with ``k_query`` rows.
    Use :meth:`from_tensors` to build one from your own tensors: it checks the shapes.

    Args:
        support: the support split (``x``, ``y``) with a leading task dimension.
        query: the query split with the same number of tasks.
        info: optional per-task metadata (e.g. the amplitude and phase of sine tasks), each a
            tensor with a leading task dimension.

    Example:
        >>> import torch, metalearn as ml
        >>> sx, sy = torch.zeros(4, 5, 1), torch.zeros(4, 5, 1)
        >>> qx, qy = torch.zeros(4, 7, 1), torch.zeros(4, 7, 1)
        >>> b = ml.tasks.TaskBatch.from_tensors(sx, sy, qx, qy)
        >>> b.num_tasks, b.task(0).support.x.shape
        (4, torch.Size([5, 1]))
    """

    support: Split
    query: Split
    info: Mapping[str, Tensor] = field(default_factory=dict)

    @classmethod
    def from_tensors(
        cls,
        support_x: Tensor,
        support_y: Tensor,
        query_x: Tensor,
        query_y: Tensor,
        info: Mapping[str, Tensor] | None = None,
    ) -> TaskBatch:
        """Build a batch from ``[tasks, shots, ...]`` tensors, checking that the shapes agree.

        Raises:
            TypeError: if an argument is not a tensor.
            ValueError: naming the argument whose task or shot dimension disagrees.
        """
        named = {
            "support_x": support_x,
            "support_y": support_y,
            "query_x": query_x,
            "query_y": query_y,
        }
        for name, t in named.items():
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() < 2:
                raise ValueError(
                    f"{name} must have shape [tasks, shots, ...], got {tuple(t.shape)}; "
                    "add a task dimension with .unsqueeze(0) for a single task"
                )
        num_tasks = support_x.shape[0]
        for name, t in named.items():
            if t.shape[0] != num_tasks:
                raise ValueError(
                    f"{name} has {t.shape[0]} tasks but support_x has {num_tasks}: "
                    "every tensor needs the same leading task dimension"
                )
        for split, x, y in (("support", support_x, support_y), ("query", query_x, query_y)):
            if x.shape[1] != y.shape[1]:
                raise ValueError(
                    f"{split}_x has {x.shape[1]} shots per task but {split}_y has {y.shape[1]}"
                )
        if support_x.shape[2:] != query_x.shape[2:]:
            raise ValueError(
                f"support_x examples have shape {tuple(support_x.shape[2:])} but query_x "
                f"examples have shape {tuple(query_x.shape[2:])}"
            )
        if support_y.shape[2:] != query_y.shape[2:]:
            raise ValueError(
                f"support_y targets have shape {tuple(support_y.shape[2:])} but query_y "
                f"targets have shape {tuple(query_y.shape[2:])}"
            )
        return cls(Split(support_x, support_y), Split(query_x, query_y), dict(info or {}))

    @property
    def num_tasks(self) -> int:
        """Number of tasks in the batch (the leading dimension)."""
        return self.support.x.shape[0]

    def __len__(self) -> int:
        return self.num_tasks

    def task(self, i: int) -> TaskBatch:
        """Task ``i`` alone: its splits have no task dimension (``support.x``: ``[shots, ...]``)."""
        if not -self.num_tasks <= i < self.num_tasks:
            raise IndexError(f"task index {i} out of range for a batch of {self.num_tasks} tasks")
        return TaskBatch(
            Split(self.support.x[i], self.support.y[i]),
            Split(self.query.x[i], self.query.y[i]),
            {k: v[i] for k, v in self.info.items()},
        )

    def __iter__(self) -> Iterator[TaskBatch]:
        return (self.task(i) for i in range(self.num_tasks))

    def chunk(self, size: int) -> list[TaskBatch]:
        """Split into consecutive batches of at most ``size`` tasks (e.g. to bound memory)."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        out = []
        for start in range(0, self.num_tasks, size):
            sl = slice(start, start + size)
            out.append(
                TaskBatch(
                    Split(self.support.x[sl], self.support.y[sl]),
                    Split(self.query.x[sl], self.query.y[sl]),
                    {k: v[sl] for k, v in self.info.items()},
                )
            )
        return out

    @classmethod
    def concat(cls, batches: list[TaskBatch]) -> TaskBatch:
        """Concatenate batches along the task dimension (their shot counts must agree)."""
        if not batches:
            raise ValueError("concat needs at least one TaskBatch")
        keys = set(batches[0].info)
        if any(set(b.info) != keys for b in batches):
            raise ValueError("cannot concatenate batches whose info keys differ")
        return cls.from_tensors(
            torch.cat([b.support.x for b in batches]),
            torch.cat([b.support.y for b in batches]),
            torch.cat([b.query.x for b in batches]),
            torch.cat([b.query.y for b in batches]),
            info={k: torch.cat([b.info[k] for b in batches]) for k in keys},
        )

    def to(self, *args: Any, **kwargs: Any) -> TaskBatch:
        """Move every tensor like :meth:`torch.Tensor.to` (integer labels keep their dtype)."""
        return TaskBatch(
            self.support.to(*args, **kwargs),
            self.query.to(*args, **kwargs),
            {k: _move_targets(v, *args, **kwargs) for k, v in self.info.items()},
        )


@runtime_checkable
class TaskSampler(Protocol):
    """Anything with ``sample(num_tasks, generator=None) -> TaskBatch`` is a task sampler.

    A sampler may also offer ``sample_chunks(num_tasks, chunk_size, generator=None)``: an
    iterator over the same tasks in consecutive batches of ``chunk_size``, each read only when
    reached, that leaves ``generator`` as ``sample`` does. ``Trainer(chunk_size=...)`` uses it
    so that one chunk's data is in memory at a time (:meth:`FewShot.sample_chunks
    <metalearn.tasks.FewShot.sample_chunks>`).
    """

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch: ...
