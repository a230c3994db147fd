"""Time a second-order MAML meta-training step: metalearn against higher, learn2learn and a
hand-written per-task autograd loop, on the same model, parameters and data.

Every (workload, implementation) pair runs in its own fresh Python process, so that its peak
memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA) is its own. Before any timing,
every implementation's meta-gradient at the initial parameters is compared with metalearn's;
a mismatch stops the run with an error (a fast wrong answer is not a result).

One meta-training step = meta-loss over the task batch (inner loop per task), second-order
backward, Adam step, zero_grad. Reported: median seconds per step, tasks/s, peak memory, and
the ratio of metalearn's default ("auto") tasks/s to each peer's. Then the cost curves (time vs
meta-batch and vs inner steps, memory vs inner steps) and a 1,000-step memory-growth check.

Run ``python benchmarks/bench_maml.py --help``; docs/benchmarks.md explains the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

import metalearn as ml  # noqa: E402

# --------------------------------------------------------------------------------------------
# Workloads


@dataclass(frozen=True)
class Workload:
    """One benchmark problem: a model, a task batch, the inner loop's settings."""

    name: str
    title: str
    kind: str  # "sine" or "conv"
    meta_batch: int
    inner_steps: int
    inner_lr: float
    n_way: int = 0
    k_shot: int = 0
    k_query: int = 0
    channels: int = 0
    hidden: int = 0
    image_size: int = 0
    reps: int = 20
    warmup: int = 3

    def metalearn_model(self) -> nn.Module:
        if self.kind == "sine":
            return ml.models.MLP([1, 40, 40, 1])
        return ml.models.Conv4(self.channels, self.n_way, self.hidden, self.image_size)

    def reference_model(self) -> nn.Module:
        """The same function written the way a higher / learn2learn user writes it.

        For conv workloads: ``torch.nn`` Conv-4 with ``BatchNorm2d`` on batch statistics
        (``track_running_stats=False``) and ``conv -> BN -> ReLU -> maxpool``; the parameters
        are copied from :meth:`metalearn_model` (see :func:`build`), so both compute the same
        function and must give the same meta-gradient.
        """
        if self.kind == "sine":
            return ml.models.MLP([1, 40, 40, 1])
        layers: list[nn.Module] = []
        channels = self.channels
        for _ in range(4):
            layers += [
                nn.Conv2d(channels, self.hidden, 3, padding=1),
                nn.BatchNorm2d(self.hidden, track_running_stats=False),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = self.hidden
        side = self.image_size // 16
        return nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(self.hidden * side * side, self.n_way)
        )

    @property
    def loss(self) -> Callable[[Tensor, Tensor], Tensor]:
        return F.mse_loss if self.kind == "sine" else F.cross_entropy

    def batch(self, device: torch.device, seed: int = 0) -> ml.tasks.TaskBatch:
        generator = torch.Generator().manual_seed(seed)
        if self.kind == "sine":
            batch = ml.tasks.Sine(k_shot=10, k_query=10).sample(self.meta_batch, generator)
            return batch.to(device=device, dtype=torch.get_default_dtype())
        shape = (self.channels, self.image_size, self.image_size)
        t = self.meta_batch

        def split(shots: int) -> tuple[Tensor, Tensor]:
            x = torch.randn(t, self.n_way * shots, *shape, generator=generator)
            y = torch.arange(self.n_way).repeat(shots).expand(t, -1).contiguous()
            return x, y

        sx, sy = split(self.k_shot)
        qx, qy = split(self.k_query)
        return ml.tasks.TaskBatch.from_tensors(sx, sy, qx, qy).to(device)


WORKLOADS = {
    "sine": Workload(
        "sine", "Sine, MLP 1-40-40-1, K=10, meta-batch 25, 1 step", "sine", 25, 1, 0.01
    ),
    "miniimagenet": Workload(
        "miniimagenet",
        "MiniImagenet 5w1s, Conv-4 32 filters 84x84, 15 queries, 5 steps, meta-batch 4",
        "conv",
        meta_batch=4,
        inner_steps=5,
        inner_lr=0.01,
        n_way=5,
        k_shot=1,
        k_query=15,
        channels=3,
        hidden=32,
        image_size=84,
        reps=5,
        warmup=1,
    ),
    "omniglot": Workload(
        "omniglot",
        "Omniglot 20w1s, Conv-4 64 filters 28x28, 5 queries, 5 steps, meta-batch 16",
        "conv",
        meta_batch=16,
        inner_steps=5,
        inner_lr=0.4,
        n_way=20,
        k_shot=1,
        k_query=5,
        channels=1,
        hidden=64,
        image_size=28,
        reps=3,
        warmup=1,
    ),
}
# The reduced conv workload of the cost curves (small enough for many points on a CPU).
CONV_SMALL = Workload(
    "conv-small",
    "Conv-4 32 filters 42x42, 5w1s, 5 queries",
    "conv",
    meta_batch=4,
    inner_steps=5,
    inner_lr=0.01,
    n_way=5,
    k_shot=1,
    k_query=5,
    channels=3,
    hidden=32,
    image_size=42,
    reps=3,
    warmup=1,
)

# A tiny conv workload for the harness's own smoke test (tests/test_benchmarks.py).
SMOKE = Workload(
    "smoke",
    "Smoke test: Conv-4 4 filters 16x16, 2w1s, 2 queries, 2 steps, meta-batch 2",
    "conv",
    meta_batch=2,
    inner_steps=2,
    inner_lr=0.5,
    n_way=2,
    k_shot=1,
    k_query=2,
    channels=3,
    hidden=4,
    image_size=16,
    reps=2,
    warmup=1,
)
EXTRA_WORKLOADS = {w.name: w for w in (CONV_SMALL, SMOKE)}

# --------------------------------------------------------------------------------------------
# Implementations: each returns the meta-loss of a batch (a scalar, averaged over tasks) and
# owns its model; all start from the same parameter values.


class Implementation:
    """One row: a way to put a batch's meta-gradient into ``.grad``.

    Peers compute one task's query loss at a time (:meth:`task_losses`). In their users'
    idiom (``one_backward=False``; learn2learn's and higher's own examples) each task's loss is
    backpropagated inside the task loop, which frees that task's graph before the next; with
    ``one_backward=True`` the losses are averaged and backpropagated once after all tasks
    (every task's graph alive until then), labelled ``/one-backward``.
    """

    name = ""
    one_backward = True

    def __init__(self, workload: Workload, device: torch.device) -> None:
        self.workload = workload
        self.device = device

    def model(self) -> nn.Module:
        """The module whose parameters are the meta-parameters (what the optimizer updates)."""
        raise NotImplementedError

    def task_losses(self, batch: ml.tasks.TaskBatch) -> Iterator[Tensor]:
        """Each task's query loss after adaptation, one at a time."""
        raise NotImplementedError

    def meta_loss(self, batch: ml.tasks.TaskBatch) -> Tensor:
        """The mean of the task losses, every task's graph alive."""
        total = 0.0
        for loss in self.task_losses(batch):
            total = total + loss
        return total / batch.num_tasks

    def step(self, batch: ml.tasks.TaskBatch) -> None:
        """The batch's meta-gradient (of the mean task loss) into ``.grad``, as its users do."""
        if self.one_backward:
            self.meta_loss(batch).backward()
            return
        for loss in self.task_losses(batch):
            (loss / batch.num_tasks).backward()

    def prepare(self, batch: ml.tasks.TaskBatch) -> None:
        """One-off work before anything is measured (compiling)."""


def _copy_parameters(source: nn.Module, target: nn.Module) -> nn.Module:
    src, dst = list(source.parameters()), list(target.parameters())
    if [p.shape for p in src] != [p.shape for p in dst]:
        raise RuntimeError("reference model does not mirror the metalearn model's parameters")
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.copy_(s)
    return target


def build(workload: Workload, device: torch.device, reference: bool) -> nn.Module:
    torch.manual_seed(0)
    model = workload.metalearn_model()
    if reference:
        model = _copy_parameters(model, workload.reference_model())
    return model.to(device)


class Metalearn(Implementation):
    """``ml.MAML``: ``learner(batch).loss.backward()``.

    ``own_model``: on the user's plain ``nn.Module`` (:meth:`Workload.reference_model`)
    instead of ``ml.models.Conv4``. ``whole_graph``: ``per_task_gradients = False`` (every
    task's graph kept until ``backward()``, the looped path before per-task meta-gradients).
    """

    def __init__(
        self,
        workload: Workload,
        device: torch.device,
        vectorize: str,
        compile: bool = False,
        own_model: bool = False,
        whole_graph: bool = False,
    ) -> None:
        super().__init__(workload, device)
        self.name = "metalearn" if vectorize == "auto" else f"metalearn-{vectorize}"
        self.compiled = compile
        self.learner = ml.MAML(
            build(workload, device, reference=own_model),
            workload.loss,
            workload.inner_lr,
            workload.inner_steps,
            vectorize=vectorize,
        )
        if own_model:
            self.name += "+own-model"
            self.how = "the user's plain nn.Module; ml.MAML swaps nn.MaxPool2d(2) for MaxPool2x2"
        if whole_graph:
            self.learner.per_task_gradients = False
            self.name += "/one-backward"
            self.how = "per_task_gradients=False: every task's graph kept until backward()"
        if compile:
            # On CUDA the compiled step is also replayed as a CUDA graph.
            mode = "reduce-overhead" if device.type == "cuda" else "default"
            self.learner.compile(mode=mode)
            self.name += "+compile"
            self.how = f"learner.compile(mode={mode!r}), compiled before measuring"

    def prepare(self, batch: ml.tasks.TaskBatch) -> None:
        if self.compiled:
            self.learner(batch).loss.backward()  # compiles; its memory is not the step's
            self.learner.zero_grad(set_to_none=True)

    def model(self) -> nn.Module:
        return self.learner

    def meta_loss(self, batch: ml.tasks.TaskBatch) -> Tensor:
        return self.learner(batch).loss

    def step(self, batch: ml.tasks.TaskBatch) -> None:
        self.learner(batch).loss.backward()


def _suffix(one_backward: bool) -> str:
    return "/one-backward" if one_backward else ""


class AutogradLoop(Implementation):
    """The per-task loop most MAML code uses (learn2learn's pattern, written out): for every
    task, a fresh set of fast weights, ``torch.autograd.grad(create_graph=True)`` and an SGD
    update per inner step, then the query loss."""

    def __init__(
        self,
        workload: Workload,
        device: torch.device,
        metalearn_model: bool,
        one_backward: bool = False,
    ) -> None:
        super().__init__(workload, device)
        self.name = "autograd-loop+metalearn-model" if metalearn_model else "autograd-loop"
        self.name += _suffix(one_backward)
        self.one_backward = one_backward
        self.net = build(workload, device, reference=not metalearn_model)

    def model(self) -> nn.Module:
        return self.net

    def task_losses(self, batch: ml.tasks.TaskBatch) -> Iterator[Tensor]:
        w = self.workload
        params = dict(self.net.named_parameters())
        for task in batch:
            fast = params
            for _ in range(w.inner_steps):
                support = w.loss(functional_call(self.net, fast, (task.support.x,)), task.support.y)
                grads = torch.autograd.grad(support, list(fast.values()), create_graph=True)
                fast = {
                    k: v - w.inner_lr * g for (k, v), g in zip(fast.items(), grads, strict=True)
                }
            prediction = functional_call(self.net, fast, (task.query.x,))
            yield w.loss(prediction, task.query.y)


class Higher(Implementation):
    """higher's MAML example (examples/maml-omniglot.py): ``innerloop_ctx`` per task and the
    query loss's ``backward()`` inside it, per task."""

    def __init__(self, workload: Workload, device: torch.device, one_backward: bool = False):
        super().__init__(workload, device)
        import higher

        self.name = "higher" + _suffix(one_backward)
        self.one_backward = one_backward
        self.higher = higher
        self.net = build(workload, device, reference=True)
        self.inner_opt = torch.optim.SGD(self.net.parameters(), lr=workload.inner_lr)

    def model(self) -> nn.Module:
        return self.net

    def task_losses(self, batch: ml.tasks.TaskBatch) -> Iterator[Tensor]:
        w = self.workload
        for task in batch:
            with self.higher.innerloop_ctx(
                self.net, self.inner_opt, copy_initial_weights=False
            ) as (fnet, diffopt):
                for _ in range(w.inner_steps):
                    diffopt.step(w.loss(fnet(task.support.x), task.support.y))
                yield w.loss(fnet(task.query.x), task.query.y)


def import_learn2learn_maml() -> tuple[type, str]:
    """learn2learn's ``MAML`` class, and how it was imported.

    ``import learn2learn`` pulls in torchvision, gym and more for its data and vision
    packages; where those are missing (or mismatched with the installed torch) but
    learn2learn itself is installed, only the two pure-PyTorch modules ``MAML`` needs
    (``learn2learn.utils`` and ``learn2learn.algorithms.maml``) are loaded, unmodified.

    Raises:
        ImportError: learn2learn is not installed.
    """
    try:
        from learn2learn.algorithms import MAML

        return MAML, "import learn2learn"
    except ModuleNotFoundError as error:
        if error.name == "learn2learn":
            raise
        reason = f"missing {error.name}"
    except (ImportError, RuntimeError) as error:
        reason = f"{type(error).__name__}: {str(error)[:60]}"
    for name in [m for m in sys.modules if m == "learn2learn" or m.startswith("learn2learn.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("learn2learn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("learn2learn is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for package in ("learn2learn", "learn2learn.algorithms"):
        stub = types.ModuleType(package)
        stub.__path__ = [str(root.joinpath(*package.split(".")[1:]))]
        sys.modules[package] = stub
    from learn2learn.algorithms.maml import MAML

    return MAML, f"learn2learn.algorithms.maml only ({reason})"


class Learn2learn(Implementation):
    """learn2learn's MAML examples (examples/vision/maml_miniimagenet.py): per task,
    ``maml.clone()``, ``adapt`` per step, ``evaluation_error.backward()`` inside the task loop,
    then every ``.grad`` scaled by 1 / meta-batch."""

    def __init__(self, workload: Workload, device: torch.device, one_backward: bool = False):
        super().__init__(workload, device)
        maml_class, self.how = import_learn2learn_maml()
        self.name = "learn2learn" + _suffix(one_backward)
        self.one_backward = one_backward
        self.maml = maml_class(build(workload, device, reference=True), lr=workload.inner_lr)

    def model(self) -> nn.Module:
        return self.maml

    def task_losses(self, batch: ml.tasks.TaskBatch) -> Iterator[Tensor]:
        w = self.workload
        for task in batch:
            learner = self.maml.clone()
            for _ in range(w.inner_steps):
                learner.adapt(w.loss(learner(task.support.x), task.support.y))
            yield w.loss(learner(task.query.x), task.query.y)

    def step(self, batch: ml.tasks.TaskBatch) -> None:
        if self.one_backward:
            super().step(batch)
            return
        for loss in self.task_losses(batch):
            loss.backward()
        for p in self.maml.parameters():
            p.grad.data.mul_(1.0 / batch.num_tasks)


IMPLEMENTATIONS: dict[str, Callable[[Workload, torch.device], Implementation]] = {
    "metalearn": lambda w, d: Metalearn(w, d, "auto"),
    "metalearn+own-model": lambda w, d: Metalearn(w, d, "auto", own_model=True),
    "metalearn/one-backward": lambda w, d: Metalearn(w, d, "auto", whole_graph=True),
    "metalearn-loop": lambda w, d: Metalearn(w, d, "loop"),
    "metalearn-vmap": lambda w, d: Metalearn(w, d, "vmap"),
    "metalearn+compile": lambda w, d: Metalearn(w, d, "auto", compile=True),
    "autograd-loop": lambda w, d: AutogradLoop(w, d, metalearn_model=False),
    "autograd-loop/one-backward": lambda w, d: AutogradLoop(w, d, False, one_backward=True),
    "autograd-loop+metalearn-model": lambda w, d: AutogradLoop(w, d, metalearn_model=True),
    "higher": Higher,
    "higher/one-backward": lambda w, d: Higher(w, d, one_backward=True),
    "learn2learn": Learn2learn,
    "learn2learn/one-backward": lambda w, d: Learn2learn(w, d, one_backward=True),
}
PEERS = ("higher", "learn2learn", "autograd-loop")
# On CPU, metalearn's training path tunes glibc's allocator (ml.tune_cpu_allocator: freed
# memory is reused instead of faulted in again). Peers run as their users run them, and again
# with the same tuning ("<peer>+allocator"), so that the table separates the two effects.
TUNED = "+allocator"


def split_name(name: str) -> tuple[str, bool]:
    """``("learn2learn", True)`` for ``"learn2learn+allocator"``: the implementation, tuned?"""
    if name.endswith(TUNED):
        return name[: -len(TUNED)], True
    return name, name.startswith("metalearn") or name.endswith("metalearn-model")


def known_implementation(name: str) -> bool:
    base, _ = split_name(name)
    return base in IMPLEMENTATIONS and (name == base or base in PEERS)


def default_implementations(workload: Workload, device: torch.device) -> list[str]:
    """Every implementation, minus those that duplicate or cannot run sensibly here.

    On CPU the conv workloads skip ``metalearn-vmap``: it measured 2.5x slower than the loop
    with 7 GB peak memory (the reason "auto" loops there), and the loop duplicates "auto".
    """
    names = list(IMPLEMENTATIONS)
    model = workload.metalearn_model()
    auto_vmap = ml.algorithms.inner.resolve_vectorize("auto", model, device)
    names.remove("metalearn-vmap" if auto_vmap else "metalearn-loop")
    if workload.kind == "conv" and device.type == "cpu" and "metalearn-vmap" in names:
        names.remove("metalearn-vmap")
    if workload.kind == "sine":
        names.remove("autograd-loop+metalearn-model")  # the same MLP class either way
        names.remove("metalearn+own-model")
        names.remove("metalearn/one-backward")  # vmap: one graph for the batch either way
    else:
        # Compiling a Conv-4 step takes minutes (~2.5 on 2 CPU cores, twice: gradient check and
        # timing); ask for it with --impls (gpu.sh does, in a stage of its own).
        names.remove("metalearn+compile")
    if device.type == "cpu":
        names += [peer + TUNED for peer in PEERS]
    return names


# --------------------------------------------------------------------------------------------
# Measuring, in the child process


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def meta_gradient(impl: Implementation, batch: ml.tasks.TaskBatch) -> dict[str, Tensor]:
    """The meta-gradient at the initial parameters, in the metalearn model's parameter order."""
    model = impl.model()
    model.zero_grad(set_to_none=True)
    impl.step(batch)
    grads = {f"{i}": p.grad.detach().cpu().clone() for i, p in enumerate(model.parameters())}
    model.zero_grad(set_to_none=True)
    return grads


def time_steps(
    impl: Implementation, batch: ml.tasks.TaskBatch, reps: int, warmup: int
) -> list[float]:
    """Seconds of each of ``reps`` meta-training steps (after ``warmup`` untimed ones)."""
    model = impl.model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + reps):
        _synchronize(impl.device)
        start = time.perf_counter()
        impl.step(batch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(impl.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def run_child(args: argparse.Namespace) -> dict:
    """Measure one implementation on one workload (in this fresh process)."""
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    workload = _workload(args.workload)
    overrides = {}
    if args.meta_batch:
        overrides["meta_batch"] = args.meta_batch
    if args.steps is not None:
        overrides["inner_steps"] = args.steps
    workload = replace(workload, **overrides)
    if args.grad_out:
        # The agreement check runs in float64 (on up to 2 tasks), where equivalent code agrees
        # to ~1e-12; float32 second-order gradients of a Conv-4 differ by ~1e-3 relative
        # between equally valid orders of summation, too loose a check.
        torch.set_default_dtype(torch.float64)
        workload = replace(workload, meta_batch=min(2, workload.meta_batch))
    base, tuned = split_name(args.impl)
    if tuned and device.type == "cpu":
        ml.tune_cpu_allocator()  # what metalearn's Trainer does on CPU
    try:
        impl = IMPLEMENTATIONS[base](workload, device)
    except ImportError as error:
        return {"skipped": f"not installed ({error})"}
    batch = workload.batch(device)
    result: dict = {"how": getattr(impl, "how", "")}
    if args.grad_out:
        torch.save(meta_gradient(impl, batch), args.grad_out)
        return result
    reps = args.reps if args.reps else workload.reps
    warmup = args.warmup if args.warmup is not None else workload.warmup
    impl.prepare(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        gc_collect()
        before = current_rss_mib()
        result["peak_reset"] = reset_peak_rss()
    times = time_steps(impl, batch, reps, warmup)
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["peak_mib"] = peak_rss_mib()
    result.update(times=times, before_mib=before, meta_batch=workload.meta_batch)
    if args.leak_steps:
        result["leak"] = leak_check(impl, batch, args.leak_steps)
    return result


def gc_collect() -> None:
    import gc

    gc.collect()


def leak_check(impl: Implementation, batch: ml.tasks.TaskBatch, steps: int) -> list[list[float]]:
    """``[step, memory MiB]`` every ``steps // 10`` meta-steps (RSS on CPU, allocated on CUDA)."""
    model = impl.model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    every = max(1, steps // 10)
    samples = []
    for i in range(1, steps + 1):
        impl.step(batch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i % every == 0:
            _synchronize(impl.device)
            if impl.device.type == "cuda":
                memory = torch.cuda.memory_allocated(impl.device) / 2**20
            else:
                memory = current_rss_mib()
            samples.append([i, memory])
    return samples


# --------------------------------------------------------------------------------------------
# The parent: one child per measurement, gradient agreement, tables


class GradientMismatchError(RuntimeError):
    """Two implementations disagree on the meta-gradient: their timings would not compare."""


def compare_gradients(
    reference: dict[str, Tensor], other: dict[str, Tensor], name: str, rtol: float = 2e-3
) -> float:
    """Largest error of ``other`` against ``reference``, relative to the reference's scale.

    Each parameter's error is its largest absolute difference divided by its largest
    reference entry, floored at 1e-3 of the largest entry over all parameters: some
    gradients are zero in exact arithmetic (a conv bias followed by BatchNorm), so only
    rounding noise is left to compare there.

    Raises:
        GradientMismatchError: when the error exceeds ``rtol`` for any parameter (float32
            second-order gradients of different but equivalent code agree to ~1e-5).
    """
    if reference.keys() != other.keys():
        raise GradientMismatchError(f"{name}: different parameters from metalearn's")
    overall = max(ref.abs().max().item() for ref in reference.values())
    worst = 0.0
    for key, ref in reference.items():
        got = other[key]
        if got.shape != ref.shape:
            raise GradientMismatchError(
                f"{name}: parameter {key} gradient shape {tuple(got.shape)} != {tuple(ref.shape)}"
            )
        scale = max(ref.abs().max().item(), 1e-3 * overall, 1e-30)
        error = (got - ref).abs().max().item() / scale
        if not error <= rtol:  # also catches NaN
            raise GradientMismatchError(
                f"{name}: meta-gradient of parameter {key} differs from metalearn's by "
                f"{error:.2e} (relative to its largest entry; tolerance {rtol:.0e})"
            )
        worst = max(worst, error)
    return worst


def child_command(args: argparse.Namespace, workload: str, impl: str, **extra) -> list[str]:
    command = [sys.executable, __file__, "--child", "--device", args.device]
    command += ["--workload", workload, "--impl", impl]
    if args.threads:
        command += ["--threads", str(args.threads)]
    for key, value in extra.items():
        if value is not None:
            command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def run_in_child(args: argparse.Namespace, workload: str, impl: str, **extra) -> dict:
    command = child_command(args, workload, impl, **extra)
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.child_timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"{workload}/{impl} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _workload(name: str) -> Workload:
    return EXTRA_WORKLOADS.get(name) or WORKLOADS[name]


def scaled(workload: Workload, quick: bool) -> Workload:
    if not quick:
        return workload
    return replace(workload, reps=max(1, workload.reps // 4), warmup=1)


def benchmark_workload(args: argparse.Namespace, workload: Workload, out: Callable) -> dict:
    """Gradient agreement, then one timed child per implementation; prints the table."""
    device = torch.device(args.device)
    names = args.impls or default_implementations(workload, device)
    if "metalearn" not in names:
        names = ["metalearn", *names]
    errors: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        gradients = {}
        for name in names:
            if split_name(name)[0] != name:
                continue  # the same code as its untuned row
            grad_file = os.path.join(tmp, f"{name.replace('/', '_')}.pt")
            checked = run_in_child(args, workload.name, name, grad_out=grad_file)
            if "skipped" not in checked:
                gradients[name] = torch.load(grad_file)
        for name, grads in gradients.items():
            errors[name] = compare_gradients(gradients["metalearn"], grads, name, rtol=1e-6)
    print(f"  {workload.name}: meta-gradients agree (float64): {errors}", file=sys.stderr)
    results: dict[str, dict] = {}
    quick = scaled(workload, args.quick)
    # Rounds of every implementation in turn (fresh processes each): on a shared machine the
    # load drifts, and alternating spreads it over all rows instead of a few.
    rounds = max(1, args.rounds)
    reps = max(1, -(-quick.reps // rounds))
    for round_index in range(rounds):
        for name in names:
            result = run_in_child(args, workload.name, name, reps=reps, warmup=quick.warmup)
            if name not in results or "skipped" in result:
                results[name] = result
            else:
                results[name]["times"] += result["times"]
                results[name]["peak_mib"] = max(results[name]["peak_mib"], result["peak_mib"])
            if split_name(name)[0] in errors:
                results[name]["grad_error"] = errors[split_name(name)[0]]
            summary = _summary(results[name], workload)
            print(f"  {workload.name}/{name} (round {round_index + 1}): {summary}", file=sys.stderr)
    out(f"\n### {workload.title}\n")
    out(table_rows(results, workload))
    return results


def _summary(result: dict, workload: Workload) -> str:
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    median = statistics.median(result["times"])
    return f"{median * 1e3:.1f} ms/step, {workload.meta_batch / median:.1f} tasks/s"


def table_rows(results: dict[str, dict], workload: Workload) -> str:
    ours = results["metalearn"]
    ours_rate = workload.meta_batch / statistics.median(ours["times"])
    lines = [
        "| implementation | ms / step (median) | tasks/s | peak memory MiB | metalearn speed-up "
        "| memory vs metalearn | max grad diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        if "skipped" in result:
            lines.append(f"| {name} | skipped: {result['skipped']} | | | | | |")
            continue
        median = statistics.median(result["times"])
        rate = workload.meta_batch / median
        note = f" ({result['how']})" if result.get("how") else ""
        lines.append(
            f"| {name}{note} | {median * 1e3:.1f} | {rate:.2f} | {result['peak_mib']:.0f} | "
            f"{ours_rate / rate:.2f}x | {result['peak_mib'] / ours['peak_mib']:.2f}x | "
            f"{result.get('grad_error', 0.0):.1e} |"
        )
    return "\n".join(lines)


def cost_curves(args: argparse.Namespace, out: Callable) -> None:
    """Time vs meta-batch and vs inner steps, memory vs inner steps (metalearn default)."""
    device = torch.device(args.device)
    quick = args.quick
    plans = [
        (WORKLOADS["sine"], [1, 2, 4, 8, 16, 32], [1, 2, 4, 6, 8, 10], 5 if quick else 10),
        (CONV_SMALL, [1, 2, 4] if quick else [1, 2, 4, 8], [1, 2, 4] if quick else [1, 2, 4, 8], 2),
    ]
    for workload, batches, steps_list, reps in plans:
        out(f"\n### Cost curves: {workload.title} (metalearn default, {device.type})\n")
        out("| meta-batch | inner steps | ms / step | ms per task | peak memory MiB |")
        out("|---:|---:|---:|---:|---:|")
        points = [(b, workload.inner_steps if workload.kind == "conv" else 1) for b in batches]
        points += [(max(batches) // 2 if workload.kind == "sine" else 2, s) for s in steps_list]
        for meta_batch, steps in points:
            result = run_in_child(
                args,
                workload.name,
                "metalearn",
                meta_batch=meta_batch,
                steps=steps,
                reps=reps,
                warmup=1,
            )
            median = statistics.median(result["times"])
            out(
                f"| {meta_batch} | {steps} | {median * 1e3:.1f} | {median * 1e3 / meta_batch:.2f} "
                f"| {result['peak_mib'] - result['before_mib']:.0f} (+{result['before_mib']:.0f}) |"
            )
        out(
            "\nPeak memory is shown as growth over the process's memory before the first step "
            "(that baseline in brackets); each point is a fresh process."
        )


MEMORY_BATCHES = (1, 4, 16, 32)


def memory_implementations(workload: Workload, device: torch.device) -> list[str]:
    """The rows of the memory curve: every default row but the allocator-tuned duplicates."""
    return [n for n in default_implementations(workload, device) if not n.endswith(TUNED)]


def memory_curve(args: argparse.Namespace, workload: Workload, out: Callable) -> None:
    """Peak memory of meta-training against the meta-batch, for every row.

    One fresh process per point, and every point sees the same number of tasks (32: 32 steps
    at meta-batch 1, one at 32), so that a heap which settles over its first tasks is measured
    at its plateau whatever the meta-batch. A point whose projected
    peak (linear in the meta-batch from the last two points measured) exceeds
    ``--memory-limit-mib`` is not run, so that a shared machine is not driven out of memory.
    """
    device = torch.device(args.device)
    names = args.impls or memory_implementations(workload, device)
    kind = "allocated" if device.type == "cuda" else "peak RSS"
    out(f"\n### Peak memory (MiB, {kind}) vs meta-batch: {workload.title}\n")
    out(
        "Each cell: the peak over 32 tasks' meta-training (32 steps at meta-batch 1, 8 at 4, "
        "2 at 16, 1 at 32), and in brackets its growth over the process before the first "
        "step (model, optimizer and the task batch's tensors already allocated). One fresh "
        "process per cell; '-' = not run (projected over the limit)."
    )
    header = " | ".join(f"meta-batch {b}" for b in MEMORY_BATCHES)
    out(f"\n| implementation | {header} | peak 32 / peak 1 |")
    out("|---|" + "---:|" * (len(MEMORY_BATCHES) + 1))
    for name in names:
        cells, peaks = [], {}
        for meta_batch in MEMORY_BATCHES:
            known = sorted(peaks.items())
            if len(known) >= 2:
                (b0, m0), (b1, m1) = known[-2:]
                projected = m1 + (m1 - m0) / (b1 - b0) * (meta_batch - b1)
                if projected > args.memory_limit_mib:
                    cells.append(f"- (~{projected:,.0f})")
                    continue
            result = run_in_child(
                args, workload.name, name, meta_batch=meta_batch,
                reps=MEMORY_BATCHES[-1] // meta_batch, warmup=0,
            )  # fmt: skip
            if "skipped" in result:
                cells = [result["skipped"]] + [""] * (len(MEMORY_BATCHES) - 1)
                break
            peaks[meta_batch] = result["peak_mib"]
            growth = result["peak_mib"] - result["before_mib"]
            cells.append(f"{result['peak_mib']:,.0f} (+{growth:,.0f})")
            print(f"  memory {workload.name}/{name}/{meta_batch}: {cells[-1]}", file=sys.stderr)
        ratio = f"{peaks[32] / peaks[1]:.2f}x" if 32 in peaks and 1 in peaks else "-"
        out(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")


def memory_growth(args: argparse.Namespace, out: Callable) -> None:
    steps = 1000
    kind = "allocated" if args.device.startswith("cuda") else "RSS"
    # The default (vmap on CPU for the sine MLP) and the looped path (per-task meta-gradients).
    for impl in ("metalearn", "metalearn-loop"):
        result = run_in_child(args, "sine", impl, reps=1, warmup=0, leak_steps=steps)
        samples = result["leak"]
        out(f"\n### Memory across {steps} meta-steps (sine, {impl}, {kind} MiB)\n")
        out("| " + " | ".join(str(s) for s, _ in samples) + " |")
        out("|" + "---:|" * len(samples))
        out("| " + " | ".join(f"{m:.1f}" for _, m in samples) + " |")
        growth = samples[-1][1] - samples[0][1]
        out(f"\nGrowth from step {samples[0][0]} to step {samples[-1][0]}: {growth:+.1f} MiB.")


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    parts = [
        f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        f"torch {torch.__version__}, Python {platform.python_version()}",
        f"date {datetime.date.today().isoformat()}",
    ]
    if device.type == "cuda":
        parts.insert(0, f"GPU: {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--workloads",
        default="sine,miniimagenet,omniglot",
        help="comma-separated, from: " + ", ".join(WORKLOADS),
    )
    parser.add_argument("--impls", default="", help="comma-separated implementations (default all)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and curve points")
    parser.add_argument("--no-curves", action="store_true", help="skip the cost curves")
    parser.add_argument("--no-leak", action="store_true", help="skip the 1,000-step memory check")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default torch's)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternate the rows this many times (default 2)"
    )
    parser.add_argument(
        "--memory",
        default="",
        help="comma-separated workloads for peak memory vs meta-batch 1, 4, 16, 32 (default none)",
    )
    parser.add_argument(
        "--memory-limit-mib",
        type=float,
        default=8000,
        help="skip memory points whose projected peak exceeds this (default 8000)",
    )
    parser.add_argument("--output", default="", help="markdown file to write (default: print only)")
    parser.add_argument("--child-timeout", type=float, default=900.0)
    child = parser.add_argument_group("internal (one measurement per child process)")
    child.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--workload", help=argparse.SUPPRESS)
    child.add_argument("--impl", help=argparse.SUPPRESS)
    child.add_argument("--grad-out", help=argparse.SUPPRESS)
    child.add_argument("--reps", type=int, default=0, help=argparse.SUPPRESS)
    child.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    child.add_argument("--meta-batch", type=int, default=0, help=argparse.SUPPRESS)
    child.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    child.add_argument("--leak-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.impls = [n for n in args.impls.split(",") if n]
    unknown = [n for n in args.impls if not known_implementation(n)]
    if unknown:
        choices = list(IMPLEMENTATIONS) + [p + TUNED for p in PEERS]
        parser.error(f"unknown --impls {unknown}; choose from {choices}")
    args.memory = [n for n in args.memory.split(",") if n]
    args.workloads = [n for n in args.workloads.split(",") if n]
    unknown = [
        n for n in args.workloads + args.memory if n not in WORKLOADS and n not in EXTRA_WORKLOADS
    ]
    if unknown:
        parser.error(f"unknown --workloads {unknown}; choose from {list(WORKLOADS)}")
    if args.device.startswith("cuda") and not args.child and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return 0
    lines: list[str] = []

    def out(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out(f"## MAML meta-training step, {device.type.upper()}\n")
    out(machine_description(device) + "\n")
    out(
        "One step = meta-loss over the batch + second-order backward + Adam step. Median over "
        "repeated steps, each implementation in its own process. Meta-gradients are checked "
        "equal first, in float64 on 2 tasks ('max grad diff': largest difference relative to "
        "metalearn's largest entry; the run stops above 1e-6); timings are float32."
    )
    started = time.perf_counter()
    for name in args.workloads:
        benchmark_workload(args, _workload(name), out)
    for name in args.memory:
        memory_curve(args, _workload(name), out)
    if not args.no_curves:
        cost_curves(args, out)
    if not args.no_leak:
        memory_growth(args, out)
    out(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
