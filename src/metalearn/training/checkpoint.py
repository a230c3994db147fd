"""Checkpoints that survive a kill: atomic writes, ``weights_only`` loads, every RNG state.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(path, weights_only=True)``: loading never runs code from the file. It is written to
a temporary file in the destination folder, flushed to disk, then renamed over the destination,
so a reader (or a resumed run) only ever sees a complete file.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

#: Version of the checkpoint layout written by :class:`~metalearn.training.Trainer`.
CHECKPOINT_FORMAT = 1


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file, ``fsync``, then a rename.

    Killing the process at any moment leaves either the previous file or the new one, never a
    half-written checkpoint.

    Args:
        state: a dict that ``torch.load(weights_only=True)`` can read back (tensors, numbers,
            strings, ``None``, and lists/tuples/dicts of them).
        path: destination file; its folder is created if needed.

    Returns:
        The destination path.

    Example:
        >>> import tempfile, torch
        >>> path = save_checkpoint({"w": torch.ones(2)}, tempfile.mkdtemp() + "/ckpt.pt")
        >>> load_checkpoint(path)["w"]
        tensor([1., 1.])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened for this.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (no code from the file runs).

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        ValueError: naming ``path`` when it is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message goes on to suggest weights_only=False, which would run the file's
        # code: not advice to repeat for a file of unknown origin.
        raise ValueError(
            f"{path} was refused: it holds objects other than tensors and plain data, which "
            "metalearn never writes (a foreign or tampered file); it was not loaded"
        ) from e
    except Exception as e:
        # torch's first sentence says what failed; the rest is advice for its own users.
        detail = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() else ""
        detail = detail or type(e).__name__
        raise ValueError(
            f"{path} is not a readable metalearn checkpoint (truncated or corrupt: {detail})"
        ) from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a run depends on, as tensors and plain types (``weights_only``-safe).

    Args:
        generator: the task generator of the run (its state is stored under ``"tasks"``).

    Returns:
        dict with ``"tasks"`` (if given), ``"torch"``, ``"cuda"`` (one state per device),
        ``"numpy"`` and ``"python"``.
    """
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if generator is not None:
        state["tasks"] = generator.get_state()
    return state


def restore_rng_state(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`capture_rng_state` captured (and the task generator, if given).

    CUDA states are restored when CUDA is available with the same number of devices; a
    checkpoint written on a GPU machine still resumes on CPU (the CUDA states are unused there).
    """
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if generator is not None:
        if "tasks" not in state:
            raise ValueError("the checkpoint holds no task-generator state ('tasks')")
        generator.set_state(state["tasks"].cpu())
