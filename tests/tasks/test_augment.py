from __future__ import annotations

import numpy as np
import pytest
import torch

import metalearn as ml
from metalearn.tasks import AugmentSupport, FewShot, RandomAffine, TaskSampler


def dataset(classes: int = 8, per_class: int = 6) -> ml.datasets.ImageClasses:
    """Class c, image i: a random smooth 16x16 image (4x4 blocks, distinct per image)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (classes * per_class, 4, 4), dtype=np.uint8)
    data = np.kron(coarse, np.ones((4, 4), np.uint8))
    return ml.datasets.ImageClasses.from_labels(data, np.repeat(np.arange(classes), per_class))


def test_random_affine_without_distortion_is_the_identity():
    images = torch.rand(3, 4, 1, 12, 12)
    same = RandomAffine(degrees=0, scale=0, translate=0)(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, images, atol=1e-5, rtol=0)


def test_random_affine_is_seeded_and_distorts_each_image_its_own_way():
    images = torch.rand(2, 3, 1, 12, 12)
    aug = RandomAffine(degrees=15, scale=0.1, translate=0.1)
    a = aug(images, torch.Generator().manual_seed(1))
    b = aug(images, torch.Generator().manual_seed(1))
    c = aug(images, torch.Generator().manual_seed(2))
    assert a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    one = images[0, 0].expand(2, 3, 1, 12, 12)  # one image six times: six distortions
    out = aug(one, torch.Generator().manual_seed(3)).reshape(6, -1)
    assert torch.cdist(out, out).triu(1)[torch.ones(6, 6).triu(1).bool()].min() > 0


def test_random_affine_shift_moves_a_pixel():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0
    # translate=0.5 allows shifts of up to half the side; the bright pixel must move or smear.
    out = RandomAffine(degrees=0, scale=0, translate=0.5)(image, torch.Generator().manual_seed(0))
    assert out[0, 0, 4, 4] < 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"degrees": -1}, "degrees"), ({"scale": 1.0}, "scale"), ({"translate": True}, "translate")],
)
def test_random_affine_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomAffine(**kwargs)


def test_augment_support_keeps_the_tasks_and_adds_labelled_copies():
    plain = FewShot(dataset(), n_way=4, k_shot=1, k_query=2)
    tasks = AugmentSupport(plain, RandomAffine(degrees=10, translate=0.1), copies=3)
    assert isinstance(tasks, TaskSampler)
    base = plain.sample(5, torch.Generator().manual_seed(7))
    batch = tasks.sample(5, torch.Generator().manual_seed(7))
    # The same tasks as the plain sampler draws with that generator: query and originals.
    assert torch.equal(batch.query.x, base.query.x) and torch.equal(batch.query.y, base.query.y)
    assert torch.equal(batch.info["classes"], base.info["classes"])
    assert batch.support.x.shape == (5, 16, 1, 16, 16)
    assert torch.equal(batch.support.x[:, :4], base.support.x)
    # Copy j of example e sits at 4 * (1 + j) + e with e's label, and differs from it.
    for j in range(3):
        rows = slice(4 * (1 + j), 4 * (2 + j))
        assert torch.equal(batch.support.y[:, rows], base.support.y)
        assert not torch.equal(batch.support.x[:, rows], base.support.x)
        # ... but is closer to its own original than to the other classes' originals.
        d = torch.cdist(batch.support.x[:, rows].flatten(2), base.support.x.flatten(2))
        assert torch.equal(d.argmin(-1), torch.arange(4).expand(5, 4))
    again = tasks.sample(5, torch.Generator().manual_seed(7))
    assert torch.equal(again.support.x, batch.support.x)


def test_augment_support_feeds_evaluate_with_identical_query_sets():
    model = ml.models.Conv4(1, 4, hidden=8, image_size=16)
    maml = ml.MAML(model, torch.nn.functional.cross_entropy, inner_lr=0.1)
    plain = FewShot(dataset(), n_way=4, k_shot=1, k_query=2)
    tasks = AugmentSupport(plain, RandomAffine(), copies=2)
    result = ml.evaluate(maml, tasks, num_tasks=4, steps=[0, 1])
    before = ml.evaluate(maml, plain, num_tasks=4, steps=[0])
    # Step 0 does not look at the support set (BatchNorm uses the query's statistics).
    torch.testing.assert_close(result.per_task["loss"][:, 0], before.per_task["loss"][:, 0])


def test_augment_support_errors_name_the_fix():
    plain = FewShot(dataset(), n_way=4, k_shot=1, k_query=2)
    with pytest.raises(ValueError, match="copies must be an int >= 1"):
        AugmentSupport(plain, RandomAffine(), copies=0)
    with pytest.raises(TypeError, match="augment must be callable"):
        AugmentSupport(plain, "affine", copies=2)
    with pytest.raises(TypeError, match="sampler must have sample"):
        AugmentSupport([1, 2], RandomAffine(), copies=2)
    bad = AugmentSupport(plain, lambda x, g: x[:1], copies=2)
    with pytest.raises(ValueError, match="augment must return a tensor of its input's shape"):
        bad.sample(2, torch.Generator().manual_seed(0))
