"""MAML / FOMAML / Pretrain on the one inner loop: gradients against independent computations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metalearn as ml
from metalearn.algorithms.inner import functional_forward, inner_loop
from metalearn.models import BatchNorm
from metalearn.tasks import Split, TaskBatch


def finite_difference_grad(learner, batch, eps=1e-6):
    """Central differences of the meta-loss with respect to every parameter."""
    grads = {}
    with torch.no_grad():
        for name, p in learner.named_parameters():
            g = torch.zeros_like(p)
            flat, gflat = p.view(-1), g.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                with torch.enable_grad():
                    up = learner(batch).loss.item()
                flat[i] = old - eps
                with torch.enable_grad():
                    down = learner(batch).loss.item()
                flat[i] = old
                gflat[i] = (up - down) / (2 * eps)
            grads[name] = g
    return grads


def autograd_grad(learner, batch):
    learner.zero_grad()
    learner(batch).loss.backward()
    return {n: p.grad.clone() for n, p in learner.named_parameters()}


def sine_batch(tasks=3, k=5, dtype=torch.float64, seed=0):
    return ml.tasks.Sine(k, k, dtype=dtype).sample(
        tasks, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("vectorize", ["loop", "vmap"])
@pytest.mark.parametrize("steps", [1, 2])
def test_maml_second_order_matches_finite_differences(float64, vectorize, steps):
    torch.manual_seed(0)
    maml = ml.MAML(
        ml.models.MLP([1, 6, 6, 1], nn.Tanh), F.mse_loss, 0.05, steps, vectorize=vectorize
    )
    batch = sine_batch()
    analytic, numeric = autograd_grad(maml, batch), finite_difference_grad(maml, batch)
    for name in analytic:
        torch.testing.assert_close(analytic[name], numeric[name], rtol=1e-5, atol=1e-7)


def test_maml_matches_closed_form_on_linear_regression(float64):
    torch.manual_seed(1)
    d, n, m, tasks, alpha = 3, 6, 4, 5, 0.1
    model = nn.Linear(d, 1, bias=False)
    maml = ml.MAML(model, F.mse_loss, inner_lr=alpha, inner_steps=1)
    batch = TaskBatch.from_tensors(
        torch.randn(tasks, n, d),
        torch.randn(tasks, n, 1),
        torch.randn(tasks, m, d),
        torch.randn(tasks, m, 1),
    )
    w = model.weight.detach().view(d, 1)
    expected = torch.zeros(d, 1)
    for t in range(tasks):
        xs, ys, xq, yq = batch.support.x[t], batch.support.y[t], batch.query.x[t], batch.query.y[t]
        a = torch.eye(d) - 2 * alpha / n * xs.T @ xs  # d theta / d w
        theta = a @ w + 2 * alpha / n * xs.T @ ys
        expected += a.T @ (2 / m * xq.T @ (xq @ theta - yq)) / tasks
    maml(batch).loss.backward()
    torch.testing.assert_close(model.weight.grad.view(d, 1), expected)


def test_fomaml_equals_query_gradient_at_adapted_parameters(float64):
    torch.manual_seed(2)
    fomaml = ml.FOMAML(ml.models.MLP([1, 8, 1]), F.mse_loss, inner_lr=0.1, inner_steps=2)
    batch = sine_batch(tasks=4)
    fomaml(batch).loss.backward()
    expected = {n: torch.zeros_like(p) for n, p in fomaml.named_parameters()}
    for task in batch:
        fast = fomaml.adapt(task.support)
        fast = {k: v.detach().requires_grad_() for k, v in fast.items()}
        loss = F.mse_loss(fomaml.predict(fast, task.query.x), task.query.y)
        for k, g in zip(fast, torch.autograd.grad(loss, list(fast.values())), strict=True):
            expected["model." + k] += g / batch.num_tasks
    for n, p in fomaml.named_parameters():
        torch.testing.assert_close(p.grad, expected[n])


def test_first_order_differs_from_second_order(float64):
    torch.manual_seed(3)
    model = ml.models.MLP([1, 8, 1], nn.Tanh)
    batch = sine_batch()
    g2 = autograd_grad(ml.MAML(model, F.mse_loss, 0.1), batch)
    g1 = autograd_grad(ml.FOMAML(model, F.mse_loss, 0.1), batch)
    assert not torch.allclose(g1["model.body.0.weight"], g2["model.body.0.weight"])


def test_loop_and_vmap_agree(float64):
    torch.manual_seed(4)
    model = ml.models.MLP([1, 16, 16, 1])
    batch = sine_batch(tasks=6)
    loop = autograd_grad(ml.MAML(model, F.mse_loss, 0.01, 3, vectorize="loop"), batch)
    vmap = autograd_grad(ml.MAML(model, F.mse_loss, 0.01, 3, vectorize="vmap"), batch)
    for name in loop:
        torch.testing.assert_close(loop[name], vmap[name], rtol=1e-10, atol=1e-12)


def tiny_conv(batchnorm):
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        batchnorm(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    )


def image_batch(tasks=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(3).repeat(tasks, 2)
    return TaskBatch.from_tensors(
        torch.randn(tasks, 6, 1, 4, 4, generator=g, dtype=dtype),
        labels,
        torch.randn(tasks, 6, 1, 4, 4, generator=g, dtype=dtype),
        labels,
    )


@pytest.mark.parametrize("vectorize", ["loop", "vmap"])
def test_batchnorm_weight_adapting_under_vmap_is_exact(float64, vectorize):
    # The known trap: vmap over second-order F.batch_norm gives a wrong meta-gradient when the
    # BN weight adapts. metalearn's BatchNorm (mean/var ops) must agree with finite differences.
    torch.manual_seed(6)
    maml = ml.MAML(tiny_conv(BatchNorm), F.cross_entropy, 0.5, 1, vectorize=vectorize)
    batch = image_batch()
    analytic, numeric = autograd_grad(maml, batch), finite_difference_grad(maml, batch)
    for name in analytic:
        torch.testing.assert_close(analytic[name], numeric[name], rtol=1e-5, atol=1e-7)


def test_torch_batchnorm_is_refused_under_vmap_and_looped_by_auto():
    maml = ml.MAML(tiny_conv(nn.BatchNorm2d), F.cross_entropy, 0.5, vectorize="vmap")
    with pytest.raises(ValueError, match="convert_batchnorm"):
        maml(image_batch(dtype=torch.float32))
    auto = ml.MAML(tiny_conv(nn.BatchNorm2d), F.cross_entropy, 0.5, vectorize="auto")
    assert auto.use_vmap(image_batch(dtype=torch.float32).to("cpu")) is False


def test_auto_vectorises_mlp_but_loops_conv_on_cpu():
    assert ml.MAML(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.1).use_vmap(
        sine_batch(dtype=torch.float32)
    )
    assert not ml.MAML(tiny_conv(BatchNorm), F.cross_entropy, 0.1).use_vmap(
        image_batch(dtype=torch.float32)
    )


def test_classification_metrics_report_accuracy():
    maml = ml.MAML(tiny_conv(BatchNorm), F.cross_entropy, 0.1)
    out = maml(image_batch(dtype=torch.float32))
    assert set(out.metrics) == {"loss", "accuracy"}
    assert 0.0 <= out.metrics["accuracy"].item() <= 1.0


def test_same_seed_same_numbers():
    def run():
        torch.manual_seed(0)
        maml = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, 0.01)
        opt = torch.optim.Adam(maml.parameters(), 1e-3)
        return ml.train(maml, ml.tasks.Sine(10, 10), opt, 5, 25, seed=3, progress=False)

    assert run() == run()


def test_adapt_and_predict():
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.1, inner_steps=1)
    task = sine_batch(tasks=1, dtype=torch.float32).task(0)
    fast = maml.adapt(task.support, steps=5)
    assert set(fast) == {n for n, _ in maml.model.named_parameters()}
    before = F.mse_loss(maml.model(task.support.x), task.support.y)
    after = F.mse_loss(maml.predict(fast, task.support.x), task.support.y)
    assert after < before
    assert fast["head.weight"].requires_grad  # differentiable with respect to phi
    with torch.no_grad():
        assert not maml.adapt(task.support, steps=2)["head.weight"].requires_grad
    with pytest.raises(ValueError, match="support.x has"):
        maml.adapt(Split(torch.zeros(3, 1), torch.zeros(2, 1)))


def test_adapt_selector_keeps_other_parameters_fixed():
    maml = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.1, adapt="head")
    task = sine_batch(tasks=1, dtype=torch.float32).task(0)
    fast = maml.adapt(task.support, steps=3)
    assert fast["body.0.weight"] is maml.model.body[0].weight
    assert not torch.equal(fast["head.weight"], maml.model.head.weight)
    with pytest.raises(ValueError, match="selects no parameter"):
        ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.1, adapt="nope")


def test_pretrain_trains_on_pooled_data_without_inner_loop(float64):
    torch.manual_seed(7)
    model = ml.models.MLP([1, 8, 1])
    base = ml.Pretrain(model, F.mse_loss, inner_lr=0.1)
    batch = sine_batch()
    base(batch).loss.backward()
    expected = torch.stack(
        [
            F.mse_loss(
                model(torch.cat([t.support.x, t.query.x])), torch.cat([t.support.y, t.query.y])
            )
            for t in batch
        ]
    ).mean()
    grads = torch.autograd.grad(expected, list(model.parameters()))
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inner_lr": -0.1}, ValueError, "inner_lr"),
        ({"inner_lr": float("nan")}, ValueError, "inner_lr"),
        ({"inner_lr": "fast"}, TypeError, "inner_lr"),
        ({"inner_steps": -1}, ValueError, "inner_steps"),
        ({"inner_steps": 1.5}, TypeError, "inner_steps"),
        ({"vectorize": "gpu"}, ValueError, "vectorize"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    args = {"inner_lr": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        ml.MAML(ml.models.MLP([1, 4, 1]), F.mse_loss, **args)


def test_bad_model_and_loss():
    with pytest.raises(TypeError, match="model"):
        ml.MAML(lambda x: x, F.mse_loss, 0.1)
    with pytest.raises(TypeError, match="loss"):
        ml.MAML(ml.models.MLP([1, 4, 1]), "mse", 0.1)


@pytest.mark.parametrize("vectorize", ["loop", "vmap"])
def test_non_scalar_loss_is_rejected(vectorize):
    maml = ml.MAML(ml.models.MLP([1, 4, 1]), lambda p, y: (p - y) ** 2, 0.1, vectorize=vectorize)
    with pytest.raises(ValueError, match="loss must return a scalar"):
        maml(sine_batch(dtype=torch.float32))


def test_learner_rejects_non_batches():
    with pytest.raises(TypeError, match="TaskBatch"):
        ml.MAML(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.1)((torch.zeros(1),))


def test_inner_loop_trajectory_and_zero_steps():
    net = ml.models.MLP([1, 4, 1])
    params = dict(net.named_parameters())
    support = Split(torch.randn(5, 1), torch.randn(5, 1))
    forward = functional_forward(net)

    def objective(p, split):
        return F.mse_loss(forward(p, split.x), split.y)

    sgd = ml.updates.sgd(0.1)
    path = inner_loop(objective, params, support, steps=3, update=sgd, trajectory=True)
    assert len(path) == 4 and path[0]["head.bias"] is params["head.bias"]
    last = inner_loop(objective, params, support, steps=3, update=sgd)
    torch.testing.assert_close(path[-1]["head.bias"], last["head.bias"])
    assert inner_loop(objective, params, support, steps=0, update=sgd) == params


def test_inner_objective_must_be_a_scalar():
    net = ml.models.MLP([1, 4, 1])
    support = Split(torch.randn(5, 1), torch.randn(5, 1))
    forward = functional_forward(net)
    with pytest.raises(ValueError, match="scalar tensor"):
        inner_loop(
            lambda p, s: (forward(p, s.x) - s.y) ** 2,
            dict(net.named_parameters()),
            support,
            steps=1,
            update=ml.updates.sgd(0.1),
        )


def test_learner_moves_with_to(device):
    maml = ml.MAML(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.1).to(device)
    batch = sine_batch(dtype=torch.float32).to(device)
    out = maml(batch)
    out.loss.backward()
    assert out.loss.device.type == device.type
    assert all(p.grad.device.type == device.type for p in maml.parameters())
