"""The prepared cache: one ``.npy`` of uint8 images per split plus a small JSON index.

Layout under the dataset root::

    metalearn-cache/<dataset>/<part>.npy    uint8 [N, C, H, W], images grouped by class
    metalearn-cache/<dataset>/<part>.json   {"format": 1, "classes": [...], "counts": [...], ...}

The ``.npy`` is opened with ``numpy.load(mmap_mode="r")``: loading costs nothing and a task
reads only its own images. Both files are written under temporary names and renamed into
place, the index last, so an interrupted ``prepare`` never leaves a cache that looks complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["CACHE_DIR", "cache_files", "read_cache", "write_cache"]

CACHE_DIR = "metalearn-cache"
_FORMAT_VERSION = 1


def cache_files(root: Path, dataset: str, part: str) -> tuple[Path, Path]:
    """The ``(.npy, .json)`` paths of one cached part."""
    folder = Path(root) / CACHE_DIR / dataset
    return folder / f"{part}.npy", folder / f"{part}.json"


def write_cache(
    root: Path,
    dataset: str,
    part: str,
    data: np.ndarray,
    class_rows: Sequence[Sequence[int] | np.ndarray],
    class_names: Sequence[str],
    source: str,
) -> Path:
    """Write ``data`` (``[N, H, W, C]`` or ``[N, H, W]``) channels-first, grouped by class.

    Rows of class 0 come first, then class 1, ...; returns the index path.
    """
    npy, index = cache_files(root, dataset, part)
    npy.parent.mkdir(parents=True, exist_ok=True)
    if data.ndim == 3:
        data = data[..., None]
    counts = [len(r) for r in class_rows]
    _, h, w, c = data.shape
    shape = (sum(counts), c, h, w)
    tmp_npy = npy.with_name(npy.name + ".tmp")
    tmp_index = index.with_name(index.name + ".tmp")
    try:
        out = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.uint8, shape=shape)
        start = 0
        for rows in class_rows:
            rows = np.asarray(rows, dtype=np.int64)
            out[start : start + len(rows)] = data[rows].transpose(0, 3, 1, 2)
            start += len(rows)
        out.flush()
        del out
        meta = {
            "format": _FORMAT_VERSION,
            "dataset": dataset,
            "part": part,
            "shape": list(shape),
            "layout": "NCHW",
            "classes": list(class_names),
            "counts": counts,
            "source": source,
        }
        tmp_index.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_npy, npy)
        os.replace(tmp_index, index)
    finally:
        for tmp in (tmp_npy, tmp_index):
            tmp.unlink(missing_ok=True)
    return index


def read_cache(
    root: Path, dataset: str, part: str
) -> tuple[np.ndarray, list[np.ndarray], list[str], str] | None:
    """``(memmap [N, C, H, W], class_rows, class_names, source)`` of a part, or None if absent.

    Raises:
        ValueError: naming the file if the index or the array is damaged or they disagree.
    """
    npy, index = cache_files(root, dataset, part)
    if not index.is_file():
        return None
    try:
        meta = json.loads(index.read_text())
        classes, counts = list(meta["classes"]), [int(c) for c in meta["counts"]]
        shape = tuple(int(s) for s in meta["shape"])
        version = meta["format"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{index} is not a valid metalearn cache index ({e}); delete it") from e
    if version != _FORMAT_VERSION:
        raise ValueError(f"{index} has cache format {version}; re-run prepare to rebuild it")
    if not npy.is_file():
        raise ValueError(f"{index} exists but {npy} is missing; re-run prepare to rebuild it")
    try:
        data = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{npy} is damaged ({e}); re-run prepare to rebuild it") from e
    if data.shape != shape or data.dtype != np.uint8 or sum(counts) != shape[0]:
        raise ValueError(
            f"{npy} has shape {data.shape} ({data.dtype}) but {index} says {shape} with "
            f"{sum(counts)} images; re-run prepare to rebuild it"
        )
    if len(classes) != len(counts):
        raise ValueError(f"{index} lists {len(classes)} classes but {len(counts)} counts")
    starts = np.concatenate([[0], np.cumsum(counts)])
    rows = [np.arange(starts[i], starts[i + 1]) for i in range(len(counts))]
    return data, rows, classes, f"cache {npy}"
