"""Meta-SGD: learned per-parameter inner learning rates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_maml_closed_form import closed_form, linear_tasks, one_weight

import metalearn as ml


@pytest.mark.parametrize("backend", ["func", "higher"])
def test_rates_and_weights_match_the_closed_form(backend):
    batch = linear_tasks()
    learner = ml.MetaSGD(one_weight(), F.mse_loss, 0.1, 1, backend=backend)
    learner(batch).loss.backward()
    expected = closed_form(0.7, 0.1, batch)
    assert learner.model.weight.grad.item() == pytest.approx(expected["maml"], rel=1e-12)
    rate = learner.update.named_rates()["weight"]
    assert rate.grad.item() == pytest.approx(expected["alpha"], rel=1e-12)


def test_rates_are_parameter_shaped_and_learner_parameters():
    model = ml.models.MLP([1, 4, 3])
    learner = ml.MetaSGD(model, F.mse_loss, 0.02)
    rates = learner.update.named_rates()
    assert list(rates) == [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        assert rates[name].shape == p.shape
        assert torch.all(rates[name] == 0.02)
        assert rates[name] is learner.update.rates[name.replace(".", "__")]
    learner_params = {id(p) for p in learner.parameters()}
    assert all(id(r) in learner_params for r in rates.values())
    assert set(learner.state_dict()) >= {"update.rates.head__weight", "update.rates.body__0__bias"}


def test_only_adapted_parameters_get_rates():
    learner = ml.MetaSGD(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.02, adapt="head")
    assert sorted(learner.update.named_rates()) == ["head.bias", "head.weight"]


def test_rates_change_the_adaptation():
    torch.manual_seed(0)
    learner = ml.MetaSGD(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.02)
    support = ml.tasks.Sine(5, 5).sample(1).task(0).support
    before = learner.adapt(support, 1)["head.weight"].detach().clone()
    with torch.no_grad():
        learner.update.rates["head__weight"].mul_(3)
    after = learner.adapt(support, 1)["head.weight"].detach()
    start = learner.model.head.weight.detach()
    torch.testing.assert_close(after - start, 3 * (before - start))


def test_checkpoints_from_before_update_rules_load():
    # Meta-SGD stored its rates as inner_lrs.*; they now live in the update rule.
    learner = ml.MetaSGD(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.02)
    old = {
        k.replace("update.rates.", "inner_lrs."): v + 1.0 for k, v in learner.state_dict().items()
    }
    assert "inner_lrs.head__weight" in old
    learner.load_state_dict(old)
    torch.testing.assert_close(learner.update.rates["head__weight"], old["inner_lrs.head__weight"])
