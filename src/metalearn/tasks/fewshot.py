"""N-way K-shot classification tasks over a dataset of labelled classes."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from metalearn._checks import check_int
from metalearn.tasks.batch import TaskBatch

__all__ = ["Augment", "FewShot"]

#: ``augment(images, generator) -> images`` with images ``[n_way, k_shot + k_query, C, H, W]``
#: of one task, grouped by class (so a transform can act per class, per image or per task).
Augment = Callable[[Tensor, "torch.Generator | None"], Tensor]


class FewShot:
    """N-way K-shot classification tasks (Vinyals et al. 2016; Finn et al. 2017).

    A task draws ``n_way`` distinct classes, gives them the labels ``0..n_way-1`` in a fresh
    random order, and draws ``k_shot + k_query`` distinct images of each class: the first
    ``k_shot`` form the support split, the rest the query split. Within a split the examples
    are grouped by label (label 0's shots first); ``info["classes"]`` (``[tasks, n_way]``) holds
    the dataset class of each label. All randomness comes from ``generator``, so the same
    generator state gives the same tasks, and :func:`metalearn.evaluate` (one seeded
    ``sample(1, generator=...)`` per test task) gets a fixed evaluation task set.

    Args:
        dataset: a :class:`~metalearn.datasets.ClassDataset`, e.g.
            :class:`~metalearn.datasets.MiniImagenet` or :class:`~metalearn.datasets.Omniglot`
            (``num_classes``, ``class_sizes`` and ``gather(classes, indices)``).
        n_way: classes per task (N).
        k_shot: support images per class (K).
        k_query: query images per class.
        augment: optional per-task hook ``augment(images, generator) -> images`` applied to
            each task's ``[n_way, k_shot + k_query, C, H, W]`` images before the split (draw
            any randomness from ``generator`` to stay reproducible).
        groups: optional group name of every class (e.g. ``dataset.class_groups``: Omniglot's
            alphabets, tieredImageNet's categories, an assay family). A task then first picks
            one group uniformly at random among those with at least ``n_way`` classes, and
            draws all its classes from it (Lake et al.'s within-alphabet tasks). Groups with
            fewer classes are left out with a warning naming them.

    Raises:
        ValueError: naming the argument, if ``n_way`` exceeds the number of classes (of every
            group) or ``k_shot + k_query`` exceeds the images of a class.

    Example:
        >>> import numpy as np, torch, metalearn as ml
        >>> images = ml.datasets.ImageClasses.from_labels(
        ...     np.zeros((200, 28, 28), np.uint8), np.repeat(np.arange(10), 20))
        >>> tasks = ml.tasks.FewShot(images, n_way=5, k_shot=1, k_query=15)
        >>> batch = tasks.sample(4, generator=torch.Generator().manual_seed(0))
        >>> batch.support.x.shape, batch.query.y.shape
        (torch.Size([4, 5, 1, 28, 28]), torch.Size([4, 75]))

    Reference:
        Vinyals et al. Matching Networks for One Shot Learning. NeurIPS 2016;
        Finn, Abbeel, Levine. Model-Agnostic Meta-Learning. ICML 2017.
    """

    def __init__(
        self,
        dataset: object,
        n_way: int,
        k_shot: int,
        k_query: int,
        augment: Augment | None = None,
        groups: Sequence[str] | None = None,
    ) -> None:
        for attr in ("num_classes", "class_sizes"):
            if not hasattr(dataset, attr):
                raise TypeError(
                    f"dataset must provide num_classes, class_sizes and gather() (see "
                    f"metalearn.datasets.ClassDataset); {type(dataset).__name__} lacks {attr}"
                )
        if not (hasattr(dataset, "gather") or hasattr(dataset, "images")):
            raise TypeError(f"dataset {type(dataset).__name__} has neither gather() nor images()")
        self.n_way = check_int("n_way", n_way, 1)
        self.k_shot = check_int("k_shot", k_shot, 1)
        self.k_query = check_int("k_query", k_query, 1)
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable, got {type(augment).__name__}")
        num_classes = int(dataset.num_classes)
        if n_way > num_classes:
            raise ValueError(
                f"n_way={n_way} is larger than the number of classes in the dataset "
                f"({num_classes}); use n_way <= {num_classes}"
            )
        sizes = np.asarray(dataset.class_sizes, dtype=np.int64)
        if sizes.shape != (num_classes,):
            raise ValueError(
                f"dataset.class_sizes has shape {sizes.shape}, expected ({num_classes},)"
            )
        need = k_shot + k_query
        if (sizes < need).any():
            small = int(np.argmin(sizes))
            names = getattr(dataset, "class_names", None)
            label = repr(names[small]) if names is not None else str(small)
            raise ValueError(
                f"k_shot + k_query = {k_shot} + {k_query} = {need} is more than the "
                f"{sizes[small]} images of class {label}; lower k_shot or k_query"
            )
        self.dataset = dataset
        self.augment = augment
        self._sizes = torch.from_numpy(sizes)
        self._uniform = bool((sizes == sizes[0]).all())
        self._max_size = int(sizes.max())
        self._groups = None if groups is None else _group_table(groups, num_classes, n_way)

    @property
    def num_classes(self) -> int:
        """Number of classes tasks are drawn from."""
        return int(self._sizes.numel())

    def _gather(self, classes: Tensor, indices: Tensor) -> Tensor:
        gather = getattr(self.dataset, "gather", None)
        if gather is not None:
            return gather(classes, indices)
        return torch.stack(
            [self.dataset.images(int(c), i) for c, i in zip(classes, indices, strict=True)]
        )

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``num_tasks`` tasks; the same generator state gives the same tasks.

        Returns:
            A :class:`~metalearn.tasks.TaskBatch`: support ``x`` ``[num_tasks, n_way * k_shot,
            C, H, W]`` float32 and ``y`` int64 ``[num_tasks, n_way * k_shot]`` with labels in
            ``0..n_way-1``; the query split likewise with ``k_query``; ``info["classes"]``.
        """
        check_int("num_tasks", num_tasks, 1)
        return self._materialise(*self._draw(num_tasks, generator), 0, num_tasks, generator)

    def sample_chunks(
        self, num_tasks: int, chunk_size: int, generator: torch.Generator | None = None
    ) -> Iterator[TaskBatch]:
        """The tasks of ``sample(num_tasks, generator)``, ``chunk_size`` tasks at a time.

        The classes and images of every task are drawn now, as :meth:`sample` draws them; each
        chunk's images are read (and augmented) only when the iterator reaches it, so a
        meta-batch's images need not all be in memory at once
        (:class:`~metalearn.training.Trainer` with ``chunk_size`` uses this). The chunks,
        concatenated, are exactly ``sample(num_tasks, generator)``'s batch, and ``generator``
        ends in the same state, provided nothing else draws from it before the iterator is
        exhausted.

        Returns:
            An iterator over ``ceil(num_tasks / chunk_size)`` task batches.

        Example:
            >>> import numpy as np, torch, metalearn as ml
            >>> images = ml.datasets.ImageClasses.from_labels(
            ...     np.zeros((200, 28, 28), np.uint8), np.repeat(np.arange(10), 20))
            >>> tasks = ml.tasks.FewShot(images, n_way=5, k_shot=1, k_query=15)
            >>> [c.num_tasks for c in tasks.sample_chunks(5, 2, torch.Generator())]
            [2, 2, 1]
        """
        check_int("num_tasks", num_tasks, 1)
        check_int("chunk_size", chunk_size, 1)
        drawn = self._draw(num_tasks, generator)  # now, not when the iterator first runs
        return (
            self._materialise(*drawn, start, min(start + chunk_size, num_tasks), generator)
            for start in range(0, num_tasks, chunk_size)
        )

    def _draw(self, t: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        # Every task's classes [t, n_way] and image indices [t * n_way, k_shot + k_query].
        n, need = self.n_way, self.k_shot + self.k_query
        # The n_way smallest of one uniform key per class are a uniformly random ordered
        # sample of classes; the order gives the labels, so labels are freshly shuffled.
        # (topk of the keys is several times cheaper than a full argsort.)
        if self._groups is None:
            keys = torch.rand(t, self.num_classes, generator=generator)
            classes = keys.topk(n, dim=1, largest=False).indices
        else:
            table, group_sizes, _ = self._groups
            group = torch.randint(len(group_sizes), (t,), generator=generator)
            keys = torch.rand(t, table.shape[1], generator=generator)
            keys.masked_fill_(torch.arange(table.shape[1]) >= group_sizes[group, None], 2.0)
            classes = table[group].gather(1, keys.topk(n, dim=1, largest=False).indices)
        flat = classes.reshape(-1)
        keys = torch.rand(t * n, self._max_size, generator=generator)
        if not self._uniform:  # never pick past the end of a smaller class
            past_end = torch.arange(self._max_size) >= self._sizes[flat].unsqueeze(1)
            keys.masked_fill_(past_end, 2.0)
        return classes, keys.topk(need, dim=1, largest=False).indices

    def _materialise(
        self,
        classes: Tensor,
        indices: Tensor,
        start: int,
        stop: int,
        generator: torch.Generator | None,
    ) -> TaskBatch:
        # Tasks start..stop-1 of the drawn ones: their images read (and augmented) now.
        t, n, need = stop - start, self.n_way, self.k_shot + self.k_query
        classes = classes[start:stop]
        flat = classes.reshape(-1)
        indices = indices[start * n : stop * n]
        if self.augment is None:
            # Gather the two splits separately: each lands directly in its final layout.
            support_x = self._gather(flat, indices[:, : self.k_shot])
            query_x = self._gather(flat, indices[:, self.k_shot :])
            shape = support_x.shape[2:]
            support_x = support_x.view(t, n * self.k_shot, *shape)
            query_x = query_x.view(t, n * self.k_query, *shape)
        else:
            images = self._gather(flat, indices)  # [t * n, need, C, H, W]
            images = images.view(t, n, need, *images.shape[2:])
            out = [self.augment(images[i], generator) for i in range(t)]
            for o in out:
                if not isinstance(o, Tensor) or o.shape[:2] != (n, need):
                    raise ValueError(
                        f"augment must return a tensor [n_way={n}, k_shot + k_query={need}, "
                        f"...], got {getattr(o, 'shape', type(o).__name__)}"
                    )
            images = torch.stack(out)
            shape = images.shape[3:]
            support_x = images[:, :, : self.k_shot].reshape(t, n * self.k_shot, *shape)
            query_x = images[:, :, self.k_shot :].reshape(t, n * self.k_query, *shape)
        labels = torch.arange(n)
        support_y = labels.repeat_interleave(self.k_shot).expand(t, -1).clone()
        query_y = labels.repeat_interleave(self.k_query).expand(t, -1).clone()
        return TaskBatch.from_tensors(
            support_x, support_y, query_x, query_y, info={"classes": classes.clone()}
        )

    def __repr__(self) -> str:
        groups = "" if self._groups is None else f", groups={len(self._groups[2])}"
        return (
            f"FewShot(n_way={self.n_way}, k_shot={self.k_shot}, k_query={self.k_query}, "
            f"classes={self.num_classes}{groups}, augment={self.augment is not None})"
        )

    @property
    def groups(self) -> list[str] | None:
        """The groups tasks are drawn from (those with at least ``n_way`` classes), or None."""
        return None if self._groups is None else list(self._groups[2])


def _group_table(
    groups: Sequence[str], num_classes: int, n_way: int
) -> tuple[Tensor, Tensor, list[str]]:
    """``(class table [G, max], sizes [G], names)`` of the groups with >= ``n_way`` classes."""
    if isinstance(groups, str) or len(groups) != num_classes:
        raise ValueError(
            f"groups must name the group of each of the {num_classes} classes (e.g. "
            f"dataset.class_groups), got {groups if isinstance(groups, str) else len(groups)}"
        )
    members: dict[str, list[int]] = {}
    for c, g in enumerate(groups):
        members.setdefault(str(g), []).append(c)
    usable = {g: cs for g, cs in members.items() if len(cs) >= n_way}
    small = sorted(set(members) - set(usable))
    if not usable:
        raise ValueError(
            f"no group has n_way={n_way} classes (largest: "
            f"{max(len(cs) for cs in members.values())}); lower n_way or draw from all classes"
        )
    if small:
        shown = ", ".join(f"{g} ({len(members[g])})" for g in small[:10])
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        warnings.warn(
            f"{len(small)} of {len(members)} groups have fewer than n_way={n_way} classes and "
            f"are left out of within-group tasks: {shown}{more}",
            stacklevel=3,
        )
    names = sorted(usable)
    width = max(len(usable[g]) for g in names)
    table = torch.zeros(len(names), width, dtype=torch.int64)
    for i, g in enumerate(names):
        table[i, : len(usable[g])] = torch.tensor(usable[g])
    sizes = torch.tensor([len(usable[g]) for g in names])
    return table, sizes, names
