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
    stream = TaskStream(sampler, meta_batch_size=32, seed=0)   # metalearn.training.task_stream
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
:class:`~metalearn.training.task_stream.TaskStream` lives in :mod:`metalearn.training.task_stream`,
and :func:`~metalearn.training.launch.spawn` (a local launcher for tests and benchmarks) in
:mod:`metalearn.training.launch`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DEFAULT_TIMEOUT",
    "DistributedError",
    "RankInfo",
    "average_gradients",
    "average_metrics",
    "barrier",
    "broadcast_parameters",
    "cleanup",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_rank",
    "rank",
    "world_size",
]

#: Default time a collective waits for the other ranks before failing (a hung or dead peer).
DEFAULT_TIMEOUT = timedelta(minutes=10)

# The timeout the current process group was created with (for error messages).
_timeout: timedelta | None = None


class DistributedError(RuntimeError):
    """A collective failed: another rank crashed, hung past the timeout or lost its connection."""


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
