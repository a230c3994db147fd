"""CAVIA: the context is per-task state (zero for every task, no parameter), the only thing
that adapts; the network is meta-learned; the context's inner step against finite differences;
FiLMConv4 as the image model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learner_cases import classification_batch, meta_gradient, regression_batch
from torch import nn

import metalearn as ml
from metalearn import testing


def make_cavia(context_size: int = 3, **options) -> ml.CAVIA:
    torch.manual_seed(0)
    model = ml.models.MLP([1 + context_size, 8, 8, 1], activation=nn.Tanh)
    return ml.CAVIA(model, F.mse_loss, 0.5, 2, context_size=context_size, **options).double()


def test_context_is_per_task_state_not_a_parameter(float64):
    learner = make_cavia()
    batch = regression_batch(tasks=2)
    names = {n for n, _ in learner.named_parameters()}
    assert names == {"model." + n for n, _ in learner.model.named_parameters()}
    assert not any("context" in k for k in learner.state_dict())
    first = learner.adapt(batch.task(0).support)
    second = learner.adapt(batch.task(1).support)
    assert first["context"].shape == (3,) and first["context"].abs().sum() > 0
    assert not torch.allclose(first["context"], second["context"])  # each task its own
    # Reset for every task: zero before any step, whatever was adapted before.
    assert torch.equal(learner.adapt(batch.task(1).support, steps=0)["context"], torch.zeros(3))
    # Only the context adapts; the network's weights are phi.
    for name, value in learner.params().items():
        torch.testing.assert_close(first[name], value, rtol=0, atol=0)
    # A training step changes the network, never a stored context.
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    learner(batch).loss.backward()
    opt.step()
    assert torch.equal(learner.task_state(batch.task(0).support)["context"], torch.zeros(3))


def test_every_network_parameter_gets_a_meta_gradient(float64):
    learner = make_cavia()
    _, grads = testing.meta_gradient(learner, regression_batch())
    assert set(grads) == {n for n, _ in learner.named_parameters()}
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_context_step_is_the_support_gradient_by_finite_differences(float64):
    learner = make_cavia()
    support = regression_batch().task(0).support
    params = learner.params()
    eps = 1e-6

    def support_loss(context: torch.Tensor) -> float:
        return learner.objective({**params, "context": context}, support).item()

    numeric = torch.zeros(3)
    for i in range(3):
        step = torch.zeros(3)
        step[i] = eps
        numeric[i] = (support_loss(step) - support_loss(-step)) / (2 * eps)
    fast = learner.adapt(support, steps=1)
    torch.testing.assert_close(fast["context"], -0.5 * numeric, rtol=1e-7, atol=1e-10)


def test_context_is_concatenated_to_the_input(float64):
    learner = make_cavia()
    x, context = torch.randn(4, 1), torch.randn(3)
    expected = learner.model(torch.cat([x, context.expand(4, 3)], dim=-1))
    got = learner.predict({**learner.params(), "context": context}, x)
    torch.testing.assert_close(got, expected)
    # Without a context: the zero context, the meta-learned starting point.
    zero = learner.model(torch.cat([x, torch.zeros(4, 3)], dim=-1))
    torch.testing.assert_close(learner.predict(learner.params(), x), zero)


def test_meta_gradient_is_exact_to_second_and_first_order_is_not(float64):
    batch = regression_batch()
    testing.check_meta_gradient(make_cavia, batch)
    with pytest.raises(AssertionError, match="finite differences"):
        testing.check_meta_gradient(lambda **kw: make_cavia(first_order=True, **kw), batch)


def test_film_conv4_takes_the_context(float64):
    torch.manual_seed(0)
    net = ml.models.FiLMConv4(1, 3, hidden=4, image_size=16, context_size=2).double()
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(net(x), net(x, torch.zeros(2)))
    assert not torch.allclose(net(x), net(x, torch.ones(2)))
    with pytest.raises(ValueError, match=r"context must have shape \(2,\)"):
        net(x, torch.zeros(3))
    with pytest.raises(ValueError, match="film_block"):
        ml.models.FiLMConv4(1, 3, hidden=4, image_size=16, film_block=5)
    learner = ml.CAVIA(net, F.cross_entropy, 1.0, 1, context_size=2)
    batch = classification_batch()
    loss, gradient = meta_gradient(learner, batch)
    assert torch.isfinite(loss) and gradient.abs().sum() > 0
    assert learner.adapt(batch.task(0).support)["context"].abs().sum() > 0
    with pytest.raises(ValueError, match="context_size=3 but the model takes a context of 2"):
        ml.CAVIA(net, F.cross_entropy, 1.0, context_size=3)


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match="context_size"):
        ml.CAVIA(ml.models.MLP([2, 4, 1]), F.mse_loss, 1.0, context_size=0)
    with pytest.raises(TypeError, match="context_size"):
        ml.CAVIA(ml.models.MLP([2, 4, 1]), F.mse_loss, 1.0)
    narrow = ml.CAVIA(ml.models.MLP([1, 4, 1]), F.mse_loss, 1.0, context_size=5)
    with pytest.raises(ValueError, match="must take 6"):
        narrow(ml.tasks.Sine(5, 5).sample(2))


def test_learns_sine_with_a_context_only():
    torch.manual_seed(0)
    learner = ml.CAVIA(ml.models.MLP([1 + 4, 40, 40, 1]), F.mse_loss, 1.0, 1, context_size=4)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    tasks = ml.tasks.Sine(10, 10)
    g = torch.Generator().manual_seed(0)
    test = tasks.sample(50, generator=torch.Generator().manual_seed(1))
    before = learner.evaluate_batch(test, [1])["loss"].mean()
    for _ in range(150):
        learner(tasks.sample(10, generator=g)).loss.backward()
        opt.step()
        opt.zero_grad()
    after = learner.evaluate_batch(test, [0, 1])["loss"].mean(0)
    assert after[1] < 0.7 * before and after[1] < after[0]  # adapting the context helps
