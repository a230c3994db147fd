"""A run folder owned by one run at a time, holding only what runs write.

:func:`claim_run_folder` locks the folder (an ``flock`` on ``.metalearn.lock``, released by the
operating system when the process ends, even on ``kill -9``), so a second run started in the same
folder is refused instead of interleaving its files with the first. It also refuses a folder
holding files that no run wrote (a user's own ``config.yaml`` or notes), so that nothing the run
did not write is ever overwritten.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["LOCK_FILE", "RUN_FILES", "RunFolderError", "claim_run_folder", "foreign_files"]

#: The lock file of a run folder.
LOCK_FILE = ".metalearn.lock"
#: Every name a run writes in its folder (temporary files of atomic writes aside).
RUN_FILES = frozenset(
    {
        "checkpoint.pt",
        "best.pt",
        "config.yaml",
        "metrics.jsonl",
        "test.json",
        "plots",
        "tensorboard",
        LOCK_FILE,
    }
)


class RunFolderError(OSError):
    """A run folder is in use by another run, or holds files that no run wrote."""


def _is_run_temporary(name: str) -> bool:
    # Left by an atomic write that was killed: ".checkpoint.pt.<random>.tmp", "metrics.jsonl.tmp".
    return name.endswith(".tmp") and any(
        name.startswith((f".{f}.", f"{f}.")) for f in RUN_FILES if f.endswith((".pt", ".jsonl"))
    )


def foreign_files(folder: str | os.PathLike[str]) -> list[str]:
    """Names in ``folder`` that a run does not write (sorted; empty when there is no folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name not in RUN_FILES and not _is_run_temporary(p.name)
    )


def remove_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete what killed atomic writes left in ``folder``; returns the removed paths.

    Call only while holding the folder's lock: another run's write in progress looks the same.
    """
    folder = Path(folder)
    removed = [p for p in folder.iterdir() if _is_run_temporary(p.name)] if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _lock(handle) -> bool:
    """Take an exclusive lock on an open file without waiting; ``False`` when another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks a byte range of the file instead
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def claim_run_folder(folder: str | os.PathLike[str], allowed: Iterable[str] = ()) -> Iterator[Path]:
    """Lock ``folder`` (created if missing) for the duration of the ``with`` block.

    Args:
        folder: the run folder.
        allowed: names besides the run's own files that may be in the folder.

    Raises:
        RunFolderError: when another process holds the folder, or it holds files that no run
            writes (naming them).
    """
    folder = Path(folder)
    foreign = [name for name in foreign_files(folder) if name not in set(allowed)]
    if foreign:
        raise RunFolderError(
            f"{folder} holds files that metalearn runs do not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); choose another --run-dir (an empty or new "
            "folder) so that they are not overwritten"
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")
    try:
        if not _lock(handle):
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise RunFolderError(
                f"{folder} is in use by another run ({owner}); wait for it to finish or "
                "choose another --run-dir"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {_host()}\n")
        handle.flush()
        yield folder
    finally:
        handle.close()  # releases the lock; the empty file stays (removing it would race)


def _host() -> str:
    import socket

    return socket.gethostname()
