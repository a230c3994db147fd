"""Data-parallel meta-training across processes and machines with ``torch.distributed``.

Every rank holds a full copy of the learner, samples only its contiguous share of the global
meta-batch from a task stream that does not depend on the number of ranks, computes the
meta-gradient of its share, and the gradients are averaged across ranks with one all-reduce
before the optimizer step. Because every rank's share has the same size, the average of the
per-rank mean losses is the mean over all tasks: the averaged gradient equals the one-process
gradient of the global meta-batch, and every rank takes the same optimizer step.

The pieces, in the order a training loop uses them::

    info = init_distributed()                      # reads torchrun's RANK, WORLD_SIZE, ...
    learner.to(info.device)
    broadcast_parameters(learner)                  # every rank starts from rank 0's weights
    stream = TaskStream(sampler, meta_batch_size=32, seed=0)
    for it in range(iterations):
        out = learner(stream.sample(it).to(info.device))   # this rank's shard of batch `it`
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        average_gradients(learner)                 # mean over ranks == 1-process gradient
        optimizer.step()
        metrics = average_metrics({"loss": out.loss})
        if is_main_process(): ...                  # only rank 0 logs and writes checkpoints
    cleanup()

``metalearn.train(..., distributed=True)`` does exactly this. See ``docs/distributed.md``.
"""

from __future__ import annotations

import hashlib
import multiprocessing as _mp
import multiprocessing.connection as _mp_connection
import os
import pickle
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from metalearn.tasks.batch import TaskBatch, TaskSampler
from metalearn.training.evaluate import sample_fixed

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "RankInfo",
    "SpawnError",
    "TaskStream",
    "average_gradients",
    "average_metrics",
    "barrier",
    "broadcast_parameters",
    "cleanup",
    "free_port",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_rank",
    "rank",
    "spawn",
    "train_task_seed",
    "world_size",
]

#: Default time a collective waits for the other ranks before failing (a hung or dead peer).
DEFAULT_TIMEOUT = timedelta(minutes=10)

# The timeout the current process group was created with (for error messages).
_timeout: timedelta | None = None


class DistributedError(RuntimeError):
    """A collective failed: another rank crashed, hung past the timeout or lost its connection."""


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


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes in the job (1 when not distributed).
        local_rank: rank on this machine (selects the GPU).
        device: the device this rank computes on (``cuda:<local_rank>`` with NCCL, else CPU).
        backend: ``"gloo"``, ``"nccl"``..., or ``None`` when no process group was started.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that logs and writes checkpoints."""
        return self.rank == 0


# -- process group ----------------------------------------------------------------------------
def _as_timedelta(timeout: float | timedelta) -> timedelta:
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise TypeError(
            f"timeout must be seconds (a number) or a datetime.timedelta, got {timeout!r}"
        )
    if not seconds > 0:
        raise ValueError(f"timeout must be positive, got {seconds} s")
    return timedelta(seconds=seconds)


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is running in this process."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


# TaskStream's arguments shadow the two functions above.
_current_rank, _current_world_size = rank, world_size


def local_rank() -> int:
    """Rank on this machine, from torchrun's ``LOCAL_RANK`` (0 when not set)."""
    return _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed): the process that logs and writes files."""
    return rank() == 0


def _info() -> RankInfo:
    backend = dist.get_backend() if is_distributed() else None
    if backend == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    elif backend is None and torch.cuda.is_available():
        device = torch.device("cuda", local_rank())
    else:
        device = torch.device("cpu")
    return RankInfo(rank(), world_size(), local_rank(), device, backend)


def init_distributed(
    backend: str | None = None, timeout: float | timedelta = DEFAULT_TIMEOUT
) -> RankInfo:
    """Join the job described by torchrun's environment, or run alone when there is none.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (set by
    ``torchrun`` / ``python -m torch.distributed.run``) and starts the default process group.
    Without ``RANK``/``WORLD_SIZE`` in the environment nothing is started and the returned
    info says rank 0 of 1, so one script runs both with ``python`` and with ``torchrun``.
    Calling it again when a process group is running returns the current info.

    Args:
        backend: ``"nccl"`` (CUDA) or ``"gloo"`` (CPU); default NCCL when CUDA is available,
            else gloo. With NCCL the CUDA device is set to ``cuda:LOCAL_RANK``.
        timeout: seconds (or a ``timedelta``) a collective, and the rendezvous, waits for
            the other ranks before raising, so a crashed or hung rank fails the job instead
            of hanging it. Every rank must be ready within this time of the others.

    Returns:
        A :class:`RankInfo` (rank, world size, local rank, the device to use, backend).

    Raises:
        ValueError: inconsistent or missing launcher variables, or too few GPUs.

    Example:
        >>> import torch.nn.functional as F, metalearn as ml
        >>> info = init_distributed()  # under torchrun: joins the group; plainly: one process
        >>> maml = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, inner_lr=0.01).to(info.device)
        >>> info.world_size, info.is_main   # launched plainly
        (1, True)
        >>> cleanup()
    """
    global _timeout
    if is_distributed():
        return _info()
    td = _as_timedelta(timeout)
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return _info()
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise ValueError(
            f"environment variable(s) {', '.join(missing)} not set: launch with "
            "`torchrun --nproc_per_node N script.py` (or set RANK, WORLD_SIZE, MASTER_ADDR and "
            "MASTER_PORT yourself)"
        )
    global_rank, size, local = _env_int("RANK"), _env_int("WORLD_SIZE"), local_rank()
    if size < 1 or not 0 <= global_rank < size:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={global_rank}, WORLD_SIZE={size}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string such as 'gloo' or 'nccl', got {backend!r}")
    device = torch.device("cpu")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend='nccl' needs CUDA; use backend='gloo' on CPU")
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPU(s): "
                "start at most one process per GPU (torchrun --nproc_per_node <= GPUs)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=global_rank,
        world_size=size,
        timeout=td,
        device_id=device if backend == "nccl" else None,
    )
    _timeout = td
    return RankInfo(global_rank, size, local, device, backend)


def cleanup() -> None:
    """Leave the process group (a no-op when none is running)."""
    global _timeout
    if is_distributed():
        dist.destroy_process_group()
    _timeout = None


@contextmanager
def _collective(what: str):
    """Turn a backend failure into a :class:`DistributedError` that says what likely happened."""
    try:
        yield
    except RuntimeError as error:
        limit = f"{_timeout.total_seconds():g} s" if _timeout is not None else "the default"
        raise DistributedError(
            f"rank {rank()} of {world_size()}: {what} failed. Another rank probably crashed, "
            f"hung for longer than the process-group timeout ({limit}) or lost its "
            f"connection; look for the first error in the other ranks' output. "
            f"Backend error: {type(error).__name__}: {error}"
        ) from error


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo works on CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier(what: str = "barrier") -> None:
    """Wait for every rank; with gloo a rank that does not arrive is named in the error.

    Uses ``monitored_barrier`` on gloo (which reports the missing rank) and ``barrier``
    otherwise. A no-op when not distributed.
    """
    if not is_distributed() or world_size() == 1:
        return
    with _collective(what):
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=_timeout, wait_all_ranks=True)
        else:
            dist.barrier()


# -- moving tensors in few messages ------------------------------------------------------------
def _groups(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype): each group travels as one buffer."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return list(groups.values())


def _check_same_layout(tensors: Sequence[Tensor], what: str) -> None:
    """Fail clearly if the ranks' tensor lists differ (different models or parameter order)."""
    layout = [(t.numel(), str(t.dtype)) for t in tensors]
    digest = hashlib.blake2b(repr(layout).encode(), digest_size=8).digest()
    mine = torch.tensor(
        [len(tensors), int.from_bytes(digest, "little") >> 2], dtype=torch.int64
    ).to(_collective_device())
    gathered = [torch.empty_like(mine) for _ in range(world_size())]
    with _collective(f"checking the {what} layout"):
        dist.all_gather(gathered, mine)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise ValueError(
            f"the ranks hold different {what}: (count, layout hash) per rank = "
            f"{[g.tolist() for g in gathered]}; every rank must build the same learner"
        )


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into every rank, so all ranks start identical.

    Call it once after building the learner (and after loading a checkpoint if only some ranks
    loaded it). A no-op when not distributed.

    Args:
        module: the learner (its parameters include any meta-learned inner learning rates).
        src: the rank whose values win.

    Raises:
        ValueError: the ranks' modules have different parameter/buffer layouts.
    """
    if not is_distributed() or world_size() == 1:
        return
    tensors = [t.data for t in (*module.parameters(), *module.buffers())]
    _check_same_layout(tensors, "parameters and buffers")
    with torch.no_grad(), _collective("broadcasting the parameters"):
        for group in _groups(tensors):
            parts = [tensors[i] for i in group]
            flat = torch.cat([p.reshape(-1) for p in parts])
            dist.broadcast(flat, src)
            for p, piece in zip(parts, flat.split([p.numel() for p in parts]), strict=True):
                p.copy_(piece.view_as(p))


def average_gradients(module: nn.Module | Iterable[nn.Parameter]) -> None:
    """Replace every ``.grad`` by its mean over the ranks (call after ``backward()``).

    Each rank backpropagates the mean loss of its equal-sized share of the meta-batch, so the
    mean of the ranks' gradients is the gradient of the mean loss over the whole meta-batch.
    Parameters are all of ``module.parameters()`` with ``requires_grad`` (the model and any
    meta-learned state such as learned inner learning rates). A parameter with no gradient on
    some ranks counts as a zero gradient there; one with no gradient on every rank keeps
    ``grad=None`` (the optimizer skips it), exactly as in a single process. A no-op when not
    distributed.

    Args:
        module: the learner, or an iterable of its parameters (same order on every rank).

    Raises:
        TypeError: a sparse gradient (not supported).
        DistributedError: another rank failed or timed out.
    """
    if not is_distributed() or world_size() == 1:
        return
    params = module.parameters() if isinstance(module, nn.Module) else module
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            raise TypeError("average_gradients supports dense gradients only, got a sparse one")
    # Agree on which parameters have a gradient anywhere, so all ranks reduce the same tensors.
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    has_grad = has_grad.to(_collective_device())
    with _collective("averaging the gradients"):
        dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    reduced = []
    for p, anywhere in zip(params, has_grad.tolist(), strict=True):
        if anywhere and p.grad is None:
            p.grad = torch.zeros_like(p)
        if anywhere:
            reduced.append(p.grad)
    size = world_size()
    with torch.no_grad(), _collective("averaging the gradients"):
        for group in _groups(reduced):
            grads = [reduced[i] for i in group]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= size
            for g, piece in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                g.copy_(piece.view_as(g))


def average_metrics(metrics: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Mean of scalar metrics over the ranks (the mean over the global meta-batch).

    Every rank must pass the same keys in the same order. Returns plain floats (the local
    values when not distributed).
    """
    names = list(metrics)
    values = [float(metrics[k]) for k in names]
    if not is_distributed() or world_size() == 1:
        return dict(zip(names, values, strict=True))
    # A 32-bit hash of the names, exact in float64 when summed over up to 2**21 ranks.
    key = hashlib.blake2b(repr(names).encode(), digest_size=4).digest()
    packed = torch.tensor([*values, float(int.from_bytes(key, "little"))], dtype=torch.float64).to(
        _collective_device()
    )
    check = packed[-1:].clone()
    with _collective("averaging the metrics"):
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        dist.all_reduce(check, op=dist.ReduceOp.MAX)
    if packed[-1].item() != check.item() * world_size():
        raise ValueError(f"ranks passed different metric names to average_metrics; here {names}")
    return dict(zip(names, (packed[:-1] / world_size()).tolist(), strict=True))


# -- the task stream ----------------------------------------------------------------------------
def train_task_seed(seed: int, iteration: int, index: int) -> int:
    """Seed of task ``index`` of meta-batch ``iteration`` in the training stream.

    A hash of ``(seed, iteration, index)``: independent of the world size, the batch
    size of any other iteration, and of the evaluation task seeds.
    """
    text = f"metalearn.train:{seed}:{iteration}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class TaskStream:
    """The meta-training task stream, cut into equal contiguous shards, one per rank.

    Task ``j`` of meta-batch ``t`` is drawn with its own generator seeded by
    :func:`train_task_seed` ``(seed, t, j)``, so the global meta-batch is the same for any
    number of ranks, and resuming at iteration ``t`` needs no sampler state. Rank ``r`` of
    ``W`` takes tasks ``r * B/W .. (r + 1) * B/W - 1``.

    Args:
        sampler: any task sampler (``sample(num_tasks, generator) -> TaskBatch``).
        meta_batch_size: tasks per meta-update over all ranks; must divide by the world size.
        seed: seed of the stream.
        rank: this process's rank (default: from the process group, 0 if none).
        world_size: number of ranks (default: from the process group, 1 if none).

    Example:
        >>> import metalearn as ml
        >>> stream = TaskStream(ml.tasks.Sine(10, 10), meta_batch_size=4, rank=1, world_size=2)
        >>> stream.sample(0).num_tasks          # tasks 2 and 3 of meta-batch 0
        2
    """

    def __init__(
        self,
        sampler: TaskSampler,
        meta_batch_size: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(f"sampler must have a sample(num_tasks, generator) method: {sampler!r}")
        size = _current_world_size() if world_size is None else world_size
        me = _current_rank() if rank is None else rank
        for name, value, low in (("meta_batch_size", meta_batch_size, 1), ("world_size", size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(me, bool) or not isinstance(me, int) or not 0 <= me < size:
            raise ValueError(f"rank must be an int in [0, {size}), got {me!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if meta_batch_size % size:
            lower = max(size, meta_batch_size - meta_batch_size % size)
            raise ValueError(
                f"meta_batch_size={meta_batch_size} must be divisible by the world size {size} "
                f"(every rank takes an equal share of the meta-batch); use e.g. {lower} or "
                f"{lower + size}"
            )
        self.sampler = sampler
        self.meta_batch_size = meta_batch_size
        self.seed = seed
        self.rank = me
        self.world_size = size

    @property
    def local_batch_size(self) -> int:
        """Tasks each rank computes per meta-update."""
        return self.meta_batch_size // self.world_size

    def indices(self, iteration: int) -> range:
        """Indices within the global meta-batch of this rank's tasks (the same for every t)."""
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"iteration must be an int >= 0, got {iteration!r}")
        start = self.rank * self.local_batch_size
        return range(start, start + self.local_batch_size)

    def sample(self, iteration: int) -> TaskBatch:
        """This rank's share of meta-batch ``iteration``."""
        seeds = [train_task_seed(self.seed, iteration, j) for j in self.indices(iteration)]
        return sample_fixed(self.sampler, seeds)

    def global_batch(self, iteration: int) -> TaskBatch:
        """All ``meta_batch_size`` tasks of meta-batch ``iteration`` (every rank's shares)."""
        self.indices(iteration)
        seeds = [train_task_seed(self.seed, iteration, j) for j in range(self.meta_batch_size)]
        return sample_fixed(self.sampler, seeds)

    def __repr__(self) -> str:
        return (
            f"TaskStream({self.sampler!r}, meta_batch_size={self.meta_batch_size}, "
            f"seed={self.seed}, rank={self.rank}, world_size={self.world_size})"
        )


# -- starting ranks from Python -------------------------------------------------------------------
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
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
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
