"""One integer-argument check everywhere: a non-int is a TypeError, a too-small int a ValueError,
both naming the argument (``metalearn._checks.check_int``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.datasets import ImageClasses
from metalearn.training.launch import spawn
from metalearn.training.task_stream import TaskStream


def images() -> ImageClasses:
    return ImageClasses.from_labels(np.zeros((8, 4, 4), np.uint8), [0, 0, 1, 1, 2, 2, 3, 3])


def maml() -> ml.MAML:
    return ml.MAML(ml.models.MLP([1, 4, 1]), F.mse_loss, inner_lr=0.01)


def trainer(**changes):
    learner = maml()
    options = {"iterations": 1, "meta_batch_size": 1, **changes}
    return ml.Trainer(
        learner, ml.tasks.Sine(1, 1), torch.optim.SGD(learner.parameters()), **options
    )


CALLS = {
    "n_way": lambda v: ml.tasks.FewShot(images(), n_way=v, k_shot=1, k_query=1),
    "num_tasks": lambda v: ml.tasks.FewShot(images(), n_way=2, k_shot=1, k_query=1).sample(v),
    "k_shot": lambda v: ml.tasks.Sine(v, 5),
    "sizes[1]": lambda v: ml.models.MLP([1, v, 1]),
    "n_classes": lambda v: ml.models.Conv4(1, v, image_size=28),
    "iterations": lambda v: trainer(iterations=v),
    "meta_batch_size": lambda v: TaskStream(ml.tasks.Sine(1, 1), v),
    "world_size": lambda v: spawn(print, v),
    "batch_size": lambda v: ml.evaluate(maml(), ml.tasks.Sine(1, 1), num_tasks=1, batch_size=v),
}


@pytest.mark.parametrize("name", CALLS)
def test_integer_arguments_fail_alike(name):
    with pytest.raises(TypeError, match=rf"{name.replace('[', '.')}.? must be an int, got str"):
        CALLS[name]("5")
    with pytest.raises(ValueError, match=rf"{name.replace('[', '.')}.? must be >= \d+, got 0"):
        CALLS[name](0)
