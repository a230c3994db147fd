"""MAML++: LSLR, MSL, per-step BatchNorm, derivative-order annealing, cosine annealing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learner_cases import build, meta_gradient, tiny_conv, tiny_mlp

import metalearn as ml
from metalearn.algorithms.mamlpp import multi_step_loss_weights


def test_multi_step_loss_schedule():
    start = multi_step_loss_weights(5, 0, 10)
    assert start == pytest.approx([0.2] * 5)
    middle = multi_step_loss_weights(5, 5, 10)
    assert middle == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.6])
    end = multi_step_loss_weights(5, 10, 10)
    assert end[:-1] == pytest.approx([0.006] * 4) and end[-1] == pytest.approx(1 - 4 * 0.006)
    for epoch in range(12):
        assert sum(multi_step_loss_weights(5, epoch, 10)) == pytest.approx(1.0)


def test_multi_step_loss_is_the_weighted_sum_of_per_step_query_losses(float64):
    learner, batch = build("MAMLPlusPlus", "mlp", per_step_bn=False)
    learner.set_epoch(1)
    weights = learner.loss_weights()
    assert weights is not None and len(weights) == 2
    expected = 0.0
    for task in batch:
        path = learner.inner(learner.params(), task.support, 2, False, trajectory=True)
        for k, w in enumerate(weights, start=1):
            expected += w * F.mse_loss(learner.predict(path[k], task.query.x, k), task.query.y)
    assert learner(batch).loss.item() == pytest.approx(expected.item() / batch.num_tasks)
    learner.set_epoch(3)  # msl_epochs=3: from here on the last step only
    assert learner.loss_weights() is None
    final = sum(
        F.mse_loss(learner.predict(learner.adapt(t.support), t.query.x), t.query.y) for t in batch
    )
    assert learner(batch).loss.item() == pytest.approx(final.item() / batch.num_tasks)


def test_derivative_order_annealing(float64):
    learner, batch = build("MAMLPlusPlus", "mlp", first_order_epochs=2, multi_step_loss=False)
    second, _ = build("MAML", "mlp")
    first, _ = build("FOMAML", "mlp")
    with torch.no_grad():  # MAML++ with its learned rates at their initial value is MAML
        assert all(torch.all(r == 0.3) for r in learner.update.rates.values())

    def model_grad(lrn):
        return meta_gradient(lrn, batch)[1][: sum(p.numel() for p in lrn.model.parameters())]

    assert learner.uses_first_order()
    torch.testing.assert_close(model_grad(learner), model_grad(first))
    learner.set_epoch(2)
    assert not learner.uses_first_order()
    torch.testing.assert_close(model_grad(learner), model_grad(second))


def test_learned_per_step_rates_are_used_per_step(float64):
    learner, batch = build("MAMLPlusPlus", "mlp", per_step_bn=False)
    with torch.no_grad():
        for rates in learner.update.rates.values():
            rates.copy_(torch.tensor([0.1, 0.5]))
    support = batch.task(0).support
    by_hand = learner.params()
    for rate in (0.1, 0.5):
        loss = F.mse_loss(learner.model_forward(by_hand, support.x), support.y)
        grads = torch.autograd.grad(loss, list(by_hand.values()))
        by_hand = {k: v - rate * g for (k, v), g in zip(by_hand.items(), grads, strict=True)}
    fast = learner.adapt(support)
    for k in fast:
        torch.testing.assert_close(fast[k], by_hand[k])
    # Evaluating longer than training reuses the last step's rate.
    fourth = learner.adapt(support, 4)
    third = learner.adapt(support, 3)
    g = torch.autograd.grad(
        F.mse_loss(learner.model_forward(third, support.x), support.y), third["head.bias"]
    )[0]
    torch.testing.assert_close(fourth["head.bias"], third["head.bias"] - 0.5 * g)
    learner(batch).loss.backward()
    assert all(r.grad is not None and torch.all(r.grad != 0) for r in learner.update.rates.values())


def test_per_step_batchnorm_sets(float64):
    learner, batch = build("MAMLPlusPlus", "conv")
    assert learner.per_step_bn and len(learner.bn_names) == 8
    assert not set(learner.bn_names) & set(learner.adapt_names)  # BN does not adapt
    table = learner.bn_per_step["body__0__1__weight"]
    assert table.shape == (1, 2)  # steps 1..inner_steps-1; step 0 is the model's own
    torch.testing.assert_close(table[0], learner.model.body[0][1].weight.detach())
    support, query = batch.task(0).support, batch.task(0).query
    fast = learner.adapt(support)
    before = learner.predict(fast, query.x, 2)
    one_step = learner.predict(fast, query.x, 1)
    with torch.no_grad():  # the last block's shift (a scale would be normalised away)
        learner.bn_per_step["body__3__1__bias"].add_(0.5)
    assert not torch.allclose(learner.predict(fast, query.x, 2), before)  # set 1 after 2 steps
    torch.testing.assert_close(learner.predict(fast, query.x, 1), one_step)  # set 0 after 1
    # Step 1's support loss uses set 1, so the adapted weights change too.
    assert not torch.allclose(learner.adapt(support)["head.weight"], fast["head.weight"])
    learner(batch).loss.backward()
    assert all(p.grad is not None for p in learner.bn_per_step.values())


def test_everything_switched_off_is_maml(float64):
    plain, batch = build(
        "MAMLPlusPlus", "conv", learn_step_sizes=False, multi_step_loss=False, per_step_bn=False
    )
    maml, _ = build("MAML", "conv")
    torch.testing.assert_close(meta_gradient(plain, batch)[1], meta_gradient(maml, batch)[1])
    assert list(plain.parameters()) == list(plain.model.parameters())


def test_cosine_annealing_scheduler():
    learner = ml.MAMLPlusPlus(tiny_mlp(), F.mse_loss, 0.1, per_step_bn=False)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    schedule = learner.scheduler(optimizer, total_epochs=4, min_lr=1e-5)
    rates = []
    for _ in range(4):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[-1] == pytest.approx(1e-5) and rates[0] < 1e-3
    off = ml.MAMLPlusPlus(tiny_mlp(), F.mse_loss, 0.1, per_step_bn=False, cosine_annealing=False)
    optimizer = torch.optim.Adam(off.parameters(), lr=1e-3)
    schedule = off.scheduler(optimizer, total_epochs=4)
    for _ in range(4):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == 1e-3


def test_epoch_is_saved_in_the_state_dict():
    learner = ml.MAMLPlusPlus(tiny_mlp(), F.mse_loss, 0.1, per_step_bn=False)
    learner.set_epoch(7)
    other = ml.MAMLPlusPlus(tiny_mlp(), F.mse_loss, 0.1, per_step_bn=False)
    other.load_state_dict(learner.state_dict())
    assert other.epoch == 7


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (tiny_mlp, {}, "per_step_bn=True but the model has no"),
        (
            lambda: torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.BatchNorm1d(2)),
            {},
            "convert_batchnorm",
        ),
        (tiny_conv, {"adapt": "body.0.1"}, "adapt selects BatchNorm parameters"),
        (tiny_mlp, {"per_step_bn": False, "inner_steps": 0}, "inner_steps"),
        (tiny_mlp, {"per_step_bn": False, "msl_epochs": 0}, "msl_epochs"),
        (tiny_mlp, {"per_step_bn": False, "first_order_epochs": -1}, "first_order_epochs"),
    ],
)
def test_bad_arguments(make, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ml.MAMLPlusPlus(make(), F.mse_loss, 0.1, **kwargs)
    learner = ml.MAMLPlusPlus(tiny_mlp(), F.mse_loss, 0.1, per_step_bn=False)
    with pytest.raises(ValueError, match="epoch"):
        learner.set_epoch(-1)
    with pytest.raises(ValueError, match="total_epochs"):
        learner.scheduler(torch.optim.SGD(learner.parameters(), lr=0.1), 0)


def test_trainer_drives_the_epoch_through_on_iteration():
    learner = ml.MAMLPlusPlus(
        ml.models.MLP([1, 8, 1]), F.mse_loss, 0.01, 2, per_step_bn=False, iterations_per_epoch=3
    )
    seen = []
    ml.train(
        learner, ml.tasks.Sine(5, 5), torch.optim.SGD(learner.parameters(), 1e-3), 7, 2,
        progress=False, callback=lambda i, m: seen.append(learner.epoch),
    )  # fmt: skip
    assert seen == [0, 0, 0, 1, 1, 1, 2]
