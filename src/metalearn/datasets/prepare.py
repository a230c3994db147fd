"""One-time conversion of a dataset to the memory-mapped cache (``metalearn data prepare``)."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from metalearn.datasets import miniimagenet, omniglot
from metalearn.datasets.cache import CACHE_DIR, write_cache
from metalearn.datasets.folder import IMAGE_EXTENSIONS, decode_classes, prepare_folder

__all__ = ["prepare"]


def prepare(
    name: str,
    root: str | PathLike[str],
    *,
    format: str = "auto",
    splits: Sequence[str] | None = None,
    image_size: int = 28,
    mode: str = "RGB",
    invert: bool = False,
    overwrite: bool = False,
) -> Path:
    """Convert a dataset under ``root`` once into ``root/metalearn-cache/<name>/``.

    Decoding JPEGs or unpickling a 1 GB file at every start is slow; afterwards
    :class:`~metalearn.datasets.MiniImagenet` and :class:`~metalearn.datasets.Omniglot` find the
    cache by themselves and memory-map it (``format="auto"``), so loading takes milliseconds and
    memory holds only the images a task touches. Files are written under temporary names and
    renamed into place, the JSON index last.

    ``name="folder"`` caches an :class:`~metalearn.datasets.ImageFolder` (a folder of class
    folders, or a zip of one) with the given ``image_size``, ``mode`` and ``invert``; the cache
    of a folder lives inside it, that of a zip beside the zip.

    Args:
        name: ``"miniimagenet"``, ``"omniglot"`` or ``"folder"``.
        root: the dataset folder (any layout the loader reads), or the zip for ``"folder"``.
        format: MiniImagenet source layout (``"auto"`` detects it, never the cache itself).
        splits: MiniImagenet splits to convert; default every split present under ``root``.
        image_size: Omniglot / folder image side stored in the cache (28 in the papers).
        mode: ``"RGB"`` or ``"L"`` (grayscale), for ``"folder"``.
        invert: store ``255 - pixel``, for ``"folder"``.
        overwrite: rebuild parts that are already cached.

    Returns:
        The cache folder.

    Raises:
        ValueError: for an unknown ``name``, or naming a damaged source file.
        FileNotFoundError: listing what was looked for when nothing is found.

    Example:
        >>> import metalearn as ml
        >>> ml.datasets.prepare("miniimagenet", "data/miniimagenet")  # doctest: +SKIP
        PosixPath('data/miniimagenet/metalearn-cache/miniimagenet')
    """
    root = Path(root)
    key = name.lower().replace("-", "").replace("_", "")
    if key == "miniimagenet":
        return _prepare_miniimagenet(root, format, splits, overwrite)
    if key == "omniglot":
        if format not in ("auto", "files"):
            raise ValueError(
                f"Omniglot has one source format; format must be 'auto', got {format!r}"
            )
        return _prepare_omniglot(root, image_size, overwrite)
    if key in ("folder", "imagefolder"):
        return prepare_folder(root, image_size, mode, invert, IMAGE_EXTENSIONS, overwrite)
    raise ValueError(f"name must be 'miniimagenet', 'omniglot' or 'folder', got {name!r}")


def _prepare_miniimagenet(
    root: Path, format: str, splits: Sequence[str] | None, overwrite: bool
) -> Path:
    if format == "cache":
        raise ValueError("format='cache' reads the cache; name the source layout or use 'auto'")
    out = root / CACHE_DIR / "miniimagenet"
    if splits is None:
        wanted, errors = [], []
        for s in miniimagenet.SPLIT_CLASSES:
            try:
                _detect_source(root, s, format)
                wanted.append(s)
            except FileNotFoundError as e:
                errors.append(str(e))
        if not wanted:
            raise FileNotFoundError("\n".join(errors))
    else:
        wanted = [miniimagenet.canonical_split(s) for s in splits]
    for split in wanted:
        index = out / f"{split}.json"
        if index.exists() and not overwrite:
            continue
        fmt = _detect_source(root, split, format)
        _, (data, rows, names, source) = miniimagenet.read_split(root, split, fmt)
        write_cache(root, "miniimagenet", split, data, rows, names, source)
    return out


def _detect_source(root: Path, split: str, format: str) -> str:
    if format != "auto":
        return format
    return miniimagenet.detect_format(root, split, include_cache=False)[0]


def _prepare_omniglot(root: Path, image_size: int, overwrite: bool) -> Path:
    out = root / CACHE_DIR / "omniglot"
    part = f"all-{image_size}"
    if (out / f"{part}.json").exists() and not overwrite:
        return out
    chars = omniglot.list_characters(root)
    data, rows = decode_classes(chars, image_size, "L", invert=True)
    write_cache(root, "omniglot", part, data, rows, [c.name for c in chars], f"files {root}")
    return out
