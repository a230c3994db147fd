"""The "write a new algorithm" example (examples/new_algorithm.py) is correct and runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from learner_cases import meta_gradient, regression_batch, relative_error, tiny_mlp

import metalearn as ml


@pytest.fixture(scope="module")
def example(load_example):
    return load_example("new_algorithm")


def make(example, seed=0, **kw):
    torch.manual_seed(seed)
    return example.ProximalMAML(tiny_mlp(), F.mse_loss, 0.3, 2, **kw).double()


def test_meta_gradient_matches_finite_differences(example, float64):
    learner, batch = make(example, lam=0.7), regression_batch()
    _, gradient = meta_gradient(learner, batch)
    params = list(learner.parameters())
    direction = torch.randn(gradient.shape, generator=torch.Generator().manual_seed(0))
    eps = 1e-6

    def shifted(scale: float) -> float:
        with torch.no_grad():
            offset = 0
            for p in params:
                p.add_(scale * direction[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
            value = learner(batch).loss.item()
            offset = 0
            for p in params:
                p.sub_(scale * direction[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        return value

    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    assert (gradient @ direction).item() == pytest.approx(numeric, rel=1e-5)


def test_zero_lam_is_maml_and_lam_matters(example, float64):
    batch = regression_batch()
    torch.manual_seed(0)
    maml = ml.MAML(tiny_mlp(), F.mse_loss, 0.3, 2).double()
    _, reference = meta_gradient(maml, batch)
    assert relative_error(meta_gradient(make(example, lam=0.0), batch)[1], reference) < 1e-12
    assert relative_error(meta_gradient(make(example, lam=2.0), batch)[1], reference) > 1e-3


def test_backends_and_vmap_agree(example, float64):
    batch = regression_batch()
    _, loop = meta_gradient(make(example, vectorize="loop"), batch)
    _, vmap = meta_gradient(make(example, vectorize="vmap"), batch)
    _, higher = meta_gradient(make(example, backend="higher"), batch)
    assert relative_error(vmap, loop) < 1e-10
    assert relative_error(higher, loop) < 1e-6


def test_bad_lam(example):
    with pytest.raises(ValueError, match="lam"):
        example.ProximalMAML(tiny_mlp(), F.mse_loss, 0.1, lam=-1.0)


def test_example_script_runs(example, capsys):
    result = example.main(["--iterations", "3", "--test-tasks", "10"])
    assert result.per_task["loss"].shape == (10, 3)
    assert "ProximalMAML" in capsys.readouterr().out
