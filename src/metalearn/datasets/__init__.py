"""On-disk few-shot datasets: MiniImagenet (every layout), Omniglot, and your own ImageFolder.

``MiniImagenet`` and ``Omniglot`` load into :class:`ImageClasses` (uint8 images grouped by
class, returned as float32 tensors in [0, 1]), which :class:`metalearn.tasks.FewShot` samples
N-way K-shot tasks from. ``prepare`` converts a dataset once into a memory-mapped cache;
``download`` fetches the public files with checksums; ``load_pickle`` unpickles strangers'
files without running their code. See ``docs/datasets.md``.
"""

from metalearn.datasets.base import ClassDataset, ImageClasses
from metalearn.datasets.download import (
    SOURCES,
    ChecksumError,
    DownloadError,
    Source,
    download,
    fetch,
)
from metalearn.datasets.folder import ImageFolder
from metalearn.datasets.miniimagenet import MiniImagenet
from metalearn.datasets.omniglot import Omniglot
from metalearn.datasets.oneshot_runs import OneShotRuns
from metalearn.datasets.prepare import prepare
from metalearn.datasets.safe_pickle import UnsafePickleError, load_pickle

__all__ = [
    "SOURCES",
    "ChecksumError",
    "ClassDataset",
    "DownloadError",
    "ImageClasses",
    "ImageFolder",
    "MiniImagenet",
    "Omniglot",
    "OneShotRuns",
    "Source",
    "UnsafePickleError",
    "download",
    "fetch",
    "load_pickle",
    "prepare",
]
