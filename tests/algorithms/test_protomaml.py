"""ProtoMAML: the prototype head by hand, ProtoNet's prediction at step 0, gradients through the
prototypes into the body, evaluation from the prototype head, and clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learner_cases import mlp_classification_batch
from torch import nn

import metalearn as ml
from metalearn import testing
from metalearn.tasks import Split


def make(**options) -> ml.ProtoMAML:
    torch.manual_seed(0)
    model = ml.models.MLP([4, 6, 5, 3], activation=nn.Tanh)
    options.setdefault("inner_steps", 2)
    steps = options.pop("inner_steps")
    return ml.ProtoMAML(model, F.cross_entropy, 0.1, steps, **options).double()


def prototypes(learner: ml.ProtoMAML, split: Split) -> torch.Tensor:
    embeddings = learner.model.body(split.x)
    return torch.stack([embeddings[split.y == k].mean(0) for k in range(3)])


def test_head_at_step_zero_is_the_prototype_formula(float64):
    learner = make()
    support = mlp_classification_batch().task(0).support
    fast = learner.adapt(support, steps=0)
    c = prototypes(learner, support)
    torch.testing.assert_close(fast["head.weight"], 2 * c)
    torch.testing.assert_close(fast["head.bias"], -(c**2).sum(-1))
    later = learner.adapt(support, steps=2)
    assert not torch.allclose(later["head.weight"], 2 * c)  # then it adapts


def test_step_zero_predicts_as_protonet(float64):
    learner = make()
    protonet = ml.ProtoNet(learner.model, embedding="body")
    task = mlp_classification_batch().task(1)
    ours = learner.predict(learner.adapt(task.support, steps=0), task.query.x)
    theirs = protonet.predict(protonet.adapt(task.support), task.query.x)
    # 2 c.f - ||c||^2 = -||f - c||^2 + ||f||^2: a constant per row, the same argmax.
    shift = ours - theirs
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
    batch = mlp_classification_batch()
    ours = learner.evaluate_batch(batch, [0])["accuracy"]
    torch.testing.assert_close(ours, protonet.evaluate_batch(batch, [0])["accuracy"])


def test_gradient_flows_through_the_prototypes_into_the_body(float64):
    batch = mlp_classification_batch()
    learner = make(inner_steps=0)
    _, grads = testing.meta_gradient(learner, batch)
    # By hand: the query loss of the prototype head, without stopping gradients.
    phi = learner.model
    losses = []
    for task in batch:
        c = prototypes(learner, task.support)
        logits = F.linear(phi.body(task.query.x), 2 * c, -(c**2).sum(-1))
        losses.append(F.cross_entropy(logits, task.query.y))
    names = [n for n, _ in phi.body.named_parameters()]
    expected = torch.autograd.grad(torch.stack(losses).mean(), list(phi.body.parameters()))
    for name, value in zip(names, expected, strict=True):
        torch.testing.assert_close(grads["model.body." + name], value)
    # The head itself is overwritten per task: no gradient.
    assert not grads["model.head.weight"].any() and not grads["model.head.bias"].any()
    # First order keeps the path through the prototype initialisation.
    testing.check_meta_gradient(lambda **kw: make(inner_steps=0, first_order=True, **kw), batch)
    _, first = testing.meta_gradient(make(first_order=True), batch)
    assert all(first[f"model.body.{n}"].abs().sum() > 0 for n in names)


def test_head_only_adaptation_and_exact_meta_gradient(float64):
    learner = make(adapt="head")
    support = mlp_classification_batch().task(0).support
    fast = learner.adapt(support)
    for name, value in learner.params().items():
        if name.startswith("body."):
            torch.testing.assert_close(fast[name], value, rtol=0, atol=0)
    testing.check_meta_gradient(lambda **kw: make(adapt="head", **kw), mlp_classification_batch())


def test_bad_inputs_are_named(float64):
    model = ml.models.MLP([4, 6, 2])
    learner = ml.ProtoMAML(model, F.cross_entropy, 0.1)
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match="3 classes but head='head' has out_features=2"):
        learner.adapt(Split(x, torch.arange(3).repeat(2)))
    with pytest.raises(TypeError, match="integer class labels"):
        learner.adapt(Split(x, torch.zeros(6)))
    three = ml.ProtoMAML(ml.models.MLP([4, 6, 3]), F.cross_entropy, 0.1)
    with pytest.raises(ValueError, match="no support example of class 1"):
        three.adapt(Split(x, torch.tensor([0, 0, 2, 2, 0, 2])))
    with pytest.raises(ValueError, match="nn.Linear"):
        ml.ProtoMAML(model, F.cross_entropy, 0.1, head="body")
    with pytest.raises(ValueError, match="embedding='neck'"):
        ml.ProtoMAML(model, F.cross_entropy, 0.1, embedding="neck")

    class Extra(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(4, 3), nn.Linear(3, 2)
            self.scale = nn.Parameter(torch.ones(()))

    with pytest.raises(ValueError, match=r"ignore parameters \['scale'\]"):
        ml.ProtoMAML(Extra(), F.cross_entropy, 0.1)


def test_exported():
    assert ml.ProtoMAML is ml.algorithms.ProtoMAML and "ProtoMAML" in ml.__all__
    assert ml.CAVIA is ml.algorithms.CAVIA and "CAVIA" in ml.__all__
