"""UnicornMAML: the shared-row head by hand, the first step as a dot-product prototype classifier,
the row's meta-gradient as the sum over the rows it was copied to, label-permutation invariance,
the zeroing trick, and clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learner_cases import mlp_classification_batch
from torch import nn

import metalearn as ml
from metalearn import testing


def make(**options) -> ml.UnicornMAML:
    torch.manual_seed(0)
    model = ml.models.MLP([4, 6, 5, 3], activation=nn.Tanh)
    steps = options.pop("inner_steps", 2)
    learner = ml.UnicornMAML(model, F.cross_entropy, 0.3, steps, **options).double()
    if learner.head_init == "learned":  # a start away from zero, so that the row matters
        with torch.no_grad():
            learner.head_weight.copy_(torch.linspace(-1, 1, 5))
            learner.head_bias.fill_(0.5)
    return learner


def test_every_task_starts_from_the_shared_row(float64):
    learner = make()
    support = mlp_classification_batch().task(0).support
    fast = learner.adapt(support, steps=0)
    torch.testing.assert_close(fast["head.weight"], learner.head_weight.expand(3, 5))
    torch.testing.assert_close(fast["head.bias"], learner.head_bias.expand(3))
    # The model's own head is never used.
    with torch.no_grad():
        learner.model.head.weight.normal_()
    torch.testing.assert_close(learner.adapt(support, steps=1), make().adapt(support, steps=1))


def test_first_step_moves_the_head_only_to_a_prototype_classifier(float64):
    learner = make()
    support = mlp_classification_batch().task(1).support
    fast = learner.adapt(support, steps=1)
    for name, value in learner.model.body.named_parameters():
        torch.testing.assert_close(fast["body." + name], value)  # equal logits: no body gradient
    # By hand: W_k = w + alpha/n (sum of class k's embeddings - 1/N sum of all), likewise b.
    f, y, n = learner.model.body(support.x), support.y, support.x.shape[0]
    onehot = F.one_hot(y, 3).double()
    expected = learner.head_weight + 0.3 / n * (onehot - 1 / 3).T @ f
    torch.testing.assert_close(fast["head.weight"], expected)
    torch.testing.assert_close(
        fast["head.bias"], learner.head_bias + 0.3 / n * (onehot - 1 / 3).sum(0)
    )


def test_row_gradient_is_the_sum_over_the_rows_it_starts(float64):
    # MAML with a head whose rows all equal the shared row has the same meta-loss and the same
    # body gradient; its head rows' gradients sum to the shared row's.
    batch = mlp_classification_batch()
    unicorn = make()
    _, ours = testing.meta_gradient(unicorn, batch)
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([4, 6, 5, 3], activation=nn.Tanh), F.cross_entropy, 0.3, 2)
    maml = maml.double()
    with torch.no_grad():
        maml.model.head.weight.copy_(unicorn.head_weight.expand(3, 5))
        maml.model.head.bias.copy_(unicorn.head_bias.expand(3))
    _, theirs = testing.meta_gradient(maml, batch)
    torch.testing.assert_close(ours["head_weight"], theirs["model.head.weight"].sum(0))
    torch.testing.assert_close(ours["head_bias"], theirs["model.head.bias"].sum(0))
    for name in (n for n in theirs if n.startswith("model.body.")):
        torch.testing.assert_close(ours[name], theirs[name])
    assert not ours["model.head.weight"].any() and not ours["model.head.bias"].any()


def test_invariant_to_a_permutation_of_the_labels(float64):
    learner = make()
    batch = mlp_classification_batch()
    permuted = ml.tasks.TaskBatch.from_tensors(
        batch.support.x, (batch.support.y + 1) % 3, batch.query.x, (batch.query.y + 1) % 3
    )
    loss, grads = testing.meta_gradient(learner, batch)
    loss_p, grads_p = testing.meta_gradient(learner, permuted)
    torch.testing.assert_close(loss, loss_p)
    for name, value in grads.items():
        torch.testing.assert_close(value, grads_p[name])
    # Plain MAML's learned rows are not: the same change of labels changes its meta-loss.
    maml = ml.MAML(learner.model, F.cross_entropy, 0.3, 2)
    assert not torch.allclose(maml(batch).loss, maml(permuted).loss)


def test_zeroing_trick_keeps_a_zero_start_that_is_not_trained(float64):
    learner = make(head_init="zero")
    assert "head_weight" not in dict(learner.named_parameters())
    assert "head_weight" in learner.state_dict() and not learner.head_weight.any()
    fast = learner.adapt(mlp_classification_batch().task(0).support, steps=0)
    assert not fast["head.weight"].any() and not fast["head.bias"].any()
    testing.check_meta_gradient(make, mlp_classification_batch())
    testing.check_meta_gradient(
        lambda **kw: make(head_init="zero", **kw), mlp_classification_batch()
    )


def test_head_adapts_even_when_adapt_leaves_it_out(float64):
    learner = make(adapt="body.0")
    assert learner.adapt_names == ["body.0.weight", "body.0.bias", "head.weight", "head.bias"]


def test_head_without_bias():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(4, 5), nn.Tanh()))
    model.add_module("head", nn.Linear(5, 3, bias=False))
    learner = ml.UnicornMAML(model, F.cross_entropy, 0.3, 2)
    assert learner.head_bias is None
    learner(mlp_classification_batch(dtype=torch.float32)).loss.backward()
    assert learner.head_weight.grad is not None


def test_clear_errors():
    model = ml.models.MLP([4, 5, 3])
    with pytest.raises(ValueError, match="head='out' must name the model's final nn.Linear"):
        ml.UnicornMAML(model, F.cross_entropy, 0.3, head="out")
    with pytest.raises(ValueError, match="head_init must be one of"):
        ml.UnicornMAML(model, F.cross_entropy, 0.3, head_init="random")


def test_the_shared_row_gets_no_meta_gradient_under_cross_entropy():
    """Every class's row starts at w, so w adds the same w . h to every logit at every inner
    step (the rows' differences and the body's updates do not depend on it), and softmax
    cross-entropy ignores a common shift: the meta-gradient of the shared row and bias is zero
    up to rounding, while the body's is not."""
    torch.manual_seed(0)
    learner = ml.UnicornMAML(ml.models.MLP([8, 16, 5]), F.cross_entropy, inner_lr=0.4,
                             inner_steps=2).double()  # fmt: skip
    with torch.no_grad():
        learner.head_weight.normal_()
        learner.head_bias.fill_(0.3)
    batch = ml.tasks.TaskBatch.from_tensors(
        torch.randn(3, 5, 8, dtype=torch.float64), torch.arange(5).repeat(3, 1),
        torch.randn(3, 10, 8, dtype=torch.float64),
        torch.arange(5).repeat_interleave(2).repeat(3, 1),
    )  # fmt: skip
    learner(batch).loss.backward()
    body = max(p.grad.abs().max() for n, p in learner.named_parameters()
               if p.grad is not None and not n.startswith("head_"))  # fmt: skip
    assert body > 1e-3
    assert learner.head_weight.grad.abs().max() < 1e-12 * body
    assert learner.head_bias.grad.abs() < 1e-12 * body
