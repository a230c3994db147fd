"""Image classes by shape, not by name: every folder of images is a class.

A researcher's own images (cells, tissues, rendered compounds) usually sit on disk as one folder
per class, perhaps grouped in parent folders (a cell line, a tissue, an alphabet), as plain
folders or as one zip. :class:`ImageFolder` reads that layout into
:class:`~metalearn.datasets.ImageClasses`, so :class:`~metalearn.tasks.FewShot` samples N-way
K-shot tasks from it the same way as from the named datasets; :class:`Omniglot` is a thin layer
on the same listing and decoding.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path, PurePosixPath

import numpy as np

from metalearn._checks import check_int
from metalearn.datasets._imageio import decode_image
from metalearn.datasets.base import ImageClasses
from metalearn.datasets.cache import cache_files, read_cache, write_cache

__all__ = ["IMAGE_EXTENSIONS", "ImageClass", "ImageFolder", "decode_classes", "list_image_classes"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MODES = {"L": 1, "RGB": 3}


@dataclass(frozen=True)
class ImageClass:
    """One class on disk: its name (the folder's path, ``/``-separated) and its image files.

    Attributes:
        name: the folder's path relative to the root, e.g. ``"Greek/character01"``.
        files: file paths, or member names inside ``archive``, sorted.
        archive: the zip holding the files; None for plain folders.
    """

    name: str
    files: tuple[str, ...]
    archive: str | None = None

    @property
    def group(self) -> str:
        """The parent folder's path (``""`` for a class at the top level)."""
        parent = str(PurePosixPath(self.name).parent)
        return "" if parent == "." else parent


def _is_image(name: str, extensions: Sequence[str]) -> bool:
    return name.lower().endswith(tuple(extensions)) and not PurePosixPath(name).name.startswith(".")


def _classes_from_paths(
    paths: Sequence[PurePosixPath], source: str, extensions: Sequence[str]
) -> dict[str, list[str]]:
    """Group image paths (relative, posix) by their folder; refuse folders that mix levels."""
    by_folder: dict[str, list[str]] = {}
    for p in paths:
        if _is_image(p.name, extensions) and len(p.parts) > 1:
            by_folder.setdefault(str(p.parent), []).append(str(p))
    folders = set(by_folder)
    for folder in folders:
        for parent in PurePosixPath(folder).parents:
            if str(parent) in folders:
                raise ValueError(
                    f"{source}: folder {parent} holds images and also the class folder {folder}; "
                    "a class is a folder of images only: move the images of "
                    f"{parent} into a subfolder of their own"
                )
    return by_folder


def list_image_classes(
    source: str | PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> list[ImageClass]:
    """Every folder of images under ``source`` (a folder or a ``.zip``), sorted by name.

    A zip whose members all sit under one top folder (a zipped folder) reads like that folder:
    names are relative to it. Images directly at the top level belong to no class and are
    refused, as is a folder holding both images and class folders.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: naming the file for an unreadable zip, or the folder for a mixed layout or
            when no images are found.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_file():
        try:
            with zipfile.ZipFile(source) as z:
                members = [PurePosixPath(n) for n in z.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as e:
            raise ValueError(
                f"{source} is not a readable zip archive ({e}); pass a folder of class "
                "folders or a zip of one"
            ) from e
        tops = {m.parts[0] for m in members if len(m.parts) > 1}
        top_files = [m for m in members if len(m.parts) == 1 and _is_image(m.name, extensions)]
        strip = next(iter(tops)) if len(tops) == 1 and not top_files else None
        relative = {
            (PurePosixPath(*m.parts[1:]) if strip else m): str(m)
            for m in members
            if not strip or len(m.parts) > 1
        }
        by_folder = _classes_from_paths(list(relative), str(source), extensions)
        classes = [
            ImageClass(name, tuple(sorted(relative[PurePosixPath(f)] for f in files)), str(source))
            for name, files in sorted(by_folder.items())
        ]
    else:
        paths = [
            PurePosixPath(p.relative_to(source).as_posix())
            for p in source.rglob("*")
            if p.is_file()
        ]
        by_folder = _classes_from_paths(paths, str(source), extensions)
        classes = [
            ImageClass(name, tuple(sorted(str(source / f) for f in files)))
            for name, files in sorted(by_folder.items())
        ]
    if not classes:
        raise ValueError(
            f"no class folders of images ({', '.join(extensions)}) found in {source}; "
            "expected <root>/<class>/<image> (classes may be nested in group folders)"
        )
    return classes


def decode_classes(
    classes: Sequence[ImageClass], image_size: int, mode: str = "RGB", invert: bool = False
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Decode, resize (and optionally invert) every image: ``uint8 [N, S, S(, 3)]``, rows per class.

    Raises:
        ValueError: naming the image (and its zip) if it cannot be read or decoded.
    """
    total = sum(len(c.files) for c in classes)
    shape = (total, image_size, image_size) + ((3,) if mode == "RGB" else ())
    data = np.empty(shape, dtype=np.uint8)
    rows, start = [], 0
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for c in classes:
            for j, f in enumerate(c.files):
                if c.archive is None:
                    item: str | bytes = f
                    label = f
                else:
                    if c.archive not in archives:
                        archives[c.archive] = zipfile.ZipFile(c.archive)
                    try:
                        item = archives[c.archive].read(f)
                    except (zipfile.BadZipFile, OSError) as e:
                        raise ValueError(f"cannot read {f} from {c.archive} ({e})") from e
                    label = f"{c.archive}:{f}"
                image = decode_image(item, label, mode, image_size)
                data[start + j] = 255 - image if invert else image
            rows.append(np.arange(start, start + len(c.files)))
            start += len(c.files)
    finally:
        for z in archives.values():
            z.close()
    return data, rows


def _cache_part(mode: str, image_size: int, invert: bool) -> str:
    return f"{mode.lower()}-{image_size}{'-inverted' if invert else ''}"


def _cache_dataset(source: Path) -> tuple[Path, str]:
    # The cache of a folder lives inside it; that of a zip beside it, named after the zip.
    if source.is_file():
        return source.parent, f"folder-{source.stem}"
    return source, "folder"


def prepare_folder(
    source: Path,
    image_size: int,
    mode: str,
    invert: bool,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    overwrite: bool = False,
) -> Path:
    """Decode ``source`` once into the memory-mapped cache; returns the cache folder.

    See :func:`~metalearn.datasets.prepare` (``name="folder"``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'L' (grayscale) or 'RGB', got {mode!r}")
    image_size = check_int("image_size", image_size, 1)
    root, dataset = _cache_dataset(source)
    part = _cache_part(mode, image_size, invert)
    index = cache_files(root, dataset, part)[1]
    if not index.exists() or overwrite:
        classes = list_image_classes(source, extensions)
        data, rows = decode_classes(classes, image_size, mode, invert)
        names = [c.name for c in classes]
        write_cache(root, dataset, part, data, rows, names, f"files {source}")
    return index.parent


class ImageFolder(ImageClasses):
    """Your own image classes: every folder of images under ``root`` is a class.

    The layout is ``root/<class>/<image>`` or, with groups, ``root/<group>/.../<class>/<image>``
    (e.g. ``cells/<cell line>/<treatment>/*.png``), as plain folders or one ``.zip`` (read
    without extracting). Images are decoded with Pillow, converted to grayscale (``mode="L"``)
    or RGB, resized to ``image_size x image_size`` (Lanczos) and optionally inverted (dark
    strokes on white, as Omniglot's, become bright on black). A class's group is its parent
    folder's path; ``FewShot(..., groups=ds.class_groups)`` then draws all classes of a task
    from one group. ``metalearn.datasets.prepare("folder", root, image_size=...)`` decodes once
    into a memory-mapped cache that later loads find by themselves.

    Args:
        root: the folder or ``.zip``.
        image_size: side of the returned images.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (grayscale, 1 channel).
        invert: store ``255 - pixel``.
        rotations: rotated copies of every class as new classes (multiples of 90).
        mirror: also add every (rotated) class reflected left to right as a new class.
        extensions: file endings that count as images (case-insensitive).
        format: ``"auto"`` (the cache if prepared with these settings, else the files),
            ``"cache"`` or ``"files"``.

    Raises:
        FileNotFoundError: if ``root`` does not exist (or ``format="cache"`` finds no cache).
        ValueError: naming the folder or file for an empty or mixed layout or a broken image.

    Example:
        >>> import metalearn as ml
        >>> cells = ml.datasets.ImageFolder("data/cells", image_size=64)  # doctest: +SKIP
        >>> tasks = ml.tasks.FewShot(cells, n_way=5, k_shot=1, k_query=5,
        ...                          groups=cells.class_groups)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | PathLike[str],
        *,
        image_size: int = 84,
        mode: str = "RGB",
        invert: bool = False,
        rotations: Sequence[int] = (0,),
        mirror: bool = False,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        format: str = "auto",
    ) -> None:
        root = Path(root)
        image_size = check_int("image_size", image_size, 1)
        if mode not in MODES:
            raise ValueError(f"mode must be 'L' (grayscale) or 'RGB', got {mode!r}")
        if format not in ("auto", "cache", "files"):
            raise ValueError(f"format must be 'auto', 'cache' or 'files', got {format!r}")
        if not root.exists():
            raise FileNotFoundError(f"image folder {root} does not exist")
        cache_root, dataset = _cache_dataset(root)
        part = _cache_part(mode, image_size, invert)
        cached = None if format == "files" else read_cache(cache_root, dataset, part)
        if format == "cache" and cached is None:
            raise FileNotFoundError(
                f"no cache for {root} with mode={mode!r}, image_size={image_size}, "
                f"invert={invert}: {cache_files(cache_root, dataset, part)[1]} is missing; run "
                f"metalearn.datasets.prepare('folder', {str(root)!r}, image_size={image_size})"
            )
        if cached is not None:
            data, rows, names, source = cached
            self.format = "cache"
        else:
            classes = list_image_classes(root, extensions)
            data, rows = decode_classes(classes, image_size, mode, invert)
            names, source = [c.name for c in classes], f"files {root}"
            self.format = "files"
        groups = [ImageClass(n, ()).group for n in names]
        super().__init__(
            data, rows, names, rotations=rotations, groups=groups, mirror=mirror,
            channels_first=cached is not None, source=source,
        )  # fmt: skip
