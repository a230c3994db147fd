"""Few-shot tasks from a wide label matrix: one column per assay, one task per assay.

The shape of multi-assay screens (Tox21, ToxCast, MUV, PCBA): one row per compound, one column
per assay, each cell a class label (1 active, 0 inactive) or missing (not measured).
:class:`MultiAssay` splits the assays into meta-train / val / test by name and samples tasks
whose support set holds ``k_shot`` compounds of every class of one assay, and whose query set
holds ``k_query`` more per class or, for evaluation, all other labelled compounds of the assay.
The feature matrix is shared by all assays (one copy, indexed per task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metalearn._checks import check_int
from metalearn.tasks._tables import SplitSamplers, listing, plural, warn_user
from metalearn.tasks.batch import TaskBatch
from metalearn.tasks.grouped import SPLITS, _as_float, _to_numpy

__all__ = ["AssaySampler", "MultiAssay"]


class AssaySampler:
    """Tasks from some assays of a :class:`MultiAssay` table (a split, or one assay).

    Each task picks one of the sampler's assays uniformly at random (with replacement), then
    ``n_way`` of its classes (all of them for binary labels, kept in sorted order so that label
    1 is always the larger class value, e.g. "active"), then ``k_shot`` support compounds of
    every class at random; the query set is ``k_query`` other compounds of every class or, with
    ``k_query=None``, every other compound the assay labels with one of those classes (the
    natural, imbalanced mix the ROC-AUC protocol scores). Support and query never share a
    compound.

    Get one from :class:`MultiAssay`: ``data.train``, ``data.val``, ``data.test``,
    ``data.split(name)`` or ``data.assay("SR-HSE")``.

    Attributes:
        name: the split name, or the assay's name for a one-assay sampler.
        assays: the names of the assays tasks are drawn from.
    """

    def __init__(self, owner: MultiAssay, name: str, indices: list[int]) -> None:
        self._owner = owner
        self.name = name
        self._indices = indices
        self.assays: tuple[str, ...] = tuple(owner.assays[i] for i in indices)

    @property
    def k_shot(self) -> int:
        return self._owner.k_shot

    @property
    def k_query(self) -> int | None:
        return self._owner.k_query

    def __len__(self) -> int:
        return len(self._indices)

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``num_tasks`` tasks; the same generator state gives the same tasks.

        Returns:
            A :class:`TaskBatch`: ``support.x`` is ``[num_tasks, n_way * k_shot, features]``,
            ``support.y`` int64 ``[num_tasks, n_way * k_shot]`` in ``0..n_way-1``; the query
            likewise with ``n_way * k_query`` rows (or all other labelled rows of the assay).
            ``info`` holds ``"assay"`` (index into ``data.assays``), ``"classes"`` (indices
            into ``data.classes``), ``"support_rows"`` and ``"query_rows"`` (table rows).

        Raises:
            ValueError: if ``num_tasks`` is not a positive int, the sampler has no usable
                assay, or ``k_query=None`` and the tasks come from assays with different numbers
                of labelled compounds (sample one assay at a time: ``data.assay(name)``).
        """
        check_int("num_tasks", num_tasks, 1)
        if not self._indices:
            raise ValueError(
                f"cannot sample tasks from {self.name!r}: it has no usable assay (name assays "
                "for it in split=, or see data.skipped)"
            )
        owner = self._owner
        picks = torch.randint(len(self._indices), (num_tasks,), generator=generator)
        tasks = [owner._task(self._indices[p], generator) for p in picks.tolist()]
        sizes = {len(t[1]) for t in tasks}
        if len(sizes) > 1:
            raise ValueError(
                f"k_query=None takes all other labelled compounds of an assay, and the assays "
                f"drawn have {sorted(sizes)} of them: tasks of different assays cannot share a "
                "batch. Sample one assay at a time (data.assay(name)) or set k_query"
            )
        s_rows = torch.stack([t[0] for t in tasks])
        q_rows = torch.stack([t[1] for t in tasks])
        sy = torch.stack([t[2] for t in tasks])
        qy = torch.stack([t[3] for t in tasks])
        info = {
            "assay": torch.tensor([self._indices[p] for p in picks.tolist()]),
            "classes": torch.stack([t[4] for t in tasks]),
            "support_rows": s_rows,
            "query_rows": q_rows,
        }
        return TaskBatch.from_tensors(owner._x[s_rows], sy, owner._x[q_rows], qy, info=info)

    def __repr__(self) -> str:
        return (
            f"AssaySampler({self.name!r}, assays={len(self.assays)}, k_shot={self.k_shot}, "
            f"k_query={self.k_query})"
        )


class MultiAssay(SplitSamplers[AssaySampler]):
    """Few-shot tasks from a wide label matrix with missing values: one task per assay.

    Row ``i`` is a compound with features ``x[i]``; column ``j`` of ``labels`` is assay
    ``assays[j]``; a cell is a class label (e.g. 1 active, 0 inactive) or NaN (not measured).
    Assays are split into meta-train / val / test **by name** (``split``), so no test assay is
    seen in meta-training. A task is one assay: ``k_shot`` labelled compounds of each of
    ``n_way`` classes as support (the standard few-shot protocol on Tox21: K actives and K
    inactives) and, as query, ``k_query`` more per class or, with ``k_query=None``, all the
    assay's other labelled compounds.

    An assay with fewer than ``k_shot + k_query`` (``k_shot + 1`` when ``k_query=None``)
    compounds in fewer than ``n_way`` classes cannot make a task: it is skipped with a warning
    naming it (``data.skipped`` says why). Features are used as given (fingerprint bits need no
    scaling).

    Args:
        x: ``[compounds, features]`` numbers (numpy array, tensor or list), e.g. fingerprints
            from :func:`metalearn.chem.morgan_fingerprints`.
        labels: ``[compounds, assays]`` class labels as numbers, NaN where not measured.
        assays: the name of every column of ``labels``.
        k_shot: support compounds per class, >= 1.
        k_query: query compounds per class (>= 1), or ``None`` for all other labelled compounds
            of the assay (use a one-assay sampler, :meth:`assay`, to batch such tasks).
        split: ``{"train": [names], "val": [names], "test": [names]}`` ("val" and "test"
            optional); assays listed nowhere are left out with a warning.
        n_way: classes per task, default all distinct label values (2 for active/inactive).
        dtype: floating dtype of the sampled features.

    Example:
        >>> import numpy as np, torch, metalearn as ml
        >>> rng = np.random.default_rng(0)
        >>> x = rng.random((200, 16))
        >>> labels = (rng.random((200, 4)) < 0.3).astype(float)
        >>> labels[rng.random((200, 4)) < 0.2] = np.nan                 # not measured
        >>> data = ml.tasks.MultiAssay(x, labels, ["a", "b", "c", "d"], k_shot=5, k_query=10,
        ...                            split={"train": ["a", "b", "c"], "test": ["d"]})
        >>> batch = data.train.sample(4, generator=torch.Generator().manual_seed(0))
        >>> batch.support.y.shape, batch.query.x.shape
        (torch.Size([4, 10]), torch.Size([4, 20, 16]))

    Reference:
        Altae-Tran, Ramsundar, Pappu, Pande. Low Data Drug Discovery with One-Shot Learning.
        ACS Central Science 3(4), 2017 (Tox21: meta-train on 9 assays, test on 3).
    """

    def __init__(
        self,
        x: Any,
        labels: Any,
        assays: Sequence[str],
        k_shot: int,
        k_query: int | None,
        split: Mapping[str, Sequence[str]],
        n_way: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.k_shot = check_int("k_shot", k_shot, 1)
        self.k_query = None if k_query is None else check_int("k_query", k_query, 1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        x_np, y_np = self._check_arrays(x, labels, assays)
        observed = y_np[~np.isnan(y_np)]
        #: The distinct label values, sorted; class index ``c`` of a task means ``classes[c]``.
        self.classes: list[float] = np.unique(observed).tolist()
        if len(self.classes) < 2:
            raise ValueError(
                f"labels hold {plural(len(self.classes), 'distinct value')} "
                f"({self.classes}); a task needs at least two classes (e.g. 1 active, 0 inactive)"
            )
        self.n_way = len(self.classes) if n_way is None else check_int("n_way", n_way, 2)
        if self.n_way > len(self.classes):
            raise ValueError(
                f"n_way={self.n_way} but labels have only {len(self.classes)} classes "
                f"{self.classes}"
            )
        codes = np.searchsorted(self.classes, np.nan_to_num(y_np, nan=self.classes[0]))
        #: per assay, per class: the rows labelled with that class.
        self._class_rows: list[list[Tensor]] = [
            [
                torch.from_numpy(np.flatnonzero((codes[:, j] == c) & ~np.isnan(y_np[:, j])))
                for c in range(len(self.classes))
            ]
            for j in range(len(self.assays))
        ]
        self._x = torch.from_numpy(x_np).to(dtype)
        self.dtype = dtype
        assignment = self._assign(split)
        #: assay name -> why it was skipped (too few labelled compounds).
        self.skipped: dict[str, str] = {}
        usable = {name: [j for j in assignment[name] if self._usable(j)] for name in SPLITS}
        if self.skipped:
            listed = [f"{a!r} ({why})" for a, why in self.skipped.items()]
            warn_user(
                f"MultiAssay: skipped {plural(len(self.skipped), 'assay')} with fewer than "
                f"{self.n_way} classes of {self._need()}+ labelled compounds: "
                f"{listing(listed, show=str)}; lower k_shot/k_query to keep them"
            )
        if not usable["train"]:
            raise ValueError("no meta-train assay can make a task; lower k_shot or k_query")
        #: The assays of every split (usable ones only).
        self.split_assays = {n: tuple(self.assays[j] for j in usable[n]) for n in SPLITS}
        self._samplers = {name: AssaySampler(self, name, usable[name]) for name in SPLITS}

    # -- construction ------------------------------------------------------------------------
    def _check_arrays(
        self, x: Any, labels: Any, assays: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        x_np = _as_float(_to_numpy(x, "x"), "x")
        y_np = _as_float(_to_numpy(labels, "labels"), "labels")
        if x_np.ndim != 2:
            raise ValueError(f"x must be [compounds, features], got shape {tuple(x_np.shape)}")
        if y_np.ndim == 1:
            y_np = y_np[:, None]
        if y_np.ndim != 2:
            raise ValueError(f"labels must be [compounds, assays], got {tuple(y_np.shape)}")
        if len(x_np) != len(y_np):
            raise ValueError(
                f"x and labels need one row per compound, got {len(x_np)} and {len(y_np)} rows"
            )
        if isinstance(assays, str):
            raise TypeError(f"assays must be a list of names, got the string {assays!r}")
        #: The assay names, one per column of ``labels``.
        self.assays: list[str] = [str(a) for a in assays]
        if len(self.assays) != y_np.shape[1]:
            raise ValueError(
                f"assays names {len(self.assays)} columns but labels has {y_np.shape[1]}"
            )
        if len(set(self.assays)) != len(self.assays):
            raise ValueError(f"assays has duplicated names: {self.assays}")
        bad = ~np.isfinite(x_np)
        if bad.any():
            raise ValueError(
                f"x has NaN or infinite values in {plural(int(bad.any(1).sum()), 'row')} (first "
                f"at row {int(np.flatnonzero(bad.any(1))[0])}); drop or impute those compounds"
            )
        if np.isinf(y_np).any():
            raise ValueError("labels has infinite values; use NaN for 'not measured'")
        return x_np, y_np

    def _assign(self, split: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
        if not isinstance(split, Mapping):
            raise TypeError(
                "split must be a dict {'train': [assay names], 'test': [...]}, got "
                f"{type(split).__name__}"
            )
        unknown = set(split) - set(SPLITS)
        if unknown:
            raise ValueError(f"split has unknown keys {sorted(unknown)}; use {SPLITS}")
        if not split.get("train"):
            raise ValueError("split must name at least one assay for 'train'")
        index = {a: j for j, a in enumerate(self.assays)}
        out: dict[str, list[int]] = {name: [] for name in SPLITS}
        owner: dict[str, str] = {}
        for name in SPLITS:
            listed = split.get(name, [])
            if isinstance(listed, str):
                raise TypeError(f"split[{name!r}] must be a list of assay names, got {listed!r}")
            missing = [a for a in listed if a not in index]
            if missing:
                raise ValueError(
                    f"split[{name!r}] names assays that are not columns of labels: "
                    f"{listing(missing)}; the assays are {listing(self.assays)}"
                )
            for a in listed:
                if a in owner:
                    raise ValueError(f"assay {a!r} is in split {owner[a]!r} and in {name!r}")
                owner[a] = name
                out[name].append(index[a])
        left_out = [a for a in self.assays if a not in owner]
        if left_out:
            warn_user(f"MultiAssay: {plural(len(left_out), 'assay')} in no split: {left_out}")
        return out

    def _need(self) -> int:
        return self.k_shot + (1 if self.k_query is None else self.k_query)

    def _usable(self, j: int) -> bool:
        sizes = [len(r) for r in self._class_rows[j]]
        if sum(n >= self._need() for n in sizes) >= self.n_way:
            return True
        counts = ", ".join(f"{c:g}: {n}" for c, n in zip(self.classes, sizes, strict=True))
        self.skipped[self.assays[j]] = counts
        return False

    def _task(self, j: int, generator: torch.Generator | None) -> tuple[Tensor, ...]:
        """Support rows, query rows, their labels and the classes of one task of assay ``j``."""
        per_class = self._class_rows[j]
        candidates = [c for c, rows in enumerate(per_class) if len(rows) >= self._need()]
        if len(candidates) > self.n_way:
            pick = torch.randperm(len(candidates), generator=generator)[: self.n_way]
            candidates = [candidates[i] for i in sorted(pick.tolist())]
        support, query, query_labels = [], [], []
        for label, c in enumerate(candidates):
            rows = per_class[c][torch.randperm(len(per_class[c]), generator=generator)]
            support.append(rows[: self.k_shot])
            end = None if self.k_query is None else self.k_shot + self.k_query
            rest = rows[self.k_shot : end]
            query.append(rest)
            query_labels.append(torch.full((len(rest),), label, dtype=torch.int64))
        support_rows = torch.cat(support)
        query_rows, query_y = torch.cat(query), torch.cat(query_labels)
        if self.k_query is None:
            # In table order: the set of query compounds does not depend on the draw's order.
            order = torch.argsort(query_rows)
            query_rows, query_y = query_rows[order], query_y[order]
        support_y = torch.arange(len(candidates)).repeat_interleave(self.k_shot)
        return support_rows, query_rows, support_y, query_y, torch.tensor(candidates)

    # -- public surface (split, train, val, test: SplitSamplers) ------------------------------

    def assay(self, name: str) -> AssaySampler:
        """A sampler of one assay's tasks (evaluate assay by assay with ``k_query=None``)."""
        if name not in self.assays:
            raise ValueError(f"no assay {name!r}; the assays are {listing(self.assays)}")
        j = self.assays.index(name)
        if name in self.skipped:
            raise ValueError(f"assay {name!r} cannot make a task ({self.skipped[name]})")
        return AssaySampler(self, name, [j])

    @property
    def num_features(self) -> int:
        return self._x.shape[1]

    def label_counts(self) -> dict[str, dict[float, int]]:
        """Labelled compounds per class of every assay: ``{"SR-HSE": {0.0: 6088, 1.0: 372}...}``."""
        return {
            a: {c: len(rows) for c, rows in zip(self.classes, self._class_rows[j], strict=True)}
            for j, a in enumerate(self.assays)
        }

    def rows(self, names: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Features and labels of every compound labelled in any of the assays ``names``.

        Returns ``x [rows, features]`` and ``labels [rows, len(names)]``: class indices
        (positions in :attr:`classes`) as floats, NaN where not measured; the data a multi-task
        network is pretrained on.
        """
        unknown = [a for a in names if a not in self.assays]
        if unknown:
            raise ValueError(f"no assays {unknown}; the assays are {listing(self.assays)}")
        columns = [self.assays.index(a) for a in names]
        labelled = torch.zeros(len(self._x), dtype=torch.bool)
        codes = torch.full((len(self._x), len(columns)), float("nan"), dtype=torch.float64)
        for k, j in enumerate(columns):
            for c, rows in enumerate(self._class_rows[j]):
                codes[rows, k] = float(c)
                labelled[rows] = True
        return self._x[labelled], codes[labelled]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(self._samplers[n])}" for n in SPLITS)
        return (
            f"MultiAssay(assays: {sizes}, n_way={self.n_way}, k_shot={self.k_shot}, "
            f"k_query={self.k_query}, compounds={len(self._x)}, features={self.num_features})"
        )
