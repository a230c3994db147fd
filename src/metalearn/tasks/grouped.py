"""Few-shot tasks from your own table: every group (assay, condition, cell line...) is a task.

A table of measurements with a column naming the experimental condition is the common shape of
meta-learning data in biology and chemistry: many conditions, a handful of rows each.
:class:`Grouped` turns it into task samplers with one call (from arrays, a CSV file or a pandas
DataFrame): it splits the groups into meta-train / val / test, standardises with statistics of
the meta-train groups only, and samples support and query rows of one group per task.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metalearn._checks import check_int
from metalearn.tasks._kinds import Classification, Regression
from metalearn.tasks._kinds import as_float as _as_float  # also used by assays.py
from metalearn.tasks._tables import (
    SplitSamplers,
    listing,
    plural,
    read_csv,
    read_dataframe,
    warn_user,
)
from metalearn.tasks.batch import TaskBatch

__all__ = ["GroupSampler", "Grouped"]

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    raise TypeError(
        f"{name} must be a numpy array, a torch tensor or a list, got {type(value).__name__}"
    )


class GroupSampler:
    """Tasks from the groups of one split (meta-train, val or test) of a :class:`Grouped` table.

    Each task picks one of the split's usable groups uniformly at random (with replacement
    across tasks, so any number of tasks can be drawn) and then ``k_shot + k_query`` distinct
    rows of that group at random: the first ``k_shot`` are the support set, the rest the query
    set. For classification it picks ``n_way`` of the group's classes and ``k_shot + k_query``
    rows of each; labels are the classes' positions in that random pick (``0..n_way-1``).

    Get one from :class:`Grouped` (``grouped.train``, ``grouped.val``, ``grouped.test`` or
    ``grouped.split(name)``); it is a task sampler for :func:`metalearn.train` and
    :func:`metalearn.evaluate`.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        groups: the ids of the groups tasks are drawn from (usable groups of this split).
        skipped: the ids of this split's groups that are too small to make a task.
    """

    def __init__(
        self,
        owner: Grouped,
        name: str,
        group_indices: list[int],
        skipped: list[int],
    ) -> None:
        self._owner = owner
        self.name = name
        self._indices = group_indices
        self.groups: tuple[Any, ...] = tuple(owner.group_ids[i] for i in group_indices)
        self.skipped: tuple[Any, ...] = tuple(owner.group_ids[i] for i in skipped)

    @property
    def k_shot(self) -> int:
        return self._owner.k_shot

    @property
    def k_query(self) -> int:
        return self._owner.k_query

    def __len__(self) -> int:
        return len(self._indices)

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``num_tasks`` tasks; the same generator state gives the same tasks.

        Returns:
            A :class:`TaskBatch`. Regression: ``x`` is ``[num_tasks, k, features]`` (float),
            ``y`` is ``[num_tasks, k, targets]`` (``targets`` is 1 for a 1-D target).
            Classification: ``k`` is ``n_way * k_shot`` (support) or ``n_way * k_query``
            (query), ``y`` is ``[num_tasks, k]`` int64 labels in ``0..n_way-1``. ``info``
            holds ``"group"`` (index into ``grouped.group_ids``), ``"support_rows"`` and
            ``"query_rows"`` (row numbers in the original table) and, for classification,
            ``"classes"`` (``[num_tasks, n_way]`` indices into ``grouped.classes``).

        Raises:
            ValueError: if ``num_tasks`` is not a positive int, or the split has no usable
                group.
        """
        check_int("num_tasks", num_tasks, 1)
        if not self._indices:
            reason = (
                f"all of its {plural(len(self.skipped), 'group')} are too small (see .skipped)"
                if self.skipped
                else "it has no groups (set its fraction above 0 or list groups for it in split=)"
            )
            raise ValueError(f"cannot sample tasks from split {self.name!r}: {reason}")
        owner, kind = self._owner, self._owner._kind
        picks = torch.randint(len(self._indices), (num_tasks,), generator=generator)
        support_rows, query_rows, groups, classes = [], [], [], []
        for p in picks.tolist():
            g = self._indices[p]
            groups.append(g)
            support, query, picked = kind.draw(owner._entries[g], generator)
            support_rows.append(support)
            query_rows.append(query)
            if picked is not None:
                classes.append(picked)
        s_rows, q_rows = torch.stack(support_rows), torch.stack(query_rows)
        info = {"group": torch.tensor(groups), "support_rows": s_rows, "query_rows": q_rows}
        if classes:
            info["classes"] = torch.stack(classes)
        sy, qy = kind.labels(owner, s_rows, q_rows)
        return TaskBatch.from_tensors(owner._x[s_rows], sy, owner._x[q_rows], qy, info=info)

    def __repr__(self) -> str:
        return (
            f"GroupSampler(split={self.name!r}, groups={len(self.groups)}, "
            f"skipped={len(self.skipped)}, k_shot={self.k_shot}, k_query={self.k_query})"
        )


class Grouped(SplitSamplers[GroupSampler]):
    """Few-shot tasks from a table whose rows are grouped (by condition, assay, cell line...).

    Every group is a task: a task's support and query rows are distinct rows of one group.
    The groups are split into meta-train / val / test so that no test group is ever seen in
    meta-training. The split rule (``split`` given as fractions): take the sorted distinct group
    ids, shuffle them with ``numpy.random.default_rng(seed).permutation``, and cut the shuffled
    list into ``round(fraction * num_groups)`` groups for val and for test (at least one each
    when its fraction is above 0, val giving way first when groups are few) and the rest for
    train, in the order train, val, test. Or name the groups of each split yourself with a dict.

    Groups too small for a task (fewer than ``k_shot + k_query`` rows; for classification fewer
    than ``n_way`` classes with ``k_shot + k_query`` rows each) are skipped with a warning that
    counts and names them; ``grouped.skipped`` says why for each.

    Features are standardised (``(x - mean) / std`` per column) with the mean and standard
    deviation of the rows of the meta-train groups, and the same transform is applied to every
    split; regression targets likewise (``standardize_target``). The fitted statistics are
    :attr:`feature_mean`, :attr:`feature_std`, :attr:`target_mean`, :attr:`target_std`; use
    :meth:`inverse_transform_target` to turn predictions back into your units (an MSE scales by
    ``target_std ** 2``).

    Args:
        x: features, ``[rows]`` or ``[rows, features]`` (numpy array, tensor or list).
        y: targets: regression ``[rows]`` or ``[rows, targets]`` numbers; classification
            ``[rows]`` labels of any kind (ints, strings), remapped per task to ``0..n_way-1``.
        groups: ``[rows]`` group id of every row (ints or strings).
        k_shot: support rows per task (per class for classification), >= 1.
        k_query: query rows per task (per class for classification), >= 1.
        task: ``"regression"`` or ``"classification"``.
        n_way: classes per task (classification only), >= 2.
        split: ``(train, val, test)`` fractions summing to 1 (default ``(0.7, 0.15, 0.15)``),
            or a dict ``{"train": [ids], "val": [ids], "test": [ids]}`` ("val"/"test" optional;
            groups listed nowhere are left out, with a warning).
        seed: seed of the split shuffle.
        standardize: standardise features with meta-train statistics.
        standardize_target: standardise regression targets likewise (default: True for
            regression; not allowed for classification).
        feature_names: column names used in messages (default ``column 0``, ``column 1``...).
        target_name: name of the target used in messages.
        dtype: floating dtype of the sampled features (and regression targets).

    Example:
        >>> import numpy as np, torch, metalearn as ml
        >>> rng = np.random.default_rng(0)
        >>> groups = np.repeat(np.arange(40), 12)                 # 40 conditions, 12 rows each
        >>> x = rng.normal(size=(480, 3)); y = x[:, 0] * groups + rng.normal(size=480)
        >>> data = ml.tasks.Grouped(x, y, groups, k_shot=5, k_query=5, seed=0)
        >>> batch = data.train.sample(8, generator=torch.Generator().manual_seed(0))
        >>> batch.support.x.shape, batch.query.y.shape
        (torch.Size([8, 5, 3]), torch.Size([8, 5, 1]))
        >>> len(data.train.groups), len(data.val.groups), len(data.test.groups)
        (28, 6, 6)

    Reference:
        The task construction follows few-shot benchmarks built from grouped assay data, e.g.
        Stanley et al., FS-Mol: A Few-Shot Learning Dataset of Molecules, NeurIPS 2021
        (one task per assay, assays split into train / valid / test).
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        groups: Any,
        k_shot: int,
        k_query: int,
        task: str = "regression",
        n_way: int | None = None,
        split: Sequence[float] | Mapping[str, Sequence[Any]] = DEFAULT_FRACTIONS,
        seed: int = 0,
        standardize: bool = True,
        standardize_target: bool | None = None,
        *,
        feature_names: Sequence[str] | None = None,
        target_name: str = "y",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.k_shot = check_int("k_shot", k_shot, 1)
        self.k_query = check_int("k_query", k_query, 1)
        if task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        self.task = task
        self.n_way: int | None = None
        self._kind: Regression | Classification
        if task == "classification":
            if n_way is None:
                raise ValueError("task='classification' needs n_way (classes per task), e.g. 2")
            self.n_way = check_int("n_way", n_way, 2)
            if standardize_target:
                raise ValueError("standardize_target is for regression targets only")
            self._kind = Classification(self.k_shot, self.k_query, self.n_way)
        elif n_way is not None:
            raise ValueError("n_way is for task='classification'; leave it out for regression")
        else:
            self._kind = Regression(self.k_shot, self.k_query)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.seed = seed
        self.dtype = dtype
        self.standardize = bool(standardize)
        self.standardize_target = task == "regression" and standardize_target is not False
        self.target_name = str(target_name)

        x_np, y_np, g_np = self._check_arrays(x, y, groups, feature_names)
        try:
            ids, group_of_row = np.unique(g_np, return_inverse=True)
        except TypeError:
            raise TypeError(
                "groups mixes kinds of ids (e.g. numbers and text); give every row an id of "
                "the same kind"
            ) from None
        #: Every distinct group id, sorted; ``info["group"]`` of a batch indexes this list.
        self.group_ids: list[Any] = ids.tolist()
        if len(self.group_ids) < 2:
            raise ValueError(
                f"groups has a single distinct value ({self.group_ids[0]!r}): every group is a "
                "task, and meta-train and test need different groups; pass the column that "
                "names the condition of each row (at least 2 groups, ideally dozens)"
            )
        order = np.argsort(group_of_row, kind="stable")
        bounds = np.searchsorted(group_of_row[order], np.arange(len(ids) + 1))
        self._rows = [torch.from_numpy(order[a:b].astype(np.int64)) for a, b in _pairwise(bounds)]
        #: The class labels, sorted (classification); ``info["classes"]`` indexes this list.
        self.classes: list[Any] | None = None
        self._kind.prepare(self, y_np)

        assignment = self._assign(split, seed)
        #: The ids of the groups of every split, including the skipped ones.
        self.split_groups: dict[str, tuple[Any, ...]] = {
            name: tuple(self.group_ids[i] for i in assignment[name]) for name in SPLITS
        }
        #: group id -> why it was skipped (too few rows or classes).
        self.skipped: dict[Any, str] = {}
        usable = self._find_usable(assignment)

        train_rows = np.concatenate([self._rows[i].numpy() for i in assignment["train"]])
        # Standardise in float64, then cast: the statistics come from the meta-train rows only.
        self._x, mean, std = _standardise(
            x_np,
            train_rows,
            self.standardize,
            dtype,
            [f"feature {n!r}" for n in self.feature_names],
        )
        #: Per-feature mean and standard deviation of the meta-train rows (0 and 1 if disabled).
        self.feature_mean = torch.as_tensor(mean, dtype=dtype)
        self.feature_std = torch.as_tensor(std, dtype=dtype)
        self.target_mean: Tensor | None = None
        self.target_std: Tensor | None = None
        if isinstance(self._kind, Regression):  # class labels are not standardised
            targets = [f"target {self.target_name!r}"]
            if y_np.shape[1] > 1:
                targets = [f"target {self.target_name!r}[{j}]" for j in range(y_np.shape[1])]
            self._y, mean, std = _standardise(
                y_np, train_rows, self.standardize_target, dtype, targets
            )
            self.target_mean = torch.as_tensor(mean, dtype=dtype)
            self.target_std = torch.as_tensor(std, dtype=dtype)
        self._samplers = {
            name: GroupSampler(
                self, name, usable[name], sorted(set(assignment[name]) - set(usable[name]))
            )
            for name in SPLITS
        }

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike,
        *,
        target: str,
        group: str,
        k_shot: int,
        k_query: int,
        features: Sequence[str] | None = None,
        delimiter: str = ",",
        **options: Any,
    ) -> Grouped:
        """Read a table from a CSV file with a header row (stdlib :mod:`csv`, no pandas).

        Args:
            path: the file: UTF-8 (an Excel byte-order mark is fine) or UTF-16 with its
                byte-order mark.
            target: the column to predict.
            group: the column naming each row's group (condition, assay...); read as text.
            k_shot: support rows per task, as for :class:`Grouped`.
            k_query: query rows per task, as for :class:`Grouped`.
            features: the feature columns; default every other column whose cells are all
                numbers or missing (text columns are left out with a warning naming them; a
                few text cells among numbers are an error naming the line). Missing cells
                (empty, ``NA``, ``NaN``, ``null``...) are an error naming the column: drop or
                impute them first.
            delimiter: the field separator (``"\\t"`` for TSV).
            **options: the other arguments of :class:`Grouped` (``task``, ``n_way``, ``split``,
                ``seed``, ``standardize``...).

        Example:
            >>> data = Grouped.from_csv("assay.csv", target="response", group="condition",
            ...                         k_shot=5, k_query=5)  # doctest: +SKIP
        """
        task = options.get("task", "regression")
        x, y, groups, names = read_csv(path, target, group, features, delimiter, task)
        return cls(
            x, y, groups, k_shot, k_query, feature_names=names, target_name=target, **options
        )

    @classmethod
    def from_dataframe(
        cls,
        df: Any,
        *,
        target: str,
        group: str,
        k_shot: int,
        k_query: int,
        features: Sequence[str] | None = None,
        **options: Any,
    ) -> Grouped:
        """Build from a pandas DataFrame (pandas is needed only for this method).

        ``features`` defaults to every numeric column other than ``target`` and ``group``
        (others are left out with a warning naming them). Other arguments as
        :meth:`from_csv`.

        Example:
            >>> data = Grouped.from_dataframe(df, target="response", group="condition",
            ...                               k_shot=5, k_query=5)  # doctest: +SKIP
        """
        task = options.get("task", "regression")
        x, y, groups, names = read_dataframe(df, target, group, features, task)
        return cls(
            x, y, groups, k_shot, k_query, feature_names=names, target_name=target, **options
        )

    # -- construction helpers ----------------------------------------------------------------
    def _check_arrays(
        self, x: Any, y: Any, groups: Any, feature_names: Sequence[str] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x_np = _as_float(_to_numpy(x, "x"), "x")
        if x_np.ndim == 1:
            x_np = x_np[:, None]
        if x_np.ndim != 2:
            raise ValueError(
                f"x must be [rows] or [rows, features], got shape {tuple(x_np.shape)}; "
                "flatten each row's inputs into one feature vector"
            )
        y_np = self._kind.targets(_to_numpy(y, "y"), self.target_name)
        g_np = _to_numpy(groups, "groups")
        if g_np.ndim != 1:
            raise ValueError(f"groups must be [rows] (one id per row), got {tuple(g_np.shape)}")
        lengths = {"x": len(x_np), "y": len(y_np), "groups": len(g_np)}
        if len(set(lengths.values())) != 1:
            raise ValueError(
                "x, y and groups need one entry per row (measurement), got "
                + ", ".join(f"{k}: {v} rows" for k, v in lengths.items())
            )
        if len(x_np) == 0:
            raise ValueError("the table is empty: x, y and groups have 0 rows")
        if feature_names is None:
            feature_names = [f"column {i}" for i in range(x_np.shape[1])]
        feature_names = [str(n) for n in feature_names]
        if len(feature_names) != x_np.shape[1]:
            raise ValueError(
                f"feature_names has {len(feature_names)} names but x has {x_np.shape[1]} columns"
            )
        #: The names of the feature columns, in the order of the last dimension of ``x``.
        self.feature_names: list[str] = feature_names
        bad = ~np.isfinite(x_np)
        if bad.any():
            columns = ", ".join(
                f"{feature_names[j]!r} ({plural(int(n), 'row')})"
                for j, n in enumerate(bad.sum(0))
                if n
            )
            raise ValueError(
                f"x has NaN or infinite values in {plural(int(bad.any(1).sum()), 'row')}: "
                f"{columns}; drop or impute those rows (or leave the column out) first"
            )
        if (g_np.dtype.kind == "f" and np.isnan(g_np).any()) or (
            g_np.dtype.kind == "O" and any(v is None for v in g_np.tolist())
        ):
            raise ValueError("groups has missing ids (NaN or None); give every row a group")
        return x_np, y_np, g_np

    def _assign(self, split: Any, seed: int) -> dict[str, list[int]]:
        num = len(self.group_ids)
        if isinstance(split, Mapping):
            return self._assign_listed(split)
        try:
            fractions = [float(f) for f in split]
        except (TypeError, ValueError):
            raise TypeError(
                "split must be (train, val, test) fractions or a dict split -> group ids, "
                f"got {split!r}"
            ) from None
        if (
            len(fractions) != 3
            or not all(math.isfinite(f) and f >= 0 for f in fractions)
            or abs(sum(fractions) - 1) > 1e-6
            or fractions[0] == 0
        ):
            raise ValueError(
                "split fractions must be three numbers >= 0 (train, val, test) summing to 1 "
                f"with train > 0, e.g. {DEFAULT_FRACTIONS}; got {tuple(split)!r}"
            )
        # Nearest count (halves up); a split with a positive fraction gets at least one group,
        # and train keeps at least one (val gives way first, then test).
        counts = [math.floor(f * num + 0.5) for f in fractions]
        for i in (1, 2):
            if fractions[i] > 0:
                counts[i] = max(counts[i], 1)
        for i in (1, 2):
            while num - counts[1] - counts[2] < 1 and counts[i] > (1 if i == 2 else 0):
                counts[i] -= 1
        n_val, n_test = counts[1], counts[2]
        n_train = num - n_val - n_test
        order = np.random.default_rng(seed).permutation(num).tolist()
        return {
            "train": order[:n_train],
            "val": order[n_train : n_train + n_val],
            "test": order[n_train + n_val :],
        }

    def _assign_listed(self, split: Mapping[str, Sequence[Any]]) -> dict[str, list[int]]:
        unknown_keys = set(split) - set(SPLITS)
        if unknown_keys:
            raise ValueError(
                f"split has unknown keys {sorted(map(str, unknown_keys))}; use 'train', 'val' "
                "and 'test'"
            )
        if not split.get("train"):
            raise ValueError("split must list at least one group for 'train'")
        index = {gid: i for i, gid in enumerate(self.group_ids)}
        owner: dict[int, str] = {}
        out: dict[str, list[int]] = {name: [] for name in SPLITS}
        for name in SPLITS:
            listed = split.get(name, [])
            if isinstance(listed, (str, bytes)):
                raise TypeError(f"split[{name!r}] must be a list of group ids, got {listed!r}")
            ids = [g.item() if isinstance(g, (np.generic, Tensor)) else g for g in listed]
            missing = [g for g in ids if g not in index]
            if missing:
                raise ValueError(
                    f"split[{name!r}] names groups that are not in the data: "
                    f"{listing(missing)}; the group ids are, e.g., "
                    f"{listing(self.group_ids[:5])} (ids from a CSV file are text)"
                )
            for g in ids:
                i = index[g]
                if i in owner:
                    raise ValueError(
                        f"group {g!r} is listed in split {owner[i]!r} and in {name!r}: every "
                        "group belongs to one split"
                    )
                owner[i] = name
                out[name].append(i)
        left_out = [g for i, g in enumerate(self.group_ids) if i not in owner]
        if left_out:
            warn_user(
                f"Grouped: {plural(len(left_out), 'group')} of {len(self.group_ids)} are in no "
                f"split and are never used: {listing(left_out)}"
            )
        return out

    def _find_usable(self, assignment: dict[str, list[int]]) -> dict[str, list[int]]:
        #: group index -> what its tasks draw from (the rows, or the rows of each big class).
        self._entries: dict[int, Any] = {}
        usable: dict[str, list[int]] = {name: [] for name in SPLITS}
        for name in SPLITS:
            for g in assignment[name]:
                entry, size = self._kind.entry(self._rows[g])
                if entry is None:
                    self.skipped[self.group_ids[g]] = f"{name}: {size}"
                else:
                    self._entries[g] = entry
                    usable[name].append(g)
        if self.skipped:
            listed = [f"{g!r} ({why})" for g, why in self.skipped.items()]
            warn_user(
                f"Grouped: skipped {len(self.skipped)} of {len(self.group_ids)} groups with "
                f"{self._kind.too_small()}: {listing(listed, show=str)}. They are never "
                "sampled (see .skipped); lower k_shot/k_query to keep them."
            )
        if not usable["train"]:
            raise ValueError(
                f"none of the {len(assignment['train'])} meta-train groups can make a task "
                f"(each has {self._kind.too_small()}); lower k_shot or k_query"
            )
        return usable

    # -- public surface (split, train, val, test: SplitSamplers) ------------------------------

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def transform_features(self, x: Any) -> Tensor:
        """Standardise raw features ``[..., features]`` with the fitted meta-train statistics.

        Use it on the measurements of a new condition before :meth:`Learner.adapt` and
        :meth:`Learner.predict`. A 1-D input is one value per row when the table has a single
        feature.
        """
        x = torch.as_tensor(_as_float(_to_numpy(x, "x"), "x"), dtype=self.dtype)
        if x.dim() == 1 and self.num_features == 1:
            x = x[:, None]
        if x.dim() == 0 or x.shape[-1] != self.num_features:
            raise ValueError(
                f"x must be [..., {self.num_features}] (one value per feature "
                f"{self.feature_names}), got shape {tuple(x.shape)}"
            )
        return (x - self.feature_mean) / self.feature_std

    def transform_target(self, y: Any) -> Tensor:
        """Standardise raw regression targets (``[rows]`` or ``[rows, targets]``) like training's.

        Returns ``[rows, targets]``, the shape of a support or query ``y`` of one task.
        """
        self._check_regression("transform_target")
        y = torch.as_tensor(_as_float(_to_numpy(y, "y"), "y"), dtype=self.dtype)
        if y.dim() == 1:
            y = y[:, None]
        if y.shape[-1] != len(self.target_mean):
            raise ValueError(f"y must have {len(self.target_mean)} targets per row, got {y.shape}")
        return (y - self.target_mean) / self.target_std

    def inverse_transform_target(self, y: Tensor) -> Tensor:
        """Map standardised predictions (or targets) ``[..., targets]`` back to your units."""
        self._check_regression("inverse_transform_target")
        mean = self.target_mean.to(device=y.device, dtype=y.dtype)
        std = self.target_std.to(device=y.device, dtype=y.dtype)
        return y * std + mean

    def _check_regression(self, method: str) -> None:
        if self.task != "regression":
            raise ValueError(f"{method} is for regression targets (this table is classification)")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(self._samplers[n])}" for n in SPLITS)
        way = f", n_way={self.n_way}" if self.n_way else ""
        return (
            f"Grouped(task={self.task!r}{way}, k_shot={self.k_shot}, k_query={self.k_query}, "
            f"groups: {sizes}, skipped={len(self.skipped)}, features={self.num_features})"
        )


def _pairwise(values: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(values[:-1].tolist(), values[1:].tolist(), strict=True))


def _fit(values: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (population, ddof=0); identity when disabled."""
    columns = values.shape[1]
    if not enabled:
        return np.zeros(columns), np.ones(columns)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
        mean, std = values.mean(0), values.std(0)
    # A column constant over the meta-train rows carries no scale: leave it centred only.
    std = np.where(~np.isfinite(std) | (std > 1e-12 * np.maximum(1.0, np.abs(mean))), std, 1.0)
    return mean, std


def _standardise(
    values: np.ndarray, train_rows: np.ndarray, enabled: bool, dtype: torch.dtype, names: list[str]
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """``(values - mean) / std`` in ``dtype`` with the meta-train rows' statistics.

    Raises:
        ValueError: naming the column whose statistics or standardised values are not finite
            in float64 or do not fit ``dtype`` (one huge value would otherwise make every value
            of the column 0, or inf).
    """
    mean, std = _fit(values[train_rows], enabled)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = (values - mean) / std
    limit = torch.finfo(dtype).max
    fits = np.isfinite(scaled).all(0) & (np.abs(scaled).max(0) <= limit)
    fits &= np.isfinite(mean) & np.isfinite(std) & (np.abs(mean) <= limit) & (std <= limit)
    for j in np.flatnonzero(~fits):
        largest = np.abs(values[:, j]).max()
        raise ValueError(
            f"{names[j]}: its values (largest magnitude {largest:.3g}) are too large to "
            f"standardise{'' if enabled else ' (standardisation is off)'} and use as {dtype}; "
            "rescale the column (e.g. take a log or change its unit) or drop the outlier rows"
        )
    return torch.from_numpy(scaled).to(dtype), mean, std
