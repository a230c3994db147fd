"""MiniImagenet (Vinyals et al. 2016; the Ravi & Larochelle 2017 split) from every common layout."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from os import PathLike
from pathlib import Path

import numpy as np

from metalearn.datasets._imageio import decode_image, require_h5py
from metalearn.datasets.base import ImageClasses
from metalearn.datasets.cache import read_cache
from metalearn.datasets.safe_pickle import load_pickle

__all__ = ["FORMATS", "SPLIT_CLASSES", "MiniImagenet", "detect_format", "read_split"]

SPLIT_CLASSES = {"train": 64, "val": 16, "test": 20}
IMAGE_SIZE = 84
FORMATS = ("cache", "learn2learn", "torchmeta", "metaoptnet", "ravi", "folders")
_ALIASES = {"csv": "ravi", "maml": "folders", "l2l": "learn2learn", "rfs": "metaoptnet"}
_METAOPTNET = {
    "train": "miniImageNet_category_split_train_phase_train.pickle",
    "val": "miniImageNet_category_split_val.pickle",
    "test": "miniImageNet_category_split_test.pickle",
}
_L2L_NAMES = {"train": ("train",), "val": ("validation", "val"), "test": ("test",)}
_FOLDER_NAMES = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}

Loaded = tuple[np.ndarray, list[np.ndarray], list[str], str]


def canonical_split(split: str) -> str:
    """``"train"``, ``"val"`` or ``"test"`` (``"validation"`` accepted)."""
    s = {"validation": "val", "valid": "val"}.get(split, split)
    if s not in SPLIT_CLASSES:
        raise ValueError(f"split must be 'train', 'val' (or 'validation') or 'test', got {split!r}")
    return s


def _dirs(root: Path) -> list[Path]:
    # torchmeta and several scripts keep the files one folder down.
    sub = [root / n for n in ("miniimagenet", "mini-imagenet", "mini_imagenet")]
    return [root] + [d for d in sub if d.is_dir()]


def _candidates(root: Path, split: str) -> dict[str, list[Path]]:
    """For each format, the paths that would hold ``split`` (first existing one wins)."""
    out: dict[str, list[Path]] = {f: [] for f in FORMATS}
    out["cache"].append(root / "metalearn-cache" / "miniimagenet" / f"{split}.json")
    for d in _dirs(root):
        out["learn2learn"] += [d / f"mini-imagenet-cache-{n}.pkl" for n in _L2L_NAMES[split]]
        out["torchmeta"].append(d / f"{split}_data.hdf5")
        out["metaoptnet"].append(d / _METAOPTNET[split])
        out["ravi"].append(d / f"{split}.csv")
        out["folders"] += [d / n for n in _FOLDER_NAMES[split]]
    return out


def _present(fmt: str, path: Path) -> bool:
    if fmt == "folders":
        return path.is_dir() and any(p.is_dir() for p in path.iterdir())
    if fmt == "ravi":
        return path.is_file() and (path.parent / "images").is_dir()
    return path.is_file()


def detect_format(
    root: str | PathLike[str], split: str, *, include_cache: bool = True
) -> tuple[str, Path]:
    """The layout holding ``split`` under ``root``, as ``(format, path)``.

    Formats are tried in the order of :data:`FORMATS`: a prepared cache first, then the
    ready-made arrays (learn2learn, torchmeta, MetaOptNet), then the JPEG layouts.
    ``include_cache=False`` looks for a source layout only (what ``prepare`` converts).

    Raises:
        FileNotFoundError: listing every path that was looked for.
    """
    root = Path(root)
    split = canonical_split(split)
    candidates = _candidates(root, split)
    formats = FORMATS if include_cache else FORMATS[1:]
    for fmt in formats:
        for path in candidates[fmt]:
            if _present(fmt, path):
                return fmt, path
    looked = "\n".join(
        f"  {fmt:12s} {p}" + ("  (+ images/)" if fmt == "ravi" else "")
        for fmt in formats
        for p in candidates[fmt]
    )
    raise FileNotFoundError(
        f"no MiniImagenet {split!r} split found under {root}. Looked for:\n{looked}\n"
        "Download it with metalearn.datasets.download('miniimagenet', root) or see "
        "docs/datasets.md for the supported layouts."
    )


def _group(labels: list[str], source: str) -> tuple[list[np.ndarray], list[str]]:
    names = sorted(set(labels))
    index = {n: i for i, n in enumerate(names)}
    buckets: list[list[int]] = [[] for _ in names]
    for row, label in enumerate(labels):
        buckets[index[label]].append(row)
    return [np.array(b, dtype=np.int64) for b in buckets], names


def _check_array(data: object, path: Path, what: str) -> np.ndarray:
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 4
        or data.shape[3] != 3
    ):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: {what} must be uint8 images [N, H, W, 3], got {desc}")
    return data


def _read_ravi(path: Path) -> Loaded:
    images = path.parent / "images"
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a text CSV file ({e})") from e
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise ValueError(f"{path}: expected the header 'filename,label', got {rows[:1]}")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(f"{path}, line {line}: expected 'filename,label', got {row}")
        entries.append((row[0].strip(), row[1].strip()))
    if not entries:
        raise ValueError(f"{path} lists no images")
    data = np.empty((len(entries), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, (filename, _) in enumerate(entries):
        file = images / filename
        if not file.is_file():
            raise FileNotFoundError(f"{file} is listed in {path} but missing")
        data[i] = decode_image(str(file), str(file), "RGB", IMAGE_SIZE)
    rows_, names = _group([label for _, label in entries], str(path))
    return data, rows_, names, f"ravi {path}"


def _read_folders(path: Path) -> Loaded:
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    files = [
        sorted(f for f in d.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES) for d in class_dirs
    ]
    for d, fs in zip(class_dirs, files, strict=True):
        if not fs:
            raise ValueError(f"class folder {d} holds no .jpg/.jpeg/.png images")
    data = np.empty((sum(map(len, files)), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    rows, start = [], 0
    for fs in files:
        for j, f in enumerate(fs):
            data[start + j] = decode_image(str(f), str(f), "RGB", IMAGE_SIZE)
        rows.append(np.arange(start, start + len(fs)))
        start += len(fs)
    return data, rows, [d.name for d in class_dirs], f"folders {path}"


def _read_learn2learn(path: Path) -> Loaded:
    obj = load_pickle(path)
    if not isinstance(obj, dict) or "image_data" not in obj or "class_dict" not in obj:
        raise ValueError(f"{path}: expected a dict with 'image_data' and 'class_dict'")
    data = _check_array(obj["image_data"], path, "image_data")
    class_dict = obj["class_dict"]
    if not isinstance(class_dict, dict) or not class_dict:
        raise ValueError(f"{path}: class_dict must be a non-empty dict wnid -> row indices")
    names = sorted(class_dict)
    rows = []
    for n in names:
        try:
            rows.append(np.asarray(class_dict[n], dtype=np.int64).reshape(-1))
        except (TypeError, ValueError):
            raise ValueError(
                f"{path}: class_dict[{n!r}] must list integer row indices of image_data, got "
                f"{class_dict[n]!r:.60}"
            ) from None
    for n, r in zip(names, rows, strict=True):
        if r.size and (r.min() < 0 or r.max() >= len(data)):
            raise ValueError(f"{path}: class {n!r} indexes rows outside image_data")
    return data, rows, names, f"learn2learn {path}"


def _read_torchmeta(path: Path) -> Loaded:
    h5py = require_h5py()
    labels_path = path.with_name(path.name.replace("_data.hdf5", "_labels.json"))
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path} is missing (torchmeta keeps it next to {path})")
    try:
        labels = json.loads(labels_path.read_text())
    except ValueError as e:
        raise ValueError(f"{labels_path} is not valid JSON ({e})") from e
    try:
        with h5py.File(path, "r") as f:
            if "datasets" not in f:
                raise ValueError(f"{path} has no 'datasets' group")
            group = f["datasets"]
            names = sorted(group.keys())
            if sorted(map(str, labels)) != names:
                raise ValueError(
                    f"{labels_path} lists {len(labels)} classes that differ from the "
                    f"{len(names)} arrays in {path}"
                )
            arrays = [_check_array(group[n][()], path, f"datasets/{n}") for n in names]
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e})") from e
    counts = [len(a) for a in arrays]
    starts = np.concatenate([[0], np.cumsum(counts)])
    rows = [np.arange(starts[i], starts[i + 1]) for i in range(len(names))]
    return np.concatenate(arrays), rows, names, f"torchmeta {path}"


def _read_metaoptnet(path: Path) -> Loaded:
    # Python-2 pickles: latin1 keeps numpy's byte buffers intact.
    obj = load_pickle(path, encoding="latin1")
    if not isinstance(obj, dict) or not {"data", "labels", "catname2label"} <= set(obj):
        raise ValueError(f"{path}: expected a dict with 'data', 'labels' and 'catname2label'")
    data = _check_array(obj["data"], path, "data")
    labels = [int(v) for v in np.asarray(obj["labels"]).reshape(-1)]
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(labels)} labels for {len(data)} images")
    label_to_name = {int(v): str(k) for k, v in obj["catname2label"].items()}
    missing = sorted(set(labels) - set(label_to_name))
    if missing:
        raise ValueError(f"{path}: labels {missing[:5]} have no entry in catname2label")
    rows, names = _group([label_to_name[v] for v in labels], str(path))
    return data, rows, names, f"metaoptnet {path}"


def _read_cache(path: Path) -> Loaded:
    root = path.parents[2]
    found = read_cache(root, "miniimagenet", path.stem)
    assert found is not None  # detect_format saw the index
    return found


_READERS: dict[str, Callable[[Path], Loaded]] = {
    "cache": _read_cache,
    "learn2learn": _read_learn2learn,
    "torchmeta": _read_torchmeta,
    "metaoptnet": _read_metaoptnet,
    "ravi": _read_ravi,
    "folders": _read_folders,
}


def read_split(root: str | PathLike[str], split: str, format: str = "auto") -> tuple[str, Loaded]:
    """Read one split in ``format`` (or the detected one): ``(format, loaded)``."""
    root = Path(root)
    split = canonical_split(split)
    fmt = _ALIASES.get(format, format)
    if fmt == "auto":
        fmt, path = detect_format(root, split)
    elif fmt in _READERS:
        candidates = _candidates(root, split)[fmt]
        found = [p for p in candidates if _present(fmt, p)]
        if not found:
            looked = ", ".join(str(p) for p in candidates)
            raise FileNotFoundError(
                f"no MiniImagenet {split!r} split in {fmt!r} format under {root}; "
                f"looked for {looked}"
            )
        path = found[0]
    else:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    return fmt, _READERS[fmt](path)


class MiniImagenet(ImageClasses):
    """MiniImagenet: 100 ImageNet classes, 600 colour images each, 3 x 84 x 84.

    The Ravi & Larochelle (2017) split: 64 training, 16 validation and 20 test classes. The
    layout under ``root`` is detected (``format="auto"``); supported are a prepared cache
    (:func:`metalearn.datasets.prepare`, memory-mapped), learn2learn's
    ``mini-imagenet-cache-{split}.pkl``, torchmeta's ``{split}_data.hdf5`` +
    ``{split}_labels.json``, the MetaOptNet/RFS ``miniImageNet_category_split_*.pickle`` files,
    Ravi & Larochelle's ``{split}.csv`` + ``images/`` and the MAML folder layout
    ``{split}/<wnid>/*.jpg``. Whatever the layout, classes are the sorted wnids and images of a
    class keep their order in the files, so every layout gives the same dataset.
    Pickles are read with :func:`~metalearn.datasets.load_pickle` (no code runs).

    Images are ``float32`` in ``[0, 1]``, ``3 x 84 x 84``; images of another size (the original
    JPEGs of the CSV layout) are converted to RGB and resized with Lanczos filtering.

    Args:
        root: the folder holding the files (or a ``miniimagenet/`` folder inside it).
        split: ``"train"``, ``"val"`` (or ``"validation"``) or ``"test"``.
        format: ``"auto"`` or one of ``"cache"``, ``"learn2learn"``, ``"torchmeta"``,
            ``"metaoptnet"``, ``"ravi"`` (alias ``"csv"``), ``"folders"`` (alias ``"maml"``).
        check_classes: require the standard 64/16/20 classes; pass False for a subset or a
            custom split (e.g. tiny test datasets).

    Raises:
        FileNotFoundError: listing every path looked for when no layout matches.
        ValueError: naming the file that is corrupt, truncated or inconsistent.

    Example:
        >>> import metalearn as ml
        >>> train = ml.datasets.MiniImagenet("data/miniimagenet", split="train")  # doctest: +SKIP
        >>> tasks = ml.tasks.FewShot(train, n_way=5, k_shot=1, k_query=15)  # doctest: +SKIP

    Reference:
        Vinyals et al. Matching Networks for One Shot Learning. NeurIPS 2016;
        Ravi, Larochelle. Optimization as a Model for Few-Shot Learning. ICLR 2017.
    """

    def __init__(
        self,
        root: str | PathLike[str],
        split: str = "train",
        format: str = "auto",
        *,
        check_classes: bool = True,
    ) -> None:
        self.split = canonical_split(split)
        self.format, (data, rows, names, source) = read_split(root, self.split, format)
        expected = SPLIT_CLASSES[self.split]
        if check_classes and len(names) != expected:
            raise ValueError(
                f"{source}: found {len(names)} classes in the {self.split!r} split, the "
                f"standard split has {expected}; the files may be incomplete. Pass "
                "check_classes=False to load a subset or a custom split."
            )
        channels_first = self.format == "cache"
        shape = (3, IMAGE_SIZE, IMAGE_SIZE) if channels_first else (IMAGE_SIZE, IMAGE_SIZE, 3)
        if data.shape[1:] != shape:
            raise ValueError(f"{source}: images must be {shape}, got {data.shape[1:]}")
        super().__init__(data, rows, names, channels_first=channels_first, source=source)
