"""One table of checks run over every learner (MAML, FOMAML, ANIL, Meta-SGD, Reptile, MAML++,
Pretrain) on a tiny MLP (regression) and a tiny conv net with metalearn BatchNorm
(classification). Learner-specific checks live in the test_<learner>.py files."""

from __future__ import annotations

import copy

import pytest
import torch
from learner_cases import LEARNERS, PROBLEMS, build, meta_gradient, relative_error

import metalearn as ml

ALL = sorted(LEARNERS)
EXACT = sorted(n for n, (_, exact) in LEARNERS.items() if exact)
EXACT_CASES = [(n, p) for n in EXACT for p in PROBLEMS]
# Every learner on the MLP; on the (slower, float64 CPU convolutions) conv net the learners
# whose inner loop differs there: BatchNorm adapting (MAML), head only (ANIL), per-step
# BatchNorm (MAML++).
CASES = [(n, "mlp") for n in ALL] + [(n, "conv") for n in ("ANIL", "MAML", "MAMLPlusPlus")]


@pytest.mark.parametrize(("name", "problem"), EXACT_CASES)
def test_meta_gradient_matches_finite_differences(float64, name, problem):
    learner, batch = build(name, problem, vectorize="loop")
    _, gradient = meta_gradient(learner, batch)
    params = list(learner.parameters())
    generator = torch.Generator().manual_seed(1)
    eps = 1e-6
    for _ in range(2):  # directional derivatives along random directions over all parameters
        direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(eps * d)
            plus = learner(batch).loss.item()
            for p, d in zip(params, direction, strict=True):
                p.sub_(2 * eps * d)
            minus = learner(batch).loss.item()
            for p, d in zip(params, direction, strict=True):
                p.add_(eps * d)
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(
            (g * d).sum() for g, d in zip(_split(gradient, params), direction, strict=True)
        )
        assert analytic.item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def _split(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [
        c.view_as(p) for c, p in zip(flat.split([p.numel() for p in params]), params, strict=True)
    ]


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_func_and_higher_backends_agree(float64, name, problem):
    func, batch = build(name, problem, vectorize="loop")
    higher, _ = build(name, problem, backend="higher")
    assert higher.backend == "higher" and not higher.use_vmap(batch)
    loss_func, grad_func = meta_gradient(func, batch)
    loss_higher, grad_higher = meta_gradient(higher, batch)
    assert loss_higher.item() == pytest.approx(loss_func.item(), rel=1e-6)
    assert relative_error(grad_higher, grad_func) < 1e-6
    support = batch.task(0).support
    fast_func, fast_higher = func.adapt(support, steps=3), higher.adapt(support, steps=3)
    for k in fast_func:
        assert torch.allclose(fast_higher[k], fast_func[k], rtol=1e-6, atol=1e-10), k
    eval_func = func.evaluate_batch(batch, [0, 1, 3])
    eval_higher = higher.evaluate_batch(batch, [0, 1, 3])
    assert torch.allclose(eval_higher["loss"], eval_func["loss"], rtol=1e-6)


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_loop_and_vmap_agree(float64, name, problem):
    loop, batch = build(name, problem, vectorize="loop")
    vmap, _ = build(name, problem, vectorize="vmap")
    assert vmap.use_vmap(batch) and not loop.use_vmap(batch)
    loss_loop, grad_loop = meta_gradient(loop, batch)
    loss_vmap, grad_vmap = meta_gradient(vmap, batch)
    assert loss_vmap.item() == pytest.approx(loss_loop.item(), rel=1e-9)
    assert relative_error(grad_vmap, grad_loop) < 1e-9
    eval_loop, eval_vmap = loop.evaluate_batch(batch, [2]), vmap.evaluate_batch(batch, [2])
    assert torch.allclose(eval_loop["loss"], eval_vmap["loss"], rtol=1e-9)


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_same_seed_same_numbers(name, problem):
    runs = []
    for _ in range(2):
        learner, batch = build(name, problem, seed=3)
        learner.float()
        batch = batch.to(torch.float32)
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
        for _ in range(2):
            optimizer.zero_grad()
            learner(batch).loss.backward()
            optimizer.step()
        runs.append(torch.cat([p.detach().flatten() for p in learner.parameters()]))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("backend", ["func", "higher"])
@pytest.mark.parametrize("name", ALL)
def test_to_device(device, name, backend):
    learner, batch = build(name, "mlp", backend=backend)
    learner = learner.float().to(device)
    batch = batch.to(device=device, dtype=torch.float32)
    out = learner(batch)
    out.loss.backward()
    assert out.loss.device.type == device.type
    for p in learner.parameters():
        assert p.device.type == device.type
        assert p.grad is not None and p.grad.device.type == device.type
    fast = learner.adapt(batch.task(0).support, steps=2)
    assert all(v.device.type == device.type for v in fast.values())


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_state_dict_round_trip(float64, name, problem):
    learner, batch = build(name, problem, seed=0)
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.05)
    learner(batch).loss.backward()
    optimizer.step()
    learner.set_epoch(2)
    clone, _ = build(name, problem, seed=1)  # different initial values
    clone.load_state_dict(learner.state_dict())
    assert clone.state_dict().keys() == learner.state_dict().keys()
    loss, grad = meta_gradient(learner, batch)
    loss_clone, grad_clone = meta_gradient(clone, batch)
    assert loss_clone.item() == loss.item()
    assert torch.equal(grad_clone, grad)
    copied = copy.deepcopy(learner)
    assert meta_gradient(copied, batch)[0].item() == loss.item()


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_adapt_predict_and_evaluate(float64, name, problem):
    learner, batch = build(name, problem)
    support, query = batch.task(0).support, batch.task(0).query
    with torch.no_grad():
        fast = learner.adapt(support, steps=2)
    assert set(fast) == {n for n, _ in learner.model.named_parameters()}
    assert not any(v.requires_grad for v in fast.values())
    assert learner.predict(fast, query.x, 2).shape[0] == query.x.shape[0]
    result = learner.evaluate_batch(batch, [0, 1, 4])
    assert result["loss"].shape == (batch.num_tasks, 3)
    assert torch.isfinite(result["loss"]).all()
    before = [p.detach().clone() for p in learner.parameters()]
    ml.evaluate(learner, ml.tasks.Sine(5, 10) if problem == "mlp" else _Fixed(batch), 4, [0, 1])
    assert all(torch.equal(a, p) for a, p in zip(before, learner.parameters(), strict=True))


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
    return {"cls": cls, "args": args}


@pytest.mark.parametrize("name", ALL)
def test_higher_backend_refuses_vmap(name):
    from learner_cases import tiny_mlp

    with pytest.raises(ValueError, match="backend='higher'"):
        LEARNERS[name][0](
            tiny_mlp(), torch.nn.functional.mse_loss, backend="higher", vectorize="vmap"
        )


def test_every_learner_is_exported():
    for name in ("MAML", "FOMAML", "ANIL", "MetaSGD", "Reptile", "MAMLPlusPlus", "Pretrain"):
        assert issubclass(getattr(ml, name), ml.Learner)
        assert name in ml.__all__
