"""Images grouped by class: the one structure every few-shot dataset loads into."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = ["ClassDataset", "ImageClasses"]


@runtime_checkable
class ClassDataset(Protocol):
    """What :class:`metalearn.tasks.FewShot` needs from a dataset.

    ``num_classes`` classes, ``class_sizes[c]`` images in class ``c``, and ``gather(classes,
    indices)`` returning the images ``indices[i, j]`` of class ``classes[i]`` as a float tensor
    ``[len(classes), indices.shape[1], C, H, W]``.
    """

    @property
    def num_classes(self) -> int: ...

    @property
    def class_sizes(self) -> np.ndarray: ...

    def gather(self, classes: Tensor, indices: Tensor) -> Tensor: ...


class ImageClasses:
    """A labelled image collection indexed for fast N-way K-shot sampling.

    Images are stored once as ``uint8`` (``[N, H, W, C]``, ``[N, H, W]`` for grayscale, or
    ``[N, C, H, W]`` with ``channels_first=True``), in
    memory or as a read-only ``numpy.memmap`` that is never copied as a whole; only the rows a
    task asks for are read. They are returned as ``float32`` tensors ``C x H x W`` with values in
    ``[0, 1]`` (``uint8 / 255``); normalise in a model or an augmentation hook if you want.

    ``rotations`` turns every stored class into ``len(rotations)`` classes, the same images
    rotated counter-clockwise by that many degrees (Omniglot's rotated classes, Santoro et al.
    2016; Vinyals et al. 2016). Class ``c`` is stored class ``c // len(rotations)`` rotated by
    ``rotations[c % len(rotations)]``. ``mirror=True`` doubles the classes again with the
    images reflected left to right (before any rotation): a mirrored character is a new
    character, as a rotated one is. Then class ``c`` is stored class ``c // (2 * R)``, reflected
    when ``(c // R) % 2`` is 1, rotated by ``rotations[c % R]`` (``R = len(rotations)``).

    Args:
        data: ``uint8`` images ``[N, H, W, C]`` or ``[N, H, W]``.
        class_rows: for each stored class, the rows of ``data`` holding its images, in order.
        class_names: one name per stored class (e.g. the ImageNet wnid).
        rotations: multiples of 90 degrees; ``(0,)`` (default) adds no rotated classes.
        groups: optional group name of each stored class (an alphabet, a tissue, an assay
            family); :class:`~metalearn.tasks.FewShot` can draw all classes of a task from one
            group (``groups=ds.class_groups``). A rotated class is its own group's rotation
            (``group/rotDDD``), so a within-group task never mixes orientations.
        mirror: add each class reflected left to right as a new class (``name/mirror``,
            ``name/mirror/rotDDD``; its group likewise), doubling :attr:`num_classes`.
        channels_first: ``data`` is ``[N, C, H, W]`` (the prepared cache's layout). Colour
            images given ``[N, H, W, C]`` are copied once to channels-first; grayscale and
            channels-first data are used as they are (memory maps are never read whole).
        source: where the images came from (shown in ``repr`` and error messages).

    Example:
        >>> import numpy as np
        >>> from metalearn.datasets import ImageClasses
        >>> data = np.zeros((6, 8, 8, 3), dtype=np.uint8)
        >>> ds = ImageClasses.from_labels(data, [0, 0, 0, 1, 1, 1], ["cat", "dog"])
        >>> ds.num_classes, ds.images(1, [0, 2]).shape
        (2, torch.Size([2, 3, 8, 8]))
    """

    def __init__(
        self,
        data: np.ndarray,
        class_rows: Sequence[Sequence[int] | np.ndarray],
        class_names: Sequence[str],
        *,
        rotations: Sequence[int] = (0,),
        groups: Sequence[str] | None = None,
        mirror: bool = False,
        channels_first: bool = False,
        source: str = "",
    ) -> None:
        if not isinstance(data, np.ndarray):
            raise TypeError(f"data must be a numpy array, got {type(data).__name__}")
        if data.dtype != np.uint8:
            raise TypeError(f"data must have dtype uint8, got {data.dtype}")
        if data.ndim == 3:
            data = data[:, None]  # a view: memory maps stay memory maps
        elif data.ndim == 4 and not channels_first:
            # Stored channels-first so that a task's images convert to float in one contiguous
            # pass (a strided permute-and-convert is several times slower). A view when C == 1.
            data = (
                data.transpose(0, 3, 1, 2)
                if data.shape[3] == 1
                else np.ascontiguousarray(data.transpose(0, 3, 1, 2))
            )
        if data.ndim != 4:
            raise ValueError(f"data must be [N, H, W, C] or [N, H, W], got {data.shape}")
        if len(class_rows) != len(class_names):
            raise ValueError(
                f"class_rows has {len(class_rows)} classes but class_names has {len(class_names)}"
            )
        if not class_rows:
            raise ValueError(f"no classes in {source or 'the dataset'}")
        if groups is not None and len(groups) != len(class_rows):
            raise ValueError(
                f"groups has {len(groups)} entries but there are {len(class_rows)} classes; "
                "give one group name per class"
            )
        rotations = tuple(int(r) for r in rotations)
        if not rotations or any(r % 90 for r in rotations) or len(set(rotations)) != len(rotations):
            raise ValueError(f"rotations must be distinct multiples of 90, got {rotations}")
        sizes = np.array([len(r) for r in class_rows], dtype=np.int64)
        if (sizes == 0).any():
            empty = class_names[int(np.argmax(sizes == 0))]
            raise ValueError(f"class {empty!r} of {source or 'the dataset'} has no images")
        table = np.zeros((len(class_rows), int(sizes.max())), dtype=np.int64)
        for i, rows in enumerate(class_rows):
            rows = np.asarray(rows, dtype=np.int64)
            if rows.min() < 0 or rows.max() >= len(data):
                raise ValueError(
                    f"rows of class {class_names[i]!r} fall outside data ({len(data)} images)"
                )
            table[i, : sizes[i]] = rows
        if not isinstance(mirror, bool):
            raise TypeError(f"mirror must be True or False, got {mirror!r}")
        if rotations != (0,) and data.shape[2] != data.shape[3]:
            raise ValueError(f"rotations need square images, got {data.shape[2:]}")
        self.data = data
        self.source = source
        self.rotations = rotations
        self.mirror = mirror
        self.base_names = list(class_names)
        self._rows = table
        self._base_sizes = sizes
        n_rot, n_flip = len(rotations), 1 + mirror
        self._class_base = np.repeat(np.arange(len(class_rows)), n_flip * n_rot)
        turns = np.array([r // 90 % 4 for r in rotations])
        self._class_turns = np.tile(turns, n_flip * len(class_rows))
        self._class_flips = np.tile(np.repeat(np.arange(n_flip), n_rot), len(class_rows)) == 1
        self._sizes = sizes[self._class_base]
        self._names = _variants(class_names, rotations, mirror)
        self._groups = (
            None if groups is None else _variants([str(g) for g in groups], rotations, mirror)
        )
        self._offsets = np.concatenate([[0], np.cumsum(self._sizes)])

    @classmethod
    def from_labels(
        cls,
        data: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str] | None = None,
        *,
        channels_first: bool | None = None,
        **kwargs: Any,
    ) -> ImageClasses:
        """Group ``data`` by integer ``labels`` (classes ``0..max``, rows kept in order).

        Args:
            data: ``uint8`` images ``[N, H, W, C]``, ``[N, H, W]``, or ``[N, C, H, W]`` with
                ``channels_first=True``.
            labels: one class index per image.
            class_names: one name per class (default ``"0"``, ``"1"``, ...).
            channels_first: whether 4-D ``data`` is ``[N, C, H, W]``. ``None`` (default) means
                channels-last, except that an array whose axis 1 is 1 or 3 and whose last axis
                is not (e.g. ``(N, 3, 8, 8)``, torchvision's layout) raises: say which it is.
            **kwargs: the other arguments of :class:`ImageClasses` (``rotations``,
                ``groups``, ``source``).

        Returns:
            The :class:`ImageClasses`.

        Raises:
            ValueError: for a channels-first-looking array without ``channels_first``, or
                labels that do not match ``data``.

        Example:
            >>> import numpy as np
            >>> data = np.zeros((4, 3, 8, 8), dtype=np.uint8)  # [N, C, H, W]
            >>> ImageClasses.from_labels(data, [0, 0, 1, 1], channels_first=True).image_shape
            (3, 8, 8)
        """
        if channels_first is None:
            shape = getattr(data, "shape", ())
            if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
                raise ValueError(
                    f"data of shape {tuple(shape)} looks channels-first ([N, C, H, W]) but "
                    "ImageClasses reads [N, H, W, C] by default; pass channels_first=True "
                    "(or channels_first=False if it really is [N, H, W, C])"
                )
            channels_first = False
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(data),):
            raise ValueError(f"labels must have shape ({len(data)},), got {labels.shape}")
        num = int(labels.max()) + 1 if len(labels) else 0
        rows = [np.flatnonzero(labels == c) for c in range(num)]
        names = [str(c) for c in range(num)] if class_names is None else list(class_names)
        return cls(data, rows, names, channels_first=channels_first, **kwargs)

    @property
    def num_classes(self) -> int:
        """Number of classes (stored classes times rotations, times 2 with ``mirror``)."""
        return len(self._names)

    @property
    def class_names(self) -> list[str]:
        """Class names in class-index order (``name/rotDDD`` rotated, ``name/mirror`` mirrored)."""
        return list(self._names)

    @property
    def class_groups(self) -> list[str] | None:
        """Group name of each class in class-index order (None when the data has no groups)."""
        return None if self._groups is None else list(self._groups)

    @property
    def class_sizes(self) -> np.ndarray:
        """Number of images of each class (int64 array, read-only copy)."""
        return self._sizes.copy()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the returned tensors."""
        _, c, h, w = self.data.shape
        return (c, h, w)

    @property
    def is_memmap(self) -> bool:
        """Whether the images are memory-mapped from disk rather than held in memory."""
        base = self.data
        while base is not None:
            if isinstance(base, np.memmap):
                return True
            base = base.base if isinstance(base, np.ndarray) else None
        return False

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Image ``index`` of the whole collection (classes in order) and its class label."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"image index {index} out of range for {len(self)} images")
        index %= len(self)
        c = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.images(c, [index - int(self._offsets[c])])[0], c

    def images(self, class_index: int, indices: Sequence[int] | Tensor | None = None) -> Tensor:
        """Images ``indices`` (default: all) of class ``class_index``: ``[n, C, H, W]`` float32."""
        if not 0 <= class_index < self.num_classes:
            raise IndexError(f"class_index {class_index} out of range for {self.num_classes}")
        size = int(self._sizes[class_index])
        if indices is None:
            indices = torch.arange(size)
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(1, -1)
        return self.gather(torch.tensor([class_index]), indices)[0]

    def gather(self, classes: Tensor, indices: Tensor) -> Tensor:
        """Images ``indices[i, j]`` of class ``classes[i]``: ``[M, k, C, H, W]`` float32 in [0, 1].

        One fancy-indexing read of the (memory-mapped) array for all ``M * k`` images; the hot
        path of :class:`~metalearn.tasks.FewShot`.
        """
        classes = np.asarray(torch.as_tensor(classes, dtype=torch.int64))
        idx = np.asarray(torch.as_tensor(indices, dtype=torch.int64))
        if classes.ndim != 1 or idx.ndim != 2 or idx.shape[0] != classes.shape[0]:
            raise ValueError(
                f"classes must be [M] and indices [M, k], got {classes.shape} and {idx.shape}"
            )
        if classes.size and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise IndexError(f"class index out of range for {self.num_classes} classes")
        if idx.size and (idx.min() < 0 or (idx >= self._sizes[classes][:, None]).any()):
            raise IndexError("image index out of range for its class")
        m, k = idx.shape
        rows = self._rows[self._class_base[classes][:, None], idx].reshape(-1)
        raw = torch.from_numpy(self.data[rows])  # [M*k, C, H, W] uint8: the only read
        out = raw.to(torch.float32).div_(255.0).view(m, k, *self.image_shape)
        flips = np.flatnonzero(self._class_flips[classes])
        if flips.size:
            sel = torch.from_numpy(flips)
            out[sel] = torch.flip(out[sel], dims=(-1,))
        turns = self._class_turns[classes]
        for t in np.unique(turns):
            if t:
                sel = torch.from_numpy(np.flatnonzero(turns == t))
                out[sel] = torch.rot90(out[sel], int(t), dims=(-2, -1))
        return out

    def __repr__(self) -> str:
        kind = "memmap" if self.is_memmap else "in memory"
        return (
            f"{type(self).__name__}({self.num_classes} classes, {len(self)} images "
            f"{self.image_shape}, {kind}{', ' + self.source if self.source else ''})"
        )


def _variants(names: Sequence[str], rotations: tuple[int, ...], mirror: bool) -> list[str]:
    """Per-class names of the rotated and mirrored copies, in class-index order.

    ``name/rotDDD`` for each angle (just ``name`` for ``rotations=(0,)``), then with ``mirror``
    the same again under ``name/mirror``.
    """
    rots = [""] if rotations == (0,) else [f"/rot{r:03d}" for r in rotations]
    flips = ["", "/mirror"] if mirror else [""]
    return [f"{n}{f}{r}" for n in names for f in flips for r in rots]
