"""metalearn.testing: each check passes on a correct learner and fails on a deliberately wrong one
(test_learners.py runs the checks over every built-in learner)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from learner_cases import regression_batch, tiny_mlp

import metalearn as ml
from metalearn import testing
from metalearn._functorch import under_functorch_transform


def maml(**options) -> ml.Learner:
    torch.manual_seed(0)
    return ml.MAML(tiny_mlp(), F.mse_loss, 0.3, 2, **options)


class DetachedMAML(ml.MAML):
    """Claims second order, but its inner loop drops the second-order terms."""

    def inner(self, params, support, steps, first_order, **kw):
        return super().inner(params, support, steps, True, **kw)


class VmapSensitive(ml.MAML):
    """Its task loss branches on running under vmap (as a Python branch on tensor state does)."""

    def task_loss(self, params, support, query):
        value, metrics = super().task_loss(params, support, query)
        return value * (1.001 if under_functorch_transform() else 1.0), metrics


class HigherDiffers(ml.MAML):
    """Steps differently on the higher backend."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.update = ml.updates.sgd(self.inner_lr * (1.01 if self.backend == "higher" else 1.0))


class ForgetsEpoch(ml.MAML):
    """A schedule read from set_epoch but never saved in the state_dict."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def task_loss(self, params, support, query):
        value, metrics = super().task_loss(params, support, query)
        return value * (1 + self.epoch), metrics


class SharedCounter(ml.MAML):
    """State shared between instances: the second run starts where the first stopped."""

    calls = 0

    def task_loss(self, params, support, query):
        SharedCounter.calls += 1
        value, metrics = super().task_loss(params, support, query)
        return value * (1 + 1e-3 * SharedCounter.calls), metrics


def factory(cls: type[ml.MAML]):
    def make(**options) -> ml.Learner:
        torch.manual_seed(0)
        return cls(tiny_mlp(), F.mse_loss, 0.3, 2, **options)

    return make


def test_checks_pass_on_maml():
    batch = regression_batch(tasks=2)
    testing.check_meta_gradient(maml, batch)
    testing.check_meta_gradient(maml, batch, directions="all")  # 46 coordinates
    testing.check_loop_matches_vmap(maml, batch)
    testing.check_backends_agree(maml, batch)
    testing.check_state_dict_round_trip(maml, batch)
    testing.check_deterministic(maml, batch.to(torch.float32))
    assert torch.get_default_dtype() == torch.float32  # restored


def test_meta_gradient_check_names_the_wrong_parameter():
    batch = regression_batch(tasks=2)
    with pytest.raises(AssertionError, match=r"parameter '.+'.*analytic .*numeric"):
        testing.check_meta_gradient(factory(DetachedMAML), batch)
    with pytest.raises(AssertionError, match=r"parameter '.+' entry \d+"):
        testing.check_meta_gradient(factory(DetachedMAML), batch, directions="all")
    # The same learner is right when it says it is first order: FOMAML is not an exact gradient.
    with pytest.raises(AssertionError):
        testing.check_meta_gradient(factory(ml.FOMAML), batch)


def test_loop_vmap_check_fails_on_a_vmap_sensitive_learner():
    with pytest.raises(AssertionError, match=r"meta-loss \(vmap vs loop\) differs"):
        testing.check_loop_matches_vmap(factory(VmapSensitive), regression_batch(tasks=2))


def test_backend_check_fails_when_higher_differs():
    with pytest.raises(AssertionError, match=r"\(higher vs func\) differs"):
        testing.check_backends_agree(factory(HigherDiffers), regression_batch(tasks=2))


def test_backend_check_names_the_missing_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "higher", None)
    with pytest.raises(ImportError, match=r"pip install 'metalearn\[higher\]'"):
        testing.check_backends_agree(maml, regression_batch(tasks=2))


def test_state_dict_check_fails_on_unsaved_state():
    with pytest.raises(AssertionError, match="not in state_dict"):
        testing.check_state_dict_round_trip(factory(ForgetsEpoch), regression_batch(tasks=2))


def test_determinism_check_fails_on_shared_state():
    with pytest.raises(
        AssertionError, match=r"different 'model\.(body|head)\..+'.*not deterministic"
    ):
        testing.check_deterministic(
            factory(SharedCounter), regression_batch(tasks=2).to(torch.float32)
        )


def test_bad_directions():
    with pytest.raises(ValueError, match="directions"):
        testing.check_meta_gradient(maml, regression_batch(tasks=2), directions=0)
