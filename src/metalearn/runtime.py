"""Process-level settings that make meta-training faster on CPU."""

from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["tune_cpu_allocator"]

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGEST_MMAP_THRESHOLD = 32 * 2**20  # glibc's cap (HEAP_MAX_SIZE / 2 on 64-bit)
_KEEP_FREED = 2**31 - 1  # the largest trim threshold mallopt takes (an int)

_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Let freed CPU memory below 32 MiB be reused by the process instead of handed back.

    glibc's ``malloc`` adapts as it goes: it serves large blocks with fresh ``mmap`` calls
    until one is freed, and hands the top of its heap back to the OS whenever more than twice
    the largest freed block lies free there. A second-order meta-step frees and reallocates
    tens of megabytes per task, so its memory is page-faulted in again task after task (over a
    quarter of a MiniImagenet Conv-4 MAML step on one thread, benchmarks/RESULTS.md). This fixes the
    ``mmap`` threshold at 32 MiB (glibc's largest) and turns trimming off: every block under
    32 MiB is reused from the heap, as PyTorch's CUDA caching allocator reuses GPU memory,
    while larger ones (a MiniImagenet query set's 68 MB first feature map) still get their own
    ``mmap`` and go back to the OS when freed. Serving those from the heap as well is at most a
    few percent faster and holds over a quarter more memory: large free blocks fragment it. The
    price of the reuse: the heap keeps its high-water mark (RSS does not shrink after a step).

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
    return (
        mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED) == 1
    )
