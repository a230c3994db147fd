import math

import pytest
import torch

from metalearn.tasks import Sine


def test_shapes_ranges_and_targets():
    tasks = Sine(k_shot=10, k_query=7)
    b = tasks.sample(25, generator=torch.Generator().manual_seed(0))
    assert b.support.x.shape == (25, 10, 1) and b.query.y.shape == (25, 7, 1)
    amp, phase = b.info["amplitude"], b.info["phase"]
    assert amp.min() >= 0.1 and amp.max() <= 5.0
    assert phase.min() >= 0 and phase.max() <= math.pi
    assert b.support.x.abs().max() <= 5.0
    expected = amp.view(-1, 1, 1) * torch.sin(b.query.x - phase.view(-1, 1, 1))
    torch.testing.assert_close(b.query.y, expected)


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    tasks = Sine(5, 5)
    a = tasks.sample(4, generator=torch.Generator().manual_seed(3))
    b = tasks.sample(4, generator=torch.Generator().manual_seed(3))
    c = tasks.sample(4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.support.x, b.support.x) and torch.equal(a.query.y, b.query.y)
    assert not torch.equal(a.support.x, c.support.x)


def test_query_grid_is_evenly_spaced():
    b = Sine(10, 100, query_grid=True).sample(3)
    grid = torch.linspace(-5, 5, 100)
    for t in range(3):
        torch.testing.assert_close(b.query.x[t, :, 0], grid)


def test_custom_ranges():
    b = Sine(3, 3, amplitude=(1.0, 1.0), phase=(0.0, 0.0), x_range=(0.0, 1.0)).sample(2)
    torch.testing.assert_close(b.support.y, torch.sin(b.support.x))
    assert b.support.x.min() >= 0 and b.support.x.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k_shot": 0, "k_query": 5}, ValueError, "k_shot must be >= 1"),
        ({"k_shot": 5, "k_query": -1}, ValueError, "k_query must be >= 1"),
        ({"k_shot": 2.5, "k_query": 5}, TypeError, "k_shot must be an int"),
        ({"k_shot": 5, "k_query": 5, "amplitude": (5.0, 0.1)}, ValueError, "amplitude"),
        ({"k_shot": 5, "k_query": 5, "x_range": "wide"}, TypeError, "x_range"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        Sine(**kwargs)


def test_bad_num_tasks():
    with pytest.raises(ValueError, match="num_tasks"):
        Sine(5, 5).sample(0)
