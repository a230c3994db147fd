"""Load pickled datasets from strangers without letting them run code.

A pickle names the callables that rebuild its objects, so ``pickle.load`` on a hostile file can
call ``os.system``. Dataset pickles in the wild (learn2learn's MiniImagenet cache, the
MetaOptNet/RFS Python-2 pickles) only need numpy arrays, dtypes, numpy scalars, lists, dicts,
strings and numbers; :func:`load_pickle` allows exactly the callables numpy uses to rebuild those
and refuses every other global with :class:`UnsafePickleError`.
"""

from __future__ import annotations

import collections
import importlib
import pickle
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "load_pickle"]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a callable outside the numpy/builtin allow-list."""


def _numpy_attr(module: str, name: str) -> Any:
    # numpy 2 renamed numpy.core to numpy._core; pickles written by either name both load.
    for candidate in (module, module.replace("numpy.core", "numpy._core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise UnsafePickleError(f"numpy has no {module}.{name}")


# (module, name) pairs a dataset pickle may reference. Everything here rebuilds plain data:
# _reconstruct/ndarray/dtype/_frombuffer/scalar are numpy's own reduce functions for arrays,
# dtypes and scalars; _codecs.encode turns the latin1 text that protocol-2 pickles use for raw
# bytes back into bytes; the collections entries are dicts/lists with extra behaviour.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_OTHER_GLOBALS = {
    ("_codecs", "encode"): __import__("_codecs").encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_attr(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            # numpy >= 1.25 may pickle dtype classes (e.g. numpy.dtypes.UInt8DType) by name.
            cls = getattr(np.dtypes, name, None)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        if (module, name) in _OTHER_GLOBALS:
            return _OTHER_GLOBALS[(module, name)]
        raise UnsafePickleError(
            f"refusing to load {self._path}: it asks for {module}.{name}, which is not a numpy "
            "array, list, dict, string or number. Dataset pickles never need it; the file may "
            "be hostile. If you trust it, convert it yourself with pickle.load."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing to load {self._path}: it uses persistent ids")


def load_pickle(path: str | PathLike[str], encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` allowing only numpy arrays, lists, dicts, strings and numbers.

    Args:
        path: the pickle file.
        encoding: how to decode Python-2 ``str`` objects; ``"latin1"`` for the MetaOptNet/RFS
            MiniImagenet pickles (so their numpy byte buffers survive), ``"ASCII"`` otherwise.

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: (a ``ValueError``) if the pickle references any other callable,
            e.g. ``os.system``; nothing from the file is executed.
        ValueError: naming the file if it is truncated or not a pickle.
        FileNotFoundError: if ``path`` does not exist.

    Example:
        >>> from metalearn.datasets import load_pickle
        >>> data = load_pickle("mini-imagenet-cache-train.pkl")  # doctest: +SKIP
    """
    path = Path(path)
    with path.open("rb") as f:
        try:
            return _RestrictedUnpickler(f, path, encoding).load()
        except UnsafePickleError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError) as e:
            raise ValueError(
                f"{path} is truncated or not a valid pickle ({type(e).__name__}: {e}); "
                "download or copy it again"
            ) from e
