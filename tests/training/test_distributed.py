"""Data-parallel meta-training: N ranks give the 1-process run; a failed rank fails the job.

The multi-process tests start real gloo process groups on 127.0.0.1 with
:func:`metalearn.training.launch.spawn`; each group of checks shares one spawn because
starting processes costs seconds. The workers are module-level so the spawned processes can
import them.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metalearn as ml
from metalearn.training import distributed as D
from metalearn.training.evaluate import sample_fixed
from metalearn.training.launch import SpawnError, spawn
from metalearn.training.task_stream import TaskStream, train_task_seed

SEED = 3
META_BATCH = 4
ITERATIONS = 5


# -- learners shared by the workers and the 1-process references --------------------------------
class LearnedStepSizes(ml.MAML):
    """MAML with one learned inner step size per parameter tensor (Meta-SGD-like), plus a
    parameter that never gets a gradient."""

    def __init__(self, model: nn.Module, inner_lr: float) -> None:
        names = [name for name, _ in model.named_parameters()]
        super().__init__(
            model, F.mse_loss, inner_lr, inner_steps=2, update=LogRates(names, inner_lr)
        )
        self.unused = nn.Parameter(torch.zeros(2))


class LogRates(ml.updates.Rule):
    """An update rule: one learned log step size per parameter tensor."""

    def __init__(self, names: list[str], inner_lr: float) -> None:
        super().__init__()
        self.names = names
        self.log_lrs = nn.Parameter(torch.full((len(names),), float(torch.tensor(inner_lr).log())))

    def forward(self, grads, state, step, params):
        lrs = self.log_lrs.exp()
        return {name: -lrs[self.names.index(name)] * g for name, g in grads.items()}, state


def make_run(kind: str, init_seed: int):
    """A float64 learner and its optimizer; the weights depend on ``init_seed`` only.

    ``"learned_lr+compiled"`` is ``"learned_lr"`` after ``learner.compile()`` (its unused
    parameter must keep ``.grad`` None there too); its 1-process reference runs eagerly.
    """
    torch.manual_seed(init_seed)
    model = ml.models.MLP([1, 8, 8, 1])
    if kind.startswith("learned_lr"):
        learner = LearnedStepSizes(model, inner_lr=0.05)
        if kind.endswith("+compiled"):
            learner.compile(backend="aot_eager")  # inductor's tracing without generating C++
    else:
        learner = ml.MAML(model, F.mse_loss, inner_lr=0.05, inner_steps=2)
    if kind == "maml_sgd":
        optimizer = torch.optim.SGD(learner.parameters(), lr=0.01, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(learner.parameters(), lr=0.01)
    return learner, optimizer


def sampler():
    return ml.tasks.Sine(k_shot=5, k_query=5, dtype=torch.float64)


def grads_of(learner: nn.Module) -> dict[str, torch.Tensor | None]:
    return {
        k: None if p.grad is None else p.grad.detach().clone()
        for k, p in learner.named_parameters()
    }


def state_of(learner: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.state_dict().items()}


KINDS = ("maml_sgd", "maml_adam", "learned_lr", "learned_lr+compiled")


# -- the workers --------------------------------------------------------------------------------
def _equivalence_worker(info: D.RankInfo) -> dict:
    torch.set_default_dtype(torch.float64)
    result: dict = {"info": info, "is_main": D.is_main_process(), "world": D.world_size()}
    for kind in KINDS:
        # Ranks start from different weights: the broadcast must make them all rank 0's.
        learner, optimizer = make_run(kind, init_seed=100 + info.rank)
        D.broadcast_parameters(learner)
        stream = TaskStream(sampler(), META_BATCH, seed=SEED)
        learner(stream.sample(0)).loss.backward()
        D.average_gradients(learner)
        result[kind, "grad"] = grads_of(learner)
        learner.zero_grad(set_to_none=True)
        history = ml.train(learner, sampler(), optimizer, ITERATIONS, META_BATCH, seed=SEED,
                           progress=False)  # fmt: skip
        result[kind, "state"] = state_of(learner)
        result[kind, "history"] = history

    # None gradients: rank 0 has none for `b`, no rank has one for `c`.
    module = nn.Module()
    module.a = nn.Parameter(torch.zeros(3))
    module.b = nn.Parameter(torch.zeros(2))
    module.c = nn.Parameter(torch.zeros(1))
    module.a.grad = torch.full((3,), float(info.rank + 1))
    if info.rank == 1:
        module.b.grad = torch.tensor([4.0, -2.0])
    D.average_gradients(module)
    result["none_grads"] = grads_of(module)

    # Ranks that built different models are told so, instead of exchanging garbage.
    try:
        D.broadcast_parameters(nn.Linear(2 + info.rank, 1))
    except ValueError as error:
        result["layout_error"] = str(error)
    try:
        D.average_metrics({"loss": 1.0} if info.rank == 0 else {"acc": 1.0})
    except ValueError as error:
        result["metric_error"] = str(error)
    result["metrics"] = D.average_metrics({"loss": torch.tensor(float(info.rank)), "n": 2})
    D.barrier()
    return result


def _failing_worker(info: D.RankInfo, how: str) -> None:
    torch.set_default_dtype(torch.float64)
    learner, optimizer = make_run("maml_sgd", init_seed=0)

    def callback(iteration: int, metrics: dict) -> None:
        if info.rank == 1 and iteration == 2:
            if how == "crash":
                raise RuntimeError("boom at step 2")
            time.sleep(120)  # a hung rank: the others must time out

    ml.train(learner, sampler(), optimizer, 50, META_BATCH, progress=False, callback=callback)


def _nccl_worker(info: D.RankInfo) -> dict:
    torch.set_default_dtype(torch.float64)
    learner, optimizer = make_run("learned_lr", init_seed=100 + info.rank)
    learner.to(info.device)
    ml.train(learner, sampler(), optimizer, ITERATIONS, META_BATCH, seed=SEED, progress=False)
    return {"device": str(info.device), "state": {k: v.cpu() for k, v in state_of(learner).items()}}


# -- the 1-process reference --------------------------------------------------------------------
_references: dict = {}


def reference(kind: str):
    """1 process, meta-batch 4, the same tasks, written without TaskStream or train()."""
    if kind not in _references:
        _references[kind] = _reference(kind)
    return _references[kind]


def _reference(kind: str):
    learner, optimizer = make_run(kind.removesuffix("+compiled"), init_seed=100)
    tasks = sampler()

    def batch(t: int):
        return sample_fixed(tasks, [train_task_seed(SEED, t, j) for j in range(META_BATCH)])

    learner(batch(0)).loss.backward()
    first_grad = grads_of(learner)
    learner.zero_grad(set_to_none=True)
    losses = []
    for t in range(ITERATIONS):
        out = learner(batch(t))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    return first_grad, state_of(learner), losses


def assert_close_dicts(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        if want[k] is None:
            assert got[k] is None, k
        else:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-10, msg=k)


@pytest.fixture(scope="module")
def two_ranks():
    return spawn(_equivalence_worker, 2, timeout=60.0, num_threads=1)


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_match_one_process(two_ranks, kind, float64):
    want_grad, want_state, want_losses = reference(kind)
    for result in two_ranks:
        assert_close_dicts(result[kind, "grad"], want_grad)
        assert_close_dicts(result[kind, "state"], want_state)
        got_losses = [m["meta_loss"] for m in result[kind, "history"]]
        assert got_losses == pytest.approx(want_losses, rel=0, abs=1e-10)
    # The parameters moved, and the learned step sizes are meta-learned too.
    initial = state_of(make_run(kind, init_seed=100)[0])
    assert not torch.equal(two_ranks[0][kind, "state"]["model.head.weight"],
                           initial["model.head.weight"])  # fmt: skip
    if kind.startswith("learned_lr"):
        assert want_grad["unused"] is None
        assert want_grad["update.log_lrs"].abs().min() > 0
        assert not torch.equal(want_state["update.log_lrs"], initial["update.log_lrs"])
        torch.testing.assert_close(two_ranks[0][kind, "state"]["unused"], torch.zeros(2))


@pytest.mark.parametrize("chunk_size", [None, 1])
@pytest.mark.parametrize("kind", ["learned_lr"])
def test_train_distributed_true_in_one_process_is_the_same_run(kind, chunk_size, float64):
    # In chunks too: the rank's share of the stream's batch, its meta-gradient accumulated.
    _, want_state, want_losses = reference(kind)
    learner, optimizer = make_run(kind, init_seed=100)
    history = ml.train(learner, sampler(), optimizer, ITERATIONS, META_BATCH, seed=SEED,
                       progress=False, distributed=True, chunk_size=chunk_size)  # fmt: skip
    assert_close_dicts(state_of(learner), want_state)
    assert [m["meta_loss"] for m in history] == pytest.approx(want_losses, rel=0, abs=1e-10)


def test_ranks_agree_on_who_is_main(two_ranks):
    assert [r["info"].rank for r in two_ranks] == [0, 1]
    assert [r["info"].world_size for r in two_ranks] == [2, 2]
    assert [r["info"].backend for r in two_ranks] == ["gloo", "gloo"]
    assert [r["is_main"] for r in two_ranks] == [True, False]
    assert [r["world"] for r in two_ranks] == [2, 2]


def test_missing_gradients_are_zeros_where_missing_and_none_where_missing_everywhere(two_ranks):
    for result in two_ranks:
        grads = result["none_grads"]
        torch.testing.assert_close(grads["a"], torch.full((3,), 1.5, dtype=torch.float64))
        torch.testing.assert_close(grads["b"], torch.tensor([2.0, -1.0], dtype=torch.float64))
        assert grads["c"] is None


def test_mismatched_ranks_fail_clearly(two_ranks):
    for result in two_ranks:
        assert "every rank must build the same learner" in result["layout_error"]
        assert "different metric names" in result["metric_error"]
        assert result["metrics"] == {"loss": 0.5, "n": 2.0}


def test_crashed_rank_fails_the_others():
    with pytest.raises(SpawnError) as caught:
        spawn(_failing_worker, 2, ("crash",), timeout=30.0, grace=60.0, num_threads=1)
    errors = caught.value.errors
    assert "boom at step 2" in errors[1]
    assert "DistributedError" in errors[0]
    assert "rank 0 of 2: averaging the gradients failed" in errors[0]
    assert "Another rank probably crashed" in errors[0]


@pytest.mark.slow  # waits for the timeout, which must also cover the ranks' start-up spread
def test_hung_rank_fails_the_others_after_the_timeout():
    with pytest.raises(SpawnError) as caught:
        spawn(_failing_worker, 2, ("hang",), timeout=8.0, grace=1.0, num_threads=1)
    errors = caught.value.errors
    assert "DistributedError" in errors[0]
    assert "process-group timeout (8 s)" in errors[0]
    assert "terminated" in errors[1]


@pytest.mark.cuda
def test_nccl_ranks_on_gpus_match_one_cpu_process(float64):
    size = 2 if torch.cuda.device_count() >= 2 else 1
    results = spawn(_nccl_worker, size, backend="nccl", timeout=120.0)
    assert [r["device"] for r in results] == [f"cuda:{i}" for i in range(size)]
    want = reference("learned_lr")[1]
    for result in results:
        for k, v in want.items():
            torch.testing.assert_close(result["state"][k], v, rtol=1e-9, atol=1e-9, msg=k)


# -- single-process pieces ----------------------------------------------------------------------
def test_task_stream_shards_are_the_global_batch_whatever_the_world_size():
    tasks = sampler()
    for t in (0, 7):
        whole = TaskStream(tasks, 8, seed=1).global_batch(t)
        for size in (1, 2, 4, 8):
            shards = [TaskStream(tasks, 8, seed=1, rank=r, world_size=size) for r in range(size)]
            joined = ml.tasks.TaskBatch.concat([s.sample(t) for s in shards])
            torch.testing.assert_close(joined.support.x, whole.support.x, rtol=0, atol=0)
            torch.testing.assert_close(joined.query.y, whole.query.y, rtol=0, atol=0)
    stream = TaskStream(tasks, 4, seed=1, rank=1, world_size=2)
    assert stream.local_batch_size == 2 and stream.indices(5) == range(2, 4)
    assert not torch.equal(stream.sample(0).support.x, stream.sample(1).support.x)
    other_seed = TaskStream(tasks, 4, seed=2, rank=1, world_size=2)
    assert not torch.equal(stream.sample(0).support.x, other_seed.sample(0).support.x)
    # A task does not depend on the meta-batch size either: task j of iteration t is fixed.
    torch.testing.assert_close(
        TaskStream(tasks, 2, seed=1).global_batch(3).support.x,
        TaskStream(tasks, 6, seed=1).global_batch(3).support.x[:2],
    )


def test_train_task_seed_is_stable_and_distinct():
    seeds = {train_task_seed(0, t, j) for t in range(20) for j in range(20)}
    assert len(seeds) == 400
    assert train_task_seed(0, 1, 2) == train_task_seed(0, 1, 2)
    assert all(0 <= s < 2**63 for s in seeds)


def test_task_stream_rejects_bad_input():
    tasks = sampler()
    with pytest.raises(ValueError, match="meta_batch_size=5 must be divisible by the world size 2"):
        TaskStream(tasks, 5, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank must be an int in"):
        TaskStream(tasks, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be >= 1, got 0"):
        TaskStream(tasks, 4, rank=0, world_size=0)
    with pytest.raises(TypeError, match="meta_batch_size must be an int, got str '4'"):
        TaskStream(tasks, "4")
    with pytest.raises(TypeError, match="sampler must have a sample"):
        TaskStream(object(), 4)
    with pytest.raises(ValueError, match="iteration must be >= 0, got -1"):
        TaskStream(tasks, 4).sample(-1)


def test_without_a_process_group_everything_is_rank_0_of_1(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = D.init_distributed()
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
    assert not D.is_distributed()
    assert (D.rank(), D.world_size(), D.is_main_process()) == (0, 1, True)
    module = nn.Linear(2, 1)
    module.weight.grad = torch.ones_like(module.weight)
    D.average_gradients(module)
    D.broadcast_parameters(module)
    D.barrier()
    assert torch.equal(module.weight.grad, torch.ones_like(module.weight))
    assert module.bias.grad is None
    assert D.average_metrics({"loss": torch.tensor(2.5)}) == {"loss": 2.5}
    D.cleanup()


def test_init_distributed_names_missing_launcher_variables(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not set: launch with"):
        D.init_distributed()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="need 0 <= RANK < WORLD_SIZE"):
        D.init_distributed()
    with pytest.raises(ValueError, match="timeout must be positive"):
        D.init_distributed(timeout=0)
    assert not D.is_distributed()


def test_spawn_rejects_bad_world_size():
    with pytest.raises(ValueError, match="world_size must be >= 1, got 0"):
        spawn(_failing_worker, 0)


def test_stream_chunks_are_its_shard_drawn_one_chunk_at_a_time():
    calls = []

    class Logged:
        def sample(self, num_tasks, generator=None):
            calls.append(num_tasks)
            return sampler().sample(num_tasks, generator)

    stream = TaskStream(Logged(), 6, seed=SEED, rank=1, world_size=2)
    whole = stream.sample(4)
    calls.clear()
    chunks = stream.sample_chunks(4, 2)
    assert calls == []  # nothing drawn until the iterator reaches a chunk
    first = next(chunks)
    assert calls == [1, 1] and first.num_tasks == 2
    joined = ml.tasks.TaskBatch.concat([first, *chunks])
    assert calls == [1, 1, 1] and joined.num_tasks == 3
    for a, b in [(joined.support, whole.support), (joined.query, whole.query)]:
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    with pytest.raises(ValueError, match="chunk_size"):
        stream.sample_chunks(4, 0)
