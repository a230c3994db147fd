"""What a regression and a classification table do differently, in one place each.

Private to :mod:`metalearn.tasks.grouped`: :class:`~metalearn.tasks.Grouped` holds one of these
and asks it how to read the targets, which groups can make a task, how to draw a task's rows and
what its labels are; everything else (splits, features, messages) is shared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from metalearn.tasks._tables import plural

__all__ = ["Classification", "Regression", "as_float"]


def as_float(array: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must hold numbers, got dtype {array.dtype}; convert text columns to "
            "numbers (or leave them out of the features)"
        ) from None


def _missing_targets(bad: np.ndarray, target_name: str) -> None:
    if bad.any():
        raise ValueError(
            f"target {target_name!r} has {plural(int(bad.sum()), 'row')} with a "
            "missing, NaN or infinite value; drop those rows first"
        )


def _shuffled(rows: Tensor, generator: torch.Generator | None) -> Tensor:
    return rows[torch.randperm(len(rows), generator=generator)]


class Regression:
    """Real-valued targets ``[rows, targets]``; any ``k_shot + k_query`` rows of a group."""

    name = "regression"

    def __init__(self, k_shot: int, k_query: int) -> None:
        self.k_shot, self.k_query = k_shot, k_query
        self.need = k_shot + k_query

    def targets(self, y: np.ndarray, target_name: str) -> np.ndarray:
        y = as_float(y, "y")
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2:
            raise ValueError(f"y must be [rows] or [rows, targets], got {tuple(y.shape)}")
        _missing_targets(~np.isfinite(y).all(1), target_name)
        return y

    def prepare(self, owner: Any, y: np.ndarray) -> None:
        """Nothing to encode: targets are standardised with the features (:meth:`fit`)."""

    def entry(self, rows: Tensor) -> tuple[Any, str]:
        """What a task of this group draws from (``None`` if too small) and why not."""
        return (rows if len(rows) >= self.need else None), plural(len(rows), "row")

    def too_small(self) -> str:
        return f"fewer than k_shot + k_query = {self.need} rows"

    def draw(
        self, entry: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        chosen = _shuffled(entry, generator)
        return chosen[: self.k_shot], chosen[self.k_shot : self.need], None

    def labels(self, owner: Any, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        return owner._y[support], owner._y[query]


class Classification:
    """Class labels ``[rows]``; ``n_way`` classes of a group with ``k_shot + k_query`` rows each.

    Rows are drawn class-major (all of the first picked class, then the next...), so a task's
    labels are ``0..n_way-1`` repeated ``k_shot`` (support) or ``k_query`` (query) times.
    """

    name = "classification"

    def __init__(self, k_shot: int, k_query: int, n_way: int) -> None:
        self.k_shot, self.k_query, self.n_way = k_shot, k_query, n_way
        self.need = k_shot + k_query
        self.codes: np.ndarray | None = None

    def targets(self, y: np.ndarray, target_name: str) -> np.ndarray:
        if y.ndim != 1:
            raise ValueError(
                f"class labels y (target {target_name!r}) must be [rows], got shape "
                f"{tuple(y.shape)}"
            )
        missing = np.isnan(y) if y.dtype.kind == "f" else np.array([v is None for v in y.tolist()])
        _missing_targets(missing, target_name)
        return y

    def prepare(self, owner: Any, y: np.ndarray) -> None:
        """Number the classes: ``owner.classes`` lists them, rows get their index."""
        try:
            classes, self.codes = np.unique(y, return_inverse=True)
        except TypeError:
            raise TypeError(
                f"the class labels (target {owner.target_name!r}): mixed kinds of values (e.g. "
                "numbers and text); make them all one kind"
            ) from None
        owner.classes = classes.tolist()

    def entry(self, rows: Tensor) -> tuple[Any, str]:
        codes = self.codes[rows.numpy()]
        per_class = [(int(c), rows[torch.from_numpy(codes == c)]) for c in np.unique(codes)]
        big = [(c, r) for c, r in per_class if len(r) >= self.need]
        enough = big if len(big) >= self.n_way else None
        return enough, f"{plural(len(big), 'class')} with {self.need}+ rows"

    def too_small(self) -> str:
        return (
            f"fewer than n_way = {self.n_way} classes with k_shot + k_query = {self.need} rows each"
        )

    def draw(
        self, entry: list[tuple[int, Tensor]], generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        way = torch.randperm(len(entry), generator=generator)[: self.n_way].tolist()
        support, query = [], []
        for c in way:
            chosen = _shuffled(entry[c][1], generator)
            support.append(chosen[: self.k_shot])
            query.append(chosen[self.k_shot : self.need])
        classes = torch.tensor([entry[c][0] for c in way])
        return torch.cat(support), torch.cat(query), classes

    def labels(self, owner: Any, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        ways = torch.arange(self.n_way)
        shape = (len(support), -1)
        return (
            ways.repeat_interleave(self.k_shot).expand(shape).clone(),
            ways.repeat_interleave(self.k_query).expand(shape).clone(),
        )
