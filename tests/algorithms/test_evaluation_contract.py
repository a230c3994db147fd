"""What evaluate calls of a learner: an inner override that breaks the contract gets a clear error
naming the method and the fix, not a bare KeyError: 0."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from learner_cases import regression_batch, tiny_mlp

import metalearn as ml


class DropsKw(ml.MAML):
    def inner(self, params, support, steps, first_order):
        return super().inner(params, support, steps, first_order)


class IgnoresKw(ml.MAML):
    def inner(self, params, support, steps, first_order, **kw):
        return super().inner(params, support, steps, first_order)


class PassesKw(ml.MAML):
    def inner(self, params, support, steps, first_order, **kw):
        return super().inner(params, support, steps, first_order, **kw)


@pytest.mark.parametrize("vectorize", ["loop", "vmap"])
@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (DropsKw, r"DropsKw\.inner\(\.\.\., trajectory=True\).*unexpected keyword"),
        (IgnoresKw, r"IgnoresKw\.inner\(.*needs the list of 4 parameter dicts.*returned dict"),
    ],
)
def test_inner_that_breaks_the_contract_is_named(float64, vectorize, cls, message):
    learner = cls(tiny_mlp(), F.mse_loss, 0.1, 2, vectorize=vectorize)
    batch = regression_batch(tasks=2)
    learner(batch).loss.backward()  # training does not need the trajectory
    with pytest.raises(TypeError, match=message) as error:
        learner.evaluate_batch(batch, [0, 3])
    assert "pass it on to inner_loop(..., **kw)" in str(error.value)
    with pytest.raises(TypeError, match="override evaluate_batch"):
        ml.evaluate(learner, ml.tasks.Sine(5, 5), num_tasks=2, steps=[1])


def test_inner_that_passes_kw_on_evaluates(float64):
    learner = PassesKw(tiny_mlp(), F.mse_loss, 0.1, 2)
    reference = ml.MAML(tiny_mlp(), F.mse_loss, 0.1, 2)
    reference.load_state_dict(learner.state_dict())
    batch = regression_batch(tasks=2)
    assert learner.evaluate_batch(batch, [0, 3])["loss"].equal(
        reference.evaluate_batch(batch, [0, 3])["loss"]
    )
