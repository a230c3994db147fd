"""Reading a grouped table from a CSV file or a pandas DataFrame, and user-facing messages.

Private to :mod:`metalearn.tasks.grouped`; the public entry points are
:meth:`metalearn.tasks.Grouped.from_csv` and :meth:`metalearn.tasks.Grouped.from_dataframe`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["listing", "plural", "read_csv", "read_dataframe", "warn_user"]

# Cells read as missing values in a CSV file (case-insensitive): they become NaN, which the
# constructor reports by column; they never make a numeric column look non-numeric.
MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null", "none", "-nan"})
_MODULES = ("grouped.py", "_tables.py", "assays.py")  # frames skipped when warning
_LISTED = 10  # group ids named in a warning or error before "... and N more"


def listing(items: Sequence[Any], show: Callable[[Any], str] = repr) -> str:
    """The first few items, then how many more: messages stay readable for big tables."""
    shown = ", ".join(show(i) for i in items[:_LISTED])
    more = len(items) - _LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


def _internal(filename: str) -> bool:
    here = os.path.dirname(os.path.abspath(__file__))
    name = os.path.abspath(filename)
    return os.path.dirname(name) == here and os.path.basename(name) in _MODULES


def warn_user(message: str) -> None:
    """Warn at the first frame outside this module (the user's call), however deep we are."""
    frame, level = sys._getframe(1), 2
    while frame is not None and _internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def plural(n: int, word: str) -> str:
    """``1 row``, ``2 rows``, ``3 classes``."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}{'es' if word.endswith('s') else 's'}"


def _check_columns(
    available: list[str],
    target: str,
    group: str,
    features: Sequence[str] | None,
    where: str,
) -> None:
    if isinstance(features, str):
        raise TypeError(f"features must be a list of column names, got {features!r}")
    wanted = {"target": [target], "group": [group], "features": list(features or [])}
    for argument, columns in wanted.items():
        for column in columns:
            if column not in available:
                raise ValueError(
                    f"{argument} column {column!r} is not in {where}; available columns: "
                    + ", ".join(repr(c) for c in available)
                )
    if target == group:
        raise ValueError(f"target and group are the same column {target!r}")
    for column in features or []:
        if column in (target, group):
            raise ValueError(f"features includes {column!r}, which is the target or group")


def _warn_left_out(columns: list[str]) -> None:
    if columns:
        warn_user(
            f"Grouped: non-numeric columns left out of the features: {listing(columns)}; "
            "pass features=[...] to choose the feature columns yourself"
        )


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_CELLS


def _parse_number(cell: str) -> float:
    return math.nan if _is_missing(cell) else float(cell)


def _text_cells(cells: list[str]) -> list[int]:
    """Indices of the cells that are neither numbers nor missing."""
    text = []
    for i, cell in enumerate(cells):
        try:
            _parse_number(cell)
        except ValueError:
            text.append(i)
    return text


def _read_text(path: str) -> str:
    """The file's text: UTF-8 (an Excel byte-order mark is fine) or UTF-16 with its mark."""
    with open(path, "rb") as f:
        data = f.read()
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    try:
        return data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{path} line {line} is not {'UTF-16' if utf16 else 'UTF-8'} text (byte "
            f"{data[e.start : e.start + 1].hex()}); save the file as UTF-8 (from Latin-1: "
            "iconv -f latin1 -t utf-8)"
        ) from None


def read_csv(
    path: str | os.PathLike,
    target: str,
    group: str,
    features: Sequence[str] | None,
    delimiter: str,
    task: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no CSV file at {path!r}")
    text = _read_text(path)
    if "\0" in text:
        raise ValueError(f"{path} holds NUL characters: it is not a text (CSV) file")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    lines = [(n, row) for n, row in enumerate(reader, 1) if row]
    if not lines:
        raise ValueError(f"{path} is empty; it needs a header row naming the columns")
    header = [h.strip() for h in lines[0][1]]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ValueError(f"{path} has duplicated column names {duplicated}; rename them")
    body = lines[1:]
    if not body:
        raise ValueError(f"{path} has a header but no data rows")
    for n, row in body:
        if len(row) != len(header):
            raise ValueError(
                f"{path} line {n} has {len(row)} cells but the header has {len(header)} "
                f"columns (is the delimiter {delimiter!r} right?)"
            )
    _check_columns(header, target, group, features, path)
    column = {name: [row[j] for _, row in body] for j, name in enumerate(header)}
    if features is None:
        others = [h for h in header if h not in (target, group)]
        text = {h: _text_cells(column[h]) for h in others}
        for h in others:
            filled = sum(not _is_missing(cell) for cell in column[h])
            if text[h] and len(text[h]) * 2 < filled:
                # Mostly numbers: a typo in a numeric column, not a text column to leave out.
                i = text[h][0]
                raise ValueError(
                    f"{path} line {body[i][0]}: column {h!r} has {column[h][i]!r}, not a "
                    f"number ({plural(len(text[h]), 'text cell')} among numbers); fix the cell, "
                    "or pass features=[...] without the column"
                )
        features = [h for h in others if not text[h]]
        _warn_left_out([h for h in others if h not in features])
        if not features:
            raise ValueError(
                f"{path} has no numeric feature column besides {target!r} and {group!r}"
            )

    def numbers(name: str) -> np.ndarray:
        out = np.empty(len(body))
        for i, cell in enumerate(column[name]):
            try:
                out[i] = _parse_number(cell)
            except ValueError:
                raise ValueError(
                    f"{path} line {body[i][0]}: column {name!r} has {cell!r}, not a number"
                ) from None
        return out

    x = np.stack([numbers(name) for name in features], axis=1)
    if task == "regression":
        y: np.ndarray = numbers(target)
    else:
        labels = [cell.strip() for cell in column[target]]
        empty = [body[i][0] for i, cell in enumerate(labels) if _is_missing(cell)]
        if empty:
            raise ValueError(
                f"{path}: target column {target!r} has {plural(len(empty), 'missing label')} "
                f"(first at line {empty[0]}); drop those rows first"
            )
        y = np.array(labels, dtype=object)
    ids = [cell.strip() for cell in column[group]]
    empty = [body[i][0] for i, cell in enumerate(ids) if cell == ""]
    if empty:
        raise ValueError(
            f"{path}: group column {group!r} has {plural(len(empty), 'empty cell')} (first at "
            f"line {empty[0]}); give every row a group"
        )
    return x, y, np.array(ids, dtype=object), list(features)


def read_dataframe(
    df: Any, target: str, group: str, features: Sequence[str] | None, task: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - exercised only without pandas
        raise ImportError(
            "Grouped.from_dataframe needs pandas (pip install pandas); or use Grouped.from_csv "
            "or pass numpy arrays to Grouped(...)"
        ) from None
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    available = [str(c) for c in df.columns]
    if len(set(available)) != len(available):
        raise ValueError("the DataFrame has duplicated column names; rename them")
    df = df.set_axis(available, axis=1)
    _check_columns(available, target, group, features, "the DataFrame")
    if features is None:
        others = [c for c in available if c not in (target, group)]
        features = [
            c
            for c in others
            if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_complex_dtype(df[c])
        ]
        _warn_left_out([c for c in others if c not in features])
        if not features:
            raise ValueError(f"the DataFrame has no numeric column besides {target!r}, {group!r}")
    try:
        x = df[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise TypeError(
            f"feature columns {list(features)} must be numeric; convert or leave out text columns"
        ) from None
    if task == "regression":
        y = df[target].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        if df[target].isna().any():
            raise ValueError(
                f"target column {target!r} has {int(df[target].isna().sum())} missing labels; "
                "drop those rows first"
            )
        y = df[target].to_numpy()
    if df[group].isna().any():
        raise ValueError(
            f"group column {group!r} has {int(df[group].isna().sum())} missing ids; give every "
            "row a group"
        )
    return x, y, df[group].to_numpy(), list(features)


SamplerT = TypeVar("SamplerT")


class SplitSamplers(Generic[SamplerT]):
    """The meta-train / val / test task samplers of a table split by group (a base class).

    A subclass sets ``self._samplers`` to one sampler per name in ``("train", "val", "test")``.
    """

    _samplers: dict[str, SamplerT]

    def split(self, name: str) -> SamplerT:
        """The task sampler of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in self._samplers:
            raise ValueError(f"split must be one of {tuple(self._samplers)}, got {name!r}")
        return self._samplers[name]

    @property
    def train(self) -> SamplerT:
        """Tasks from the meta-train groups."""
        return self._samplers["train"]

    @property
    def val(self) -> SamplerT:
        """Tasks from the validation groups (model selection, early stopping)."""
        return self._samplers["val"]

    @property
    def test(self) -> SamplerT:
        """Tasks from the held-out test groups (never seen in meta-training)."""
        return self._samplers["test"]
