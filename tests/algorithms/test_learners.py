"""One table of checks run over every learner (MAML, FOMAML, ANIL, Meta-SGD, Reptile, MAML++,
Pretrain, CAVIA, ProtoMAML, UnicornMAML) on a tiny MLP (regression) and a tiny conv net with
metalearn BatchNorm (classification). Learner-specific checks live in the test_<learner>.py
files."""

from __future__ import annotations

import pytest
import torch
from learner_cases import LEARNERS, PROBLEMS, build, factory, meta_gradient, problem_of

import metalearn as ml
from metalearn import testing

ALL = sorted(LEARNERS)
EXACT = sorted(n for n, (_, exact) in LEARNERS.items() if exact)
EXACT_CASES = [(n, p) for n in EXACT for p in PROBLEMS]
# Every learner on the MLP; on the (slower, float64 CPU convolutions) conv net the learners
# whose inner loop differs there: BatchNorm adapting (MAML), head only (ANIL), per-step
# BatchNorm (MAML++).
CASES = [(n, "mlp") for n in ALL] + [
    (n, "conv") for n in ("ANIL", "CAVIA", "MAML", "MAMLPlusPlus", "ProtoMAML", "UnicornMAML")
]


@pytest.mark.parametrize(("name", "problem"), EXACT_CASES)
def test_meta_gradient_matches_finite_differences(name, problem):
    # Two random directions over all parameters, |analytic - numeric| <= 1e-8 + 1e-5 |numeric|.
    testing.check_meta_gradient(factory(name, problem), make_batch(name, problem))


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_func_and_higher_backends_agree(name, problem):
    testing.check_backends_agree(factory(name, problem), make_batch(name, problem))


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_loop_and_vmap_agree(name, problem):
    testing.check_loop_matches_vmap(factory(name, problem), make_batch(name, problem))


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_same_seed_same_numbers(name, problem):
    make = factory(name, problem, seed=3)
    testing.check_deterministic(
        lambda **kw: make(**kw).float(), make_batch(name, problem).to(torch.float32)
    )


@pytest.mark.parametrize("backend", ["func", "higher"])
@pytest.mark.parametrize("name", ALL)
def test_to_device(device, name, backend):
    learner, batch = build(name, "mlp", backend=backend)
    learner = learner.float().to(device)
    batch = batch.to(device=device, dtype=torch.float32)
    out = learner(batch)
    out.loss.backward()
    assert out.loss.device.type == device.type
    # ProtoMAML and UnicornMAML overwrite the head for every task: no gradient there.
    unused = ("model.head.",) if name in ("ProtoMAML", "UnicornMAML") else ()
    for n, p in learner.named_parameters():
        assert p.device.type == device.type
        assert n.startswith(unused) or (p.grad is not None and p.grad.device.type == device.type)
    fast = learner.adapt(batch.task(0).support, steps=2)
    assert all(v.device.type == device.type for v in fast.values())


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_state_dict_round_trip(name, problem):
    testing.check_state_dict_round_trip(factory(name, problem), make_batch(name, problem))


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_adapt_predict_and_evaluate(float64, name, problem):
    learner, batch = build(name, problem)
    support, query = batch.task(0).support, batch.task(0).query
    with torch.no_grad():
        fast = learner.adapt(support, steps=2)
    state = set(learner.task_state(support))  # CAVIA's context
    assert set(fast) == {n for n, _ in learner.model.named_parameters()} | state
    assert not any(v.requires_grad for v in fast.values())
    assert learner.predict(fast, query.x, 2).shape[0] == query.x.shape[0]
    result = learner.evaluate_batch(batch, [0, 1, 4])
    assert result["loss"].shape == (batch.num_tasks, 3)
    assert torch.isfinite(result["loss"]).all()
    before = [p.detach().clone() for p in learner.parameters()]
    regression = batch.query.y.is_floating_point()
    ml.evaluate(learner, ml.tasks.Sine(5, 10) if regression else _Fixed(batch), 4, [0, 1])
    assert all(torch.equal(a, p) for a, p in zip(before, learner.parameters(), strict=True))


def make_batch(name: str, problem: str) -> ml.tasks.TaskBatch:
    return problem_of(name, problem)[2]()


class _Fixed:
    """A sampler that returns tasks of a fixed batch (enough for evaluate's protocol)."""

    def __init__(self, batch):
        self.batch = batch

    def sample(self, num_tasks, generator=None):
        index = torch.randint(self.batch.num_tasks, (num_tasks,), generator=generator)
        (sx, sy), (qx, qy) = self.batch.support, self.batch.query
        return ml.tasks.TaskBatch.from_tensors(sx[index], sy[index], qx[index], qy[index])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("argument", "value", "error"),
    [
        ("inner_lr", -0.1, ValueError),
        ("inner_lr", "0.1", TypeError),
        ("inner_steps", 1.5, TypeError),
        ("backend", "jax", ValueError),
        ("vectorize", "threads", ValueError),
    ],
)
def test_bad_arguments_name_the_argument(name, argument, value, error):
    from learner_cases import tiny_mlp

    factory = LEARNERS[name][0]
    model = tiny_mlp()
    if argument in ("inner_lr", "inner_steps"):
        kwargs = _positional(name, argument, value)
        with pytest.raises(error, match=argument):
            kwargs["cls"](model, torch.nn.functional.mse_loss, **kwargs["args"])
    else:
        with pytest.raises(error, match=argument):
            factory(model, torch.nn.functional.mse_loss, **{argument: value})


def _positional(name: str, argument: str, value) -> dict:
    cls = {"ReptileAdam": ml.Reptile}.get(name) or getattr(ml, name)
    args = {"inner_lr": 0.1, "inner_steps": 1}
    args[argument] = value
    if name == "MAMLPlusPlus":
        args["per_step_bn"] = False
    if name == "CAVIA":
        args["context_size"] = 2
    return {"cls": cls, "args": args}


@pytest.mark.parametrize("name", ALL)
def test_higher_backend_refuses_vmap(name):
    from learner_cases import tiny_mlp

    with pytest.raises(ValueError, match="backend='higher'"):
        LEARNERS[name][0](
            tiny_mlp(), torch.nn.functional.mse_loss, backend="higher", vectorize="vmap"
        )


def test_every_learner_is_exported():
    for name in sorted(set(LEARNERS) - {"ReptileAdam"}):
        assert issubclass(getattr(ml, name), ml.Learner)
        assert name in ml.__all__


@pytest.mark.parametrize("vectorize", ["loop", "vmap"])
@pytest.mark.parametrize(("name", "problem"), CASES)
def test_chunked_meta_batch_gives_the_whole_batch_update(name, problem, vectorize):
    # Trainer(chunk_size=2) on 5 tasks runs chunks of 2, 2 and 1: the accumulated gradient and
    # the logged metrics must be the whole batch's (float64).
    learner, _ = build(name, problem, vectorize=vectorize)
    batch = problem_of(name, problem)[2](tasks=5)
    if hasattr(learner, "on_iteration"):
        learner.on_iteration(0)  # as Trainer.step does (MAML++'s schedules)
    whole_loss, whole = meta_gradient(learner, batch)
    whole_metrics = {k: v.item() for k, v in learner(batch).metrics.items()}

    class Fixed:
        def sample(self, num_tasks, generator=None):
            return batch

    trainer = ml.Trainer(
        learner, Fixed(), torch.optim.SGD(learner.parameters(), lr=0.0), iterations=1,
        meta_batch_size=5, chunk_size=2, progress=False, tune_allocator=False,
    )  # fmt: skip
    metrics = trainer.step()
    chunked = torch.cat([
        torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
        for p in learner.parameters()
    ])  # fmt: skip
    torch.testing.assert_close(chunked, whole, rtol=1e-10, atol=1e-12)
    assert metrics["meta_loss"] == pytest.approx(whole_loss.item(), rel=1e-12)
    for k, v in whole_metrics.items():  # accuracy is a float32 mean
        assert metrics[k] == pytest.approx(v, rel=1e-6, abs=1e-12)
