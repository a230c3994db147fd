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
    rate = learner.step_sizes()["weight"]
    assert rate.grad.item() == pytest.approx(expected["alpha"], rel=1e-12)


def test_step_sizes_are_a_dict_of_parameter_shaped_rates():
    model = ml.models.MLP([1, 4, 3])
    learner = ml.MetaSGD(model, F.mse_loss, 0.02)
    rates = learner.step_sizes()
    assert list(rates) == [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        assert rates[name].shape == p.shape
        assert torch.all(rates[name] == 0.02)
        assert rates[name] is learner.inner_lrs[name.replace(".", "__")]
    learner_params = {id(p) for p in learner.parameters()}
    assert all(id(r) in learner_params for r in rates.values())
    assert set(learner.state_dict()) >= {"inner_lrs.head__weight", "inner_lrs.body__0__bias"}


def test_only_adapted_parameters_get_rates():
    learner = ml.MetaSGD(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.02, adapt="head")
    assert sorted(learner.step_sizes()) == ["head.bias", "head.weight"]


def test_rates_change_the_adaptation():
    torch.manual_seed(0)
    learner = ml.MetaSGD(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.02)
    support = ml.tasks.Sine(5, 5).sample(1).task(0).support
    before = learner.adapt(support, 1)["head.weight"].detach().clone()
    with torch.no_grad():
        learner.inner_lrs["head__weight"].mul_(3)
    after = learner.adapt(support, 1)["head.weight"].detach()
    start = learner.model.head.weight.detach()
    torch.testing.assert_close(after - start, 3 * (before - start))
