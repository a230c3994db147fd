"""Process-level settings that make meta-training faster on CPU."""

from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["tune_cpu_allocator"]

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_FREED = 2**31 - 1  # the largest trim threshold mallopt takes (an int)

_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Let freed CPU memory be reused by the process instead of handed back to the OS.

    glibc's ``malloc`` serves every block over 32 MiB with a fresh ``mmap`` and unmaps it on
    ``free``, so each large activation of a second-order meta-step (a MiniImagenet query set's
    ``[75, 32, 84, 84]`` feature map is 68 MB) is paid for again in page faults: about a
    quarter of a Conv-4 MAML step on CPU (benchmarks/RESULTS.md). This turns ``mmap`` off for
    ``malloc`` and raises the trim threshold, so the memory of one step is reused by the next,
    the way PyTorch's CUDA caching allocator reuses GPU memory. The price: the process keeps
    its peak memory (RSS does not shrink after a large step).

    :class:`~metalearn.training.Trainer` (and so ``train``, the CLI and the examples) calls it
    on CPU unless ``tune_allocator=False``; call it yourself at the top of a hand-written
    training loop. It affects the whole process, is idempotent, and does nothing (returns
    False) outside Linux with glibc.

    Returns:
        Whether the allocator is tuned.

    Example:
        >>> import metalearn as ml
        >>> ml.tune_cpu_allocator() in (True, False)
        True
    """
    global _tuned
    if _tuned is None:
        _tuned = _mallopt()
    return _tuned


def _mallopt() -> bool:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED) == 1
