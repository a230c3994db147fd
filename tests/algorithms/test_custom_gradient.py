"""custom_meta_gradient: a learner's own meta-gradient through loss.backward()."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.algorithms.base import task_metrics
from metalearn.algorithms.inner import checked_loss


class AnalyticFOMAML(ml.Learner):
    """First-order MAML written with its meta-gradient by hand: the query gradient at theta."""

    def task_loss(self, params, support, query):
        fast = self.inner(
            {k: v.detach() for k, v in params.items()}, support, self.inner_steps, True
        )

        def query_loss(p):
            return checked_loss(self.loss, self.predict(p, query.x), query.y)

        grads, value = torch.func.grad_and_value(query_loss)(fast)
        metrics = task_metrics(self.predict(fast, query.x), query.y, value)
        return ml.custom_meta_gradient(value, params, grads), metrics


def grads_of(learner, batch):
    learner.zero_grad(set_to_none=True)
    out = learner(batch)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in learner.parameters()]


@pytest.mark.parametrize("vectorize", ["loop", "vmap"])
@pytest.mark.parametrize("per_task", [True, False])
def test_a_hand_written_meta_gradient_equals_the_built_in_one(vectorize, per_task):
    batch = ml.tasks.Sine(5, 5).sample(3, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = ml.models.MLP([1, 8, 8, 1])
    ours = AnalyticFOMAML(model, F.mse_loss, 0.05, 2, vectorize=vectorize)
    ours.per_task_gradients = per_task
    reference = ml.FOMAML(ml.models.MLP([1, 8, 8, 1]), F.mse_loss, 0.05, 2, vectorize=vectorize)
    reference.load_state_dict(ours.state_dict())
    loss, grads = grads_of(ours, batch)
    expected_loss, expected = grads_of(reference, batch)
    torch.testing.assert_close(loss, expected_loss)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def test_value_gradient_and_autograd_grad():
    w = torch.ones(3, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    given = torch.tensor([1.0, 2.0, 3.0])
    value = torch.tensor(0.25, requires_grad=True) * 2  # its own graph is ignored
    loss = ml.custom_meta_gradient(value, {"w": w, "b": b}, {"w": given})
    assert loss.item() == 0.5 and loss.requires_grad
    (gw,) = torch.autograd.grad(3 * loss, [w])
    torch.testing.assert_close(gw, 3 * given)
    loss = ml.custom_meta_gradient(value, {"w": w, "b": b}, {"w": given, "b": None})
    loss.backward()
    torch.testing.assert_close(w.grad, given)
    assert b.grad is None  # no gradient given: none delivered
    norm = torch.nn.utils.clip_grad_norm_([w], 1.0)
    assert norm.item() == pytest.approx(14**0.5) and w.grad.norm().item() == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="differentiated twice"):
        torch.autograd.grad(ml.custom_meta_gradient(value, {"w": w}, {"w": given}), [w],
                            create_graph=True)  # fmt: skip
    # Nothing to deliver: a plain detached value.
    assert not ml.custom_meta_gradient(value, {"w": w}, {}).requires_grad


def test_bad_arguments():
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        ml.custom_meta_gradient(torch.ones(2), {"w": w}, {"w": torch.ones(3)})
    with pytest.raises(ValueError, match="not in params"):
        ml.custom_meta_gradient(torch.tensor(1.0), {"w": w}, {"v": torch.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        ml.custom_meta_gradient(torch.tensor(1.0), {"w": w}, {"w": torch.ones(2)})
