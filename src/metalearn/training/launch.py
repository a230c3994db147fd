"""Start ranks from Python: the local counterpart of ``torchrun`` for tests and benchmarks."""

from __future__ import annotations

import multiprocessing as _mp
import multiprocessing.connection as _mp_connection
import os
import pickle
import socket
import sys
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch

from metalearn._checks import check_int
from metalearn.training.distributed import _as_timedelta, cleanup, init_distributed

__all__ = ["SpawnError", "free_port", "spawn"]


class SpawnError(RuntimeError):
    """One or more ranks started by :func:`spawn` failed.

    Attributes:
        errors: rank -> that rank's error (type, message and traceback).
    """

    def __init__(self, errors: dict[int, str]) -> None:
        self.errors = dict(sorted(errors.items()))
        lines = [f"{len(self.errors)} rank(s) failed:"]
        for r, text in self.errors.items():
            lines.append(f"--- rank {r} ---\n{text.rstrip()}")
        super().__init__("\n".join(lines))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_entry(
    fn: Callable[..., Any],
    args: tuple,
    env: dict[str, str],
    backend: str | None,
    timeout: timedelta,
    num_threads: int | None,
    report: Any,
) -> None:
    os.environ.update(env)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        info = init_distributed(backend, timeout)
        value = fn(info, *args)
    except BaseException as error:
        report.send((False, "".join(traceback.format_exception(error))))
        report.close()
        # Exit as an uncaught exception would, without leaving the process group: the other
        # ranks must notice on their own.
        sys.exit(1)
    # Plain pickle copies tensors by value (torch's multiprocessing pickler would share their
    # memory with this process, which is about to exit).
    report.send((True, pickle.dumps(value)))
    report.close()
    cleanup()


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    *,
    backend: str | None = "gloo",
    timeout: float | timedelta = 60.0,
    grace: float = 30.0,
    num_threads: int | None = None,
) -> list[Any]:
    """Run ``fn(info, *args)`` in ``world_size`` fresh local processes joined in a process group.

    The Python counterpart of ``torchrun --nproc_per_node world_size`` on one machine (used by
    the tests and benchmarks): each process gets the torchrun environment (rendezvous on
    127.0.0.1 at a free port), calls :func:`init_distributed` and then ``fn`` with its
    :class:`RankInfo`. ``fn`` must be importable (defined at module level of an importable
    module, not ``__main__`` of a ``python -c``); its return value must pickle.

    Unlike ``torch.multiprocessing.spawn``, which stops every process at the first failure,
    this waits (up to ``grace`` seconds) for the other ranks to fail on their own and reports
    every rank's outcome, so one can check that a crash is detected by the survivors.

    Args:
        fn: the per-rank function.
        world_size: number of processes.
        args: extra arguments for ``fn`` (picklable).
        backend: process-group backend (``"gloo"`` on CPU, ``None`` for the default).
        timeout: process-group timeout in seconds (how long a rank waits for a failed peer).
        grace: once a rank has failed, how long the others get to finish (they should fail
            within ``timeout``) before they are terminated.
        num_threads: ``torch.set_num_threads`` in each process (e.g. cores // world_size).

    Returns:
        ``fn``'s return values, by rank.

    Raises:
        SpawnError: some rank raised or died; ``.errors`` has every failed rank's traceback.

    Example:
        >>> def work(info):
        ...     return info.rank
        >>> spawn(work, 2)   # doctest: +SKIP
        [0, 1]
    """
    check_int("world_size", world_size, 1)
    td = _as_timedelta(timeout)
    context = _mp.get_context("spawn")
    port = str(free_port())
    processes, readers = [], []
    for r in range(world_size):
        env = {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "RANK": str(r),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(r),
            "LOCAL_WORLD_SIZE": str(world_size),
        }
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_spawn_entry,
            args=(fn, args, env, backend, td, num_threads, writer),
            name=f"metalearn-rank{r}",
        )
        process.start()
        writer.close()  # the child holds the only writer: its death reads as EOF here
        processes.append(process)
        readers.append(reader)
    values: dict[int, bytes] = {}
    errors: dict[int, str] = {}
    pending = set(range(world_size))
    deadline = None
    try:
        while pending:
            wait_s = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            waitables = [readers[r] for r in pending] + [processes[r].sentinel for r in pending]
            _mp_connection.wait(waitables, timeout=wait_s)
            for r in sorted(pending):
                if readers[r].poll():
                    try:
                        ok, payload = readers[r].recv()
                    except EOFError:
                        processes[r].join()
                        ok, payload = False, f"died with exit code {processes[r].exitcode}"
                    (values if ok else errors)[r] = payload
                    pending.discard(r)
                elif processes[r].exitcode is not None:
                    errors[r] = f"died with exit code {processes[r].exitcode}"
                    pending.discard(r)
            if errors and deadline is None:
                deadline = time.monotonic() + grace
            if deadline is not None and pending and time.monotonic() >= deadline:
                for r in pending:
                    errors[r] = (
                        f"still running {grace:g} s after rank(s) {sorted(set(errors) - pending)} "
                        "failed; terminated"
                    )
                break
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        for reader in readers:
            reader.close()
    if errors:
        raise SpawnError(errors)
    return [pickle.loads(values[r]) for r in range(world_size)]
