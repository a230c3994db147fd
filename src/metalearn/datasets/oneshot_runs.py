"""Lake et al.'s one-shot classification benchmark: 20 runs of 20-way within-alphabet tasks."""

from __future__ import annotations

import re
import zipfile
from os import PathLike
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from metalearn.datasets._imageio import decode_image
from metalearn.tasks.batch import TaskBatch

__all__ = ["OneShotRuns"]

_RUN = re.compile(r"^run\d+$")


class _Files:
    """Read files by ``run/relative/path`` from a folder or a zip (of a folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        if root.is_file():
            try:
                self.zip = zipfile.ZipFile(root)
            except (zipfile.BadZipFile, OSError) as e:
                raise ValueError(f"{root} is not a readable zip archive ({e})") from e
            # A zip of the all_runs folder has its runs one level down.
            first = next((n for n in self.zip.namelist() if n.endswith("class_labels.txt")), None)
            if first is not None:
                parent = PurePosixPath(first).parent.parent
                self.prefix = "" if str(parent) == "." else f"{parent}/"
        elif not root.is_dir():
            raise FileNotFoundError(f"one-shot runs folder {root} does not exist")

    def runs(self) -> list[str]:
        if self.zip is not None:
            found = {
                PurePosixPath(n[len(self.prefix) :]).parts[0]
                for n in self.zip.namelist()
                if n.startswith(self.prefix) and n.endswith("class_labels.txt")
            }
        else:
            found = {p.parent.name for p in self.root.glob("*/class_labels.txt")}
        return sorted(r for r in found if _RUN.match(r))

    def read(self, path: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(self.prefix + path)
            return (self.root / path).read_bytes()
        except (KeyError, OSError) as e:
            raise FileNotFoundError(f"{self.root}: {path} is missing ({e})") from e

    def list(self, folder: str) -> list[str]:
        if self.zip is not None:
            start = f"{self.prefix}{folder}/"
            return sorted(
                n[len(self.prefix) :]
                for n in self.zip.namelist()
                if n.startswith(start) and n.lower().endswith(".png") and "/" not in n[len(start) :]
            )
        return sorted(f"{folder}/{p.name}" for p in (self.root / folder).glob("*.png"))

    def label(self, path: str) -> str:
        return f"{self.root}:{path}" if self.zip is not None else str(self.root / path)


class OneShotRuns:
    """The runs of Lake et al.'s one-shot benchmark (``all_runs`` of the Omniglot release).

    Each ``runXX/`` holds ``training/classNN.png`` (one drawing of each of 20 characters of
    one evaluation alphabet), ``test/itemNN.png`` (another drawer's drawing of each) and
    ``class_labels.txt``, one line per test image: ``runXX/test/itemNN.png
    runXX/training/classMM.png`` (the test image and its true class). Every run is one
    20-way 1-shot within-alphabet task: support = the training images with labels ``0..19``
    in file order, query = the test images with their true labels. Images are preprocessed as
    :class:`~metalearn.datasets.Omniglot`'s (resized with Lanczos, inverted: strokes are 1).
    Accuracy is over the 400 test images of the 20 runs; see
    :func:`metalearn.evaluate_runs`.

    Args:
        root: the folder holding ``run01/ ... run20/`` (or the ``all_runs.zip``).
        image_size: side of the returned images (28 for models trained as in the papers).

    Raises:
        FileNotFoundError: if ``root`` or a file named by a ``class_labels.txt`` is missing.
        ValueError: naming the file and line of a malformed ``class_labels.txt``.

    Example:
        >>> import metalearn as ml
        >>> runs = ml.datasets.OneShotRuns("data/omniglot/all_runs")  # doctest: +SKIP
        >>> result = ml.evaluate_runs(maml, runs, steps=10)  # doctest: +SKIP

    Reference:
        Lake, Salakhutdinov, Tenenbaum. Human-level concept learning through probabilistic
        program induction. Science 2015.
    """

    def __init__(self, root: str | PathLike[str], image_size: int = 28) -> None:
        self.root = Path(root)
        files = _Files(self.root)
        self.runs = files.runs()
        if not self.runs:
            raise FileNotFoundError(
                f"no runXX/class_labels.txt found in {self.root}; expected the one-shot "
                "benchmark's all_runs layout (run01/training, run01/test, run01/class_labels.txt)"
            )
        self.image_size = image_size
        self._tasks = [self._read_run(files, run) for run in self.runs]

    def _read_run(self, files: _Files, run: str) -> TaskBatch:
        training = files.list(f"{run}/training")
        if not training:
            raise FileNotFoundError(f"{files.label(run + '/training')} holds no .png images")
        label_of = {PurePosixPath(p).name: i for i, p in enumerate(training)}
        labels_file = f"{run}/class_labels.txt"
        queries, targets = [], []
        text = files.read(labels_file).decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(
                    f"{files.label(labels_file)} line {number}: expected 'test/itemNN.png "
                    f"training/classMM.png', got {line!r}"
                )
            test_path, class_path = (PurePosixPath(p) for p in parts)
            if class_path.name not in label_of:
                raise ValueError(
                    f"{files.label(labels_file)} line {number}: {class_path.name} is not among "
                    f"the {len(training)} images of {run}/training"
                )
            queries.append(f"{run}/test/{test_path.name}")
            targets.append(label_of[class_path.name])
        if not queries:
            raise ValueError(f"{files.label(labels_file)} lists no test images")

        def load(paths: list[str]) -> torch.Tensor:
            images = np.stack(
                [
                    255 - decode_image(files.read(p), files.label(p), "L", self.image_size)
                    for p in paths
                ]
            )
            return torch.from_numpy(images).float().div_(255.0).unsqueeze(1)

        return TaskBatch.from_tensors(
            load(training)[None],
            torch.arange(len(training))[None],
            load(queries)[None],
            torch.tensor(targets)[None],
        )

    def __len__(self) -> int:
        return len(self.runs)

    def task(self, index: int) -> TaskBatch:
        """Run ``index`` as a batch of one task (support: the training images, query: test)."""
        return self._tasks[index]

    def __repr__(self) -> str:
        return f"OneShotRuns({len(self.runs)} runs, {self.root})"
