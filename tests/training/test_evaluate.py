import pytest
import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.training.evaluate import mean_ci95


def test_mean_ci95_normal_interval():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, ci = mean_ci95(values)
    assert mean == pytest.approx(2.5)
    assert ci == pytest.approx(1.96 * values.std().item() / 2)


def test_evaluate_is_fixed_by_seed_not_batch_size():
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.01)
    sampler = ml.tasks.Sine(5, 20)
    a = ml.evaluate(maml, sampler, num_tasks=30, steps=[0, 1, 3], seed=1, batch_size=7)
    b = ml.evaluate(maml, sampler, num_tasks=30, steps=[0, 1, 3], seed=1, batch_size=30)
    c = ml.evaluate(maml, sampler, num_tasks=30, steps=[0, 1, 3], seed=2)
    torch.testing.assert_close(a.per_task["loss"], b.per_task["loss"])
    assert not torch.allclose(a.per_task["loss"], c.per_task["loss"])
    assert a.per_task["loss"].shape == (30, 3)
    assert "± " in a.table() and a.num_tasks == 30


def test_evaluate_matches_manual_adaptation():
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.05)
    sampler = ml.tasks.Sine(5, 20)
    result = ml.evaluate(maml, sampler, num_tasks=3, steps=[0, 2], seed=4)
    from metalearn.training.evaluate import task_seed

    task = sampler.sample(1, generator=torch.Generator().manual_seed(task_seed(4, 1))).task(0)
    fast = maml.adapt(task.support, steps=2)
    expected = F.mse_loss(maml.predict(fast, task.query.x), task.query.y).item()
    assert result.per_task["loss"][1, 1].item() == pytest.approx(expected, rel=1e-5)
    assert result.summary("loss", 0)[0] == pytest.approx(
        result.per_task["loss"][:, 0].mean().item()
    )


def test_evaluate_bad_arguments():
    maml = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.05)
    with pytest.raises(ValueError, match="num_tasks"):
        ml.evaluate(maml, ml.tasks.Sine(5, 5), num_tasks=0)
    with pytest.raises(ValueError, match="steps"):
        ml.evaluate(maml, ml.tasks.Sine(5, 5), num_tasks=2, steps=[-1])
    result = ml.evaluate(maml, ml.tasks.Sine(5, 5), num_tasks=2, steps=1)
    with pytest.raises(KeyError, match="steps=5"):
        result.summary("loss", 5)
    with pytest.raises(KeyError, match="accuracy"):
        result.summary("accuracy")


def test_meta_training_reduces_post_adaptation_loss():
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, 0.01)
    test = ml.tasks.Sine(10, 50)
    before = ml.evaluate(maml, test, num_tasks=100, steps=1).summary()[0]
    opt = torch.optim.Adam(maml.parameters(), 1e-3)
    ml.train(maml, ml.tasks.Sine(10, 10), opt, 300, 25, progress=False)
    after = ml.evaluate(maml, test, num_tasks=100, steps=1).summary()[0]
    assert after < 0.75 * before
