"""ANIL: only the head adapts; the body is meta-learned through the outer loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learner_cases import build

import metalearn as ml


@pytest.mark.parametrize("backend", ["func", "higher"])
@pytest.mark.parametrize("problem", ["mlp", "conv"])
def test_inner_loop_leaves_the_body_untouched(float64, backend, problem):
    learner, batch = build("ANIL", problem, backend=backend)
    support = batch.task(0).support
    fast = learner.adapt(support, steps=3)
    for name, p in learner.model.named_parameters():
        if name.startswith("head."):
            assert not torch.equal(fast[name], p), name
        else:
            assert fast[name] is p, name  # the very tensor: no inner-loop step touched it
    path = learner.inner(learner.params(), support, 3, False, trajectory=True)
    assert all(step[name] is path[0][name] for step in path for name in path[0] if "body" in name)


def test_body_meta_gradient_matches_finite_differences(float64):
    learner, batch = build("ANIL", "conv", vectorize="loop")
    learner(batch).loss.backward()
    body = [p for n, p in learner.model.named_parameters() if not n.startswith("head.")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in body)
    direction = [
        torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(i))
        for i, p in enumerate(body)
    ]
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(body, direction, strict=True):
            p.add_(eps * d)
        plus = learner(batch).loss.item()
        for p, d in zip(body, direction, strict=True):
            p.sub_(2 * eps * d)
        minus = learner(batch).loss.item()
    analytic = sum((p.grad * d).sum() for p, d in zip(body, direction, strict=True)).item()
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)


def test_second_order_differs_from_first_order_in_the_body(float64):
    grads = []
    for first_order in (False, True):
        learner, batch = build("ANIL", "mlp", first_order=first_order)
        learner(batch).loss.backward()
        grads.append(learner.model.body[0].weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_head_selectors():
    model = ml.models.MLP([1, 4, 4, 1])
    assert ml.ANIL(model, F.mse_loss, 0.1).head_names == ["head.weight", "head.bias"]
    assert ml.ANIL(model, F.mse_loss, 0.1, head=["body.2", "head"]).head_names == [
        "body.2.weight",
        "body.2.bias",
        "head.weight",
        "head.bias",
    ]
    by_predicate = ml.ANIL(model, F.mse_loss, 0.1, head=lambda n: n.endswith("bias"))
    assert by_predicate.head_names == ["body.0.bias", "body.2.bias", "head.bias"]


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("classifier", "head='classifier' selects no parameter"),
        (None, "head must name"),
        (lambda n: True, "selects every parameter"),
    ],
)
def test_bad_heads_are_refused(head, message):
    with pytest.raises(ValueError, match=message):
        ml.ANIL(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.1, head=head)


def test_adapt_selector_is_available_to_every_learner():
    model = ml.models.MLP([1, 4, 1])
    for learner in (
        ml.MAML(model, F.mse_loss, 0.1, adapt="head"),
        ml.MetaSGD(model, F.mse_loss, 0.1, adapt="head"),
        ml.Reptile(model, F.mse_loss, 0.1, adapt="head"),
    ):
        assert learner.adapt_names == ["head.weight", "head.bias"]
