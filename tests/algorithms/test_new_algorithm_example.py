"""The "write a new algorithm" example (examples/new_algorithm.py) is correct and runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learner_cases import meta_gradient, regression_batch, relative_error, tiny_mlp

import metalearn as ml
from metalearn import testing


@pytest.fixture(scope="module")
def example(load_example):
    return load_example("new_algorithm")


def make(example, seed=0, **kw):
    torch.manual_seed(seed)
    return example.ProximalMAML(tiny_mlp(), F.mse_loss, 0.3, 2, **kw).double()


def factory(example, **fixed):
    """``make_learner(**options)`` for metalearn.testing, as a user would write it."""
    return lambda **options: make(example, **fixed, **options)


def test_meta_gradient_matches_finite_differences(example):
    testing.check_meta_gradient(factory(example, lam=0.7), regression_batch())


def test_zero_lam_is_maml_and_lam_matters(example, float64):
    batch = regression_batch()
    torch.manual_seed(0)
    maml = ml.MAML(tiny_mlp(), F.mse_loss, 0.3, 2).double()
    _, reference = meta_gradient(maml, batch)
    assert relative_error(meta_gradient(make(example, lam=0.0), batch)[1], reference) < 1e-12
    assert relative_error(meta_gradient(make(example, lam=2.0), batch)[1], reference) > 1e-3


def test_backends_and_vmap_agree(example):
    batch = regression_batch()
    testing.check_loop_matches_vmap(factory(example, lam=0.7), batch, rtol=1e-10)
    testing.check_backends_agree(factory(example, lam=0.7), batch)


def test_bad_lam(example):
    with pytest.raises(ValueError, match="lam"):
        example.ProximalMAML(tiny_mlp(), F.mse_loss, 0.1, lam=-1.0)


def test_example_script_runs(example, capsys):
    result = example.main(["--iterations", "3", "--test-tasks", "10"])
    assert result.per_task["loss"].shape == (10, 3)
    assert "ProximalMAML" in capsys.readouterr().out
