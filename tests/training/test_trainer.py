"""The trainer: exact resume, divergence, best-state selection, hooks, AMP, clipping."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.training import DivergenceError, EvalProtocol, Trainer, read_metrics


class NoisySine:
    """Sine tasks plus noise from the global torch, numpy and Python RNGs.

    A resumed run reproduces these only if every global RNG state was checkpointed.
    """

    def __init__(self) -> None:
        self.sine = ml.tasks.Sine(k_shot=5, k_query=5)

    def sample(self, num_tasks, generator=None):
        batch = self.sine.sample(num_tasks, generator=generator)
        noise = (
            0.1 * torch.randn(batch.support.y.shape)
            + 0.1 * float(np.random.standard_normal())
            + 0.1 * random.random()
        )
        return ml.tasks.TaskBatch.from_tensors(
            batch.support.x, batch.support.y + noise, batch.query.x, batch.query.y
        )


def make_trainer(run_dir, *, init_seed=0, **options):
    torch.manual_seed(init_seed)
    learner = ml.MAML(ml.models.MLP([1, 16, 16, 1]), F.mse_loss, inner_lr=0.01, vectorize="loop")
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    defaults = dict(
        iterations=10,
        meta_batch_size=4,
        seed=3,
        scheduler=scheduler,
        validation=EvalProtocol(ml.tasks.Sine(5, 5), num_tasks=8, seed=1),
        validate_every=3,
        run_dir=run_dir,
        checkpoint_every=5,
        progress=False,
        plot=False,
        tensorboard=False,
    )
    defaults.update(options)
    return Trainer(learner, NoisySine(), optimizer, **defaults)


class Kill(Exception):
    pass


def kill_after(iterations):
    def callback(index, metrics):
        if index + 1 == iterations:
            raise Kill

    return callback


def test_resume_after_a_kill_gives_bit_identical_losses(tmp_path):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    uninterrupted = make_trainer(tmp_path / "a")
    full = [m["meta_loss"] for m in uninterrupted.fit()]

    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    killed = make_trainer(tmp_path / "b", callback=kill_after(7))
    with pytest.raises(Kill):
        killed.fit()
    assert [m["meta_loss"] for m in killed.history] == full[:7]

    # A new "process": other global RNG states, another initialisation, fresh objects.
    torch.manual_seed(999)
    np.random.seed(999)
    random.seed(999)
    resumed = make_trainer(tmp_path / "b", init_seed=42)
    resumed.resume(tmp_path / "b" / "checkpoint.pt")
    assert resumed.iteration == 5
    rest = [m["meta_loss"] for m in resumed.fit()]

    assert rest == full[5:]  # exact equality, not a tolerance
    final_a = uninterrupted.learner.state_dict()
    final_b = resumed.learner.state_dict()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert resumed.best_iteration == uninterrupted.best_iteration
    assert resumed.best_score == uninterrupted.best_score
    assert resumed.optimizer.param_groups[0]["lr"] == uninterrupted.optimizer.param_groups[0]["lr"]
    # The log of the resumed run holds each iteration once: the killed run's 6 and 7 were redone.
    records = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["iteration"] for r in records if r["split"] == "train"] == list(range(1, 11))


def test_forced_nan_loss_stops_with_iteration_and_last_checkpoint(tmp_path):
    class NanAtFour(NoisySine):
        calls = 0

        def sample(self, num_tasks, generator=None):
            self.calls += 1
            batch = super().sample(num_tasks, generator)
            if self.calls == 4:
                return ml.tasks.TaskBatch.from_tensors(
                    batch.support.x, batch.support.y, batch.query.x, batch.query.y * torch.nan
                )
            return batch

    trainer = make_trainer(tmp_path, checkpoint_every=2, validation=None)
    trainer.sampler = NanAtFour()
    with pytest.raises(DivergenceError) as info:
        trainer.fit()
    error = info.value
    checkpoint = tmp_path / "checkpoint.pt"
    assert error.iteration == 4 and error.quantity == "meta-loss"
    assert error.checkpoint == checkpoint
    assert "iteration 4" in str(error) and str(checkpoint) in str(error)
    assert trainer.iteration == 3
    assert ml.training.load_checkpoint(checkpoint)["iteration"] == 2


def test_nan_gradient_stops_before_the_update(tmp_path):
    trainer = make_trainer(None, validation=None)
    first = next(trainer.learner.parameters())
    first.register_hook(lambda g: g * torch.nan)
    before = {k: v.clone() for k, v in trainer.learner.state_dict().items()}
    with pytest.raises(DivergenceError, match="iteration 1: the gradient norm is nan") as info:
        trainer.fit()
    assert info.value.checkpoint is None
    assert "no checkpoint was written" in str(info.value)
    after = trainer.learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_divergence_error_pickles():
    import pickle

    error = DivergenceError(7, "meta-loss", float("inf"), None)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.iteration == 7


def test_best_state_is_restored_and_logged(tmp_path):
    states = []
    trainer = make_trainer(
        tmp_path,
        validate_every=1,
        iterations=6,
        callback=lambda i, m: states.append(
            {k: v.clone() for k, v in trainer.learner.state_dict().items()}
        ),
    )
    trainer.fit()
    val = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "val"]
    assert [r["iteration"] for r in val] == list(range(1, 7))
    best = min(val, key=lambda r: r["loss"])
    assert trainer.best_iteration == best["iteration"]
    assert trainer.best_score == best["loss"]
    expected = states[best["iteration"] - 1]
    final = trainer.learner.state_dict()
    assert all(torch.equal(final[k], expected[k]) for k in final)
    saved = ml.training.load_checkpoint(tmp_path / "best.pt")
    assert saved["iteration"] == best["iteration"]
    assert all(torch.equal(saved["learner"][k], expected[k]) for k in expected)


def test_accuracy_is_selected_higher_is_better():
    class Labels:
        def sample(self, num_tasks, generator=None):
            x = torch.randn(num_tasks, 6, 3, generator=generator)
            y = torch.arange(3).repeat(2).expand(num_tasks, 6)
            return ml.tasks.TaskBatch.from_tensors(x, y, x, y)

    torch.manual_seed(0)
    learner = ml.MAML(ml.models.MLP([3, 8, 3]), F.cross_entropy, inner_lr=0.1, vectorize="loop")
    trainer = Trainer(
        learner,
        Labels(),
        torch.optim.SGD(learner.parameters(), lr=0.1),
        iterations=4,
        meta_batch_size=2,
        validation=EvalProtocol(Labels(), num_tasks=4, seed=1),
        validate_every=1,
        progress=False,
    )
    scores = []
    original = trainer.validate

    def validate():
        result = original()
        scores.append(result.summary("accuracy")[0])
        return result

    trainer.validate = validate
    trainer.fit()
    assert trainer.best_score == max(scores)
    assert trainer.best_iteration == scores.index(max(scores)) + 1


def test_train_keeps_the_plain_loop_numbers():
    def model_and_opt():
        torch.manual_seed(0)
        learner = ml.MAML(ml.models.MLP([1, 16, 1]), F.mse_loss, inner_lr=0.01, vectorize="loop")
        return learner, torch.optim.Adam(learner.parameters(), lr=1e-3)

    learner, opt = model_and_opt()
    seen = []
    history = ml.train(
        learner,
        ml.tasks.Sine(5, 5),
        opt,
        4,
        3,
        seed=7,
        progress=False,
        callback=lambda i, m: seen.append(i),
    )
    assert seen == [0, 1, 2, 3]

    reference, opt = model_and_opt()
    generator = torch.Generator().manual_seed(7)
    expected = []
    for _ in range(4):
        out = reference(ml.tasks.Sine(5, 5).sample(3, generator=generator))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        expected.append({"meta_loss": out.loss.item(), "loss": out.metrics["loss"].item()})
    assert history == expected


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    learner = ml.MAML(ml.models.MLP([1, 16, 1]), F.mse_loss, inner_lr=0.01, vectorize="loop")
    before = torch.nn.utils.parameters_to_vector(learner.parameters()).detach().clone()
    opt = torch.optim.SGD(learner.parameters(), lr=1.0)
    ml.train(learner, ml.tasks.Sine(5, 5), opt, 1, 4, progress=False, grad_clip=1e-3)
    after = torch.nn.utils.parameters_to_vector(learner.parameters()).detach()
    assert (after - before).norm() <= 1e-3 * (1 + 1e-5)
    assert (after - before).norm() > 0


def test_scheduler_steps_every_iteration_and_lr_is_logged(tmp_path):
    trainer = make_trainer(tmp_path, iterations=7, validation=None)
    trainer.fit()
    lrs = [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert lrs == [1e-2] * 3 + [5e-3] * 3 + [2.5e-3]


def test_hooks_for_distributed_training(tmp_path):
    calls = {"sample": 0, "reduce": 0, "on_iteration": []}

    def shard(sampler, n, generator):
        calls["sample"] += 1
        return sampler.sample(n, generator=generator).chunk(2)[0]  # this rank's half

    def reduce(learner):
        calls["reduce"] += 1
        for p in learner.parameters():
            p.grad.zero_()

    trainer = make_trainer(
        tmp_path,
        iterations=3,
        validation=None,
        sample_batch=shard,
        reduce_gradients=reduce,
        is_main_process=False,
        scheduler=None,
    )
    trainer.learner.on_iteration = lambda it: calls["on_iteration"].append(it)
    trainer.optimizer = torch.optim.SGD(trainer.learner.parameters(), lr=1.0)
    before = {k: v.clone() for k, v in trainer.learner.state_dict().items()}
    trainer.fit()
    assert calls["sample"] == 3 and calls["reduce"] == 3
    assert calls["on_iteration"] == [0, 1, 2]
    after = trainer.learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # zeroed gradients, no step
    assert not any(tmp_path.iterdir())  # only the main process writes
    assert trainer.last_checkpoint == tmp_path / "checkpoint.pt"


def test_final_test_writes_json_and_plots(tmp_path):
    trainer = make_trainer(
        tmp_path,
        iterations=4,
        plot=True,
        test=EvalProtocol(ml.tasks.Sine(5, 20), num_tasks=10, steps=[0, 1, 3], seed=2),
    )
    trainer.fit()
    summary = json.loads((tmp_path / "test.json").read_text())
    assert summary["steps"] == [0, 1, 3] and summary["num_tasks"] == 10
    mean, ci = trainer.test_result.summary("loss", 3)
    assert summary["metrics"]["loss"]["mean"][-1] == mean
    assert summary["metrics"]["loss"]["ci95"][-1] == ci
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 0


def test_resuming_a_best_file_is_refused(tmp_path):
    make_trainer(tmp_path, iterations=3).fit()
    with pytest.raises(ValueError, match="not a trainer checkpoint"):
        make_trainer(tmp_path).resume(tmp_path / "best.pt")


def test_bad_arguments_are_named():
    learner = ml.MAML(ml.models.MLP([1, 4, 1]), F.mse_loss, inner_lr=0.01, vectorize="loop")
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="meta_batch_size"):
        Trainer(learner, ml.tasks.Sine(1, 1), opt, iterations=1, meta_batch_size=0)
    with pytest.raises(ValueError, match="grad_clip"):
        Trainer(learner, ml.tasks.Sine(1, 1), opt, iterations=1, meta_batch_size=1, grad_clip=-1)
    with pytest.raises(TypeError, match="optimizer"):
        Trainer(learner, ml.tasks.Sine(1, 1), "adam", iterations=1, meta_batch_size=1)
    with pytest.raises(ValueError, match="chunk_size"):
        Trainer(learner, ml.tasks.Sine(1, 1), opt, iterations=1, meta_batch_size=1, chunk_size=0)


def test_chunked_training_follows_the_whole_batch_run():
    # The same tasks and (up to rounding) the same updates, whatever the chunk size.
    def run(chunk_size):
        torch.manual_seed(0)
        learner = ml.MAML(ml.models.MLP([1, 16, 1]), F.mse_loss, inner_lr=0.01).double()
        opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
        history = ml.train(
            learner, ml.tasks.Sine(5, 5), opt, 5, 6, seed=3, progress=False,
            chunk_size=chunk_size,
        )  # fmt: skip
        return history, torch.nn.utils.parameters_to_vector(learner.parameters())

    whole, phi = run(None)
    for chunk_size in (1, 4, 6):
        history, chunked = run(chunk_size)
        torch.testing.assert_close(chunked, phi, rtol=1e-9, atol=1e-12)
        for a, b in zip(history, whole, strict=True):
            assert a["meta_loss"] == pytest.approx(b["meta_loss"], rel=1e-9)


def test_chunks_of_a_few_shot_batch_are_read_as_they_are_trained_on():
    # FewShot draws every task first and reads each chunk's images when its turn comes: the
    # run is the whole-batch run, and only one chunk's images are in memory at a time.
    rng = np.random.default_rng(0)
    images = ml.datasets.ImageClasses.from_labels(
        rng.integers(0, 256, (8 * 6, 4, 4), dtype=np.uint8), np.repeat(np.arange(8), 6)
    )
    log = []

    class Logged(ml.datasets.ImageClasses):
        def gather(self, classes, indices):
            log.append("read")
            return super().gather(classes, indices)

    images.__class__ = Logged
    tasks = ml.tasks.FewShot(images, n_way=3, k_shot=1, k_query=2)

    def run(chunk_size):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        learner = ml.MAML(net, F.cross_entropy, inner_lr=0.1).double()
        learner.register_forward_pre_hook(lambda module, args: log.append(args[0].num_tasks))
        opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
        history = ml.train(
            learner, tasks, opt, 3, 5, seed=1, progress=False, chunk_size=chunk_size
        )  # fmt: skip
        return history, torch.nn.utils.parameters_to_vector(learner.parameters())

    whole, phi = run(None)
    assert log[:3] == ["read", "read", 5]
    log.clear()
    history, chunked = run(2)
    assert log[:9] == ["read", "read", 2, "read", "read", 2, "read", "read", 1]
    torch.testing.assert_close(chunked, phi, rtol=1e-9, atol=1e-12)
    for a, b in zip(history, whole, strict=True):
        assert a["meta_loss"] == pytest.approx(b["meta_loss"], rel=1e-9)


def test_amp_is_a_no_op_on_cpu():
    def run(amp):
        torch.manual_seed(0)
        learner = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, inner_lr=0.01, vectorize="loop")
        opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
        return ml.train(learner, ml.tasks.Sine(5, 5), opt, 3, 2, progress=False, amp=amp)

    assert run(True) == run(False)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_amp_trains_on_cuda(tmp_path, dtype):
    torch.manual_seed(0)
    learner = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01).cuda()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    trainer = Trainer(
        learner,
        ml.tasks.Sine(5, 5),
        opt,
        iterations=20,
        meta_batch_size=4,
        amp=True,
        amp_dtype=dtype,
        run_dir=tmp_path,
        checkpoint_every=10,
        progress=False,
        plot=False,
    )
    history = trainer.fit()
    assert trainer.amp and all(np.isfinite(m["meta_loss"]) for m in history)
    again = Trainer(
        learner,
        ml.tasks.Sine(5, 5),
        opt,
        iterations=25,
        meta_batch_size=4,
        amp=True,
        amp_dtype=dtype,
        progress=False,
    )
    again.resume(tmp_path / "checkpoint.pt")
    assert len(again.fit()) == 5


def test_a_compiled_learner_trains_as_the_eager_one(tmp_path):
    def run(name, compile):
        np.random.seed(0)  # NoisySine draws from the global RNGs
        random.seed(0)
        trainer = make_trainer(tmp_path / name)
        if compile:
            trainer.learner.compile(backend="aot_eager")  # inductor's tracing, without C++
        return trainer, [m["meta_loss"] for m in trainer.fit()]

    eager, losses = run("eager", compile=False)
    compiled, losses_compiled = run("compiled", compile=True)
    assert compiled.learner._compiled is not None
    assert losses_compiled == pytest.approx(losses, rel=1e-4)
    for p, q in zip(eager.learner.parameters(), compiled.learner.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_a_nan_validation_score_is_never_the_best(tmp_path):
    class Scores:
        """A validation set whose mean loss is scripted: finite, then NaN, then lower, then inf."""

        def __init__(self, values):
            self.values = iter(values)

        def run(self, learner):
            loss = torch.full((4, 1), next(self.values), dtype=torch.float64)
            return ml.training.Evaluation((1,), {"loss": loss})

    trainer = make_trainer(tmp_path, validate_every=1, iterations=5, scheduler=None)
    trainer.validation = Scores([2.0, float("nan"), 3.0, 1.0, float("inf")])
    with pytest.warns(UserWarning, match="iteration 2: the mean loss is nan"):
        trainer.fit()
    assert (trainer.best_iteration, trainer.best_score) == (4, 1.0)
    # A NaN best kept by an older version is replaced by the first finite score.
    trainer = make_trainer(None, validate_every=1, iterations=1, scheduler=None)
    trainer.validation = Scores([5.0])
    trainer.best_score = float("nan")
    trainer.fit()
    assert (trainer.best_iteration, trainer.best_score) == (1, 5.0)
