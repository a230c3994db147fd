from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.datasets import ImageClasses
from metalearn.tasks import FewShot, TaskSampler


def coded_dataset(classes: int = 8, per_class: int = 20, sizes=None) -> ImageClasses:
    """Image (class c, index i) is a 4x4 grayscale image filled with c * 25 + i (unique ids)."""
    sizes = sizes or [per_class] * classes
    data, labels = [], []
    for c, n in enumerate(sizes):
        for i in range(n):
            data.append(np.full((4, 4), c * 25 + i, dtype=np.uint8))
            labels.append(c)
    return ImageClasses.from_labels(np.stack(data), labels)


def ids(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 0, 0, 0] * 255).round().long()


def test_shapes_dtypes_and_labels():
    tasks = FewShot(coded_dataset(), n_way=5, k_shot=2, k_query=3)
    assert isinstance(tasks, TaskSampler)
    b = tasks.sample(4, generator=torch.Generator().manual_seed(0))
    assert b.support.x.shape == (4, 10, 1, 4, 4) and b.query.x.shape == (4, 15, 1, 4, 4)
    assert b.support.x.dtype == torch.float32
    assert b.support.y.dtype == torch.int64 and b.query.y.dtype == torch.int64
    assert b.support.y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert b.query.y[0].tolist() == [j for j in range(5) for _ in range(3)]
    assert b.info["classes"].shape == (4, 5)


def test_labels_map_to_the_recorded_classes_and_images_are_distinct():
    tasks = FewShot(coded_dataset(), n_way=5, k_shot=2, k_query=3)
    b = tasks.sample(16, generator=torch.Generator().manual_seed(1))
    for t in range(16):
        classes = b.info["classes"][t]
        assert len(set(classes.tolist())) == 5
        s, q = ids(b.support.x[t]), ids(b.query.x[t])
        assert torch.equal(s // 25, classes[b.support.y[t]])  # image class == label's class
        assert torch.equal(q // 25, classes[b.query.y[t]])
        everything = torch.cat([s, q]).tolist()
        assert len(set(everything)) == len(everything)  # support and query never share images


def test_label_assignment_is_fresh_per_task():
    tasks = FewShot(coded_dataset(classes=5), n_way=5, k_shot=1, k_query=1)
    b = tasks.sample(50, generator=torch.Generator().manual_seed(2))
    # With all 5 classes in every task only the labels can differ: class 0 gets every label.
    label_of_class0 = (b.info["classes"] == 0).int().argmax(dim=1)
    assert len(set(label_of_class0.tolist())) == 5


def test_seeded_and_sensitive_to_the_seed():
    tasks = FewShot(coded_dataset(), n_way=3, k_shot=1, k_query=2)
    a = tasks.sample(3, generator=torch.Generator().manual_seed(7))
    b = tasks.sample(3, generator=torch.Generator().manual_seed(7))
    c = tasks.sample(3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.support.x, b.support.x) and torch.equal(a.query.x, b.query.x)
    assert not torch.equal(a.query.x, c.query.x)


def test_uneven_classes_never_index_past_their_end():
    tasks = FewShot(coded_dataset(sizes=[3, 20, 3, 20, 3]), n_way=5, k_shot=1, k_query=2)
    b = tasks.sample(30, generator=torch.Generator().manual_seed(3))
    image_ids = torch.cat([ids(b.support.x), ids(b.query.x)], dim=1)
    sizes = torch.tensor([3, 20, 3, 20, 3])
    assert (image_ids % 25 < sizes[image_ids // 25]).all()
    assert (image_ids % 25 >= 3).any()  # the large classes are used beyond the small size


def test_bad_arguments_name_themselves():
    ds = coded_dataset(classes=4, per_class=5)
    with pytest.raises(ValueError, match=r"n_way=5.*\(4\)"):
        FewShot(ds, n_way=5, k_shot=1, k_query=1)
    with pytest.raises(ValueError, match=r"k_shot \+ k_query = 2 \+ 4 = 6.*5 images"):
        FewShot(ds, n_way=2, k_shot=2, k_query=4)
    with pytest.raises(ValueError, match="k_shot"):
        FewShot(ds, n_way=2, k_shot=0, k_query=1)
    with pytest.raises(TypeError, match="n_way"):
        FewShot(ds, n_way=2.0, k_shot=1, k_query=1)
    with pytest.raises(TypeError, match="num_classes"):
        FewShot(object(), n_way=2, k_shot=1, k_query=1)
    with pytest.raises(ValueError, match="num_tasks"):
        FewShot(ds, n_way=2, k_shot=1, k_query=1).sample(0)
    with pytest.raises(ValueError, match="class '2'"):
        FewShot(coded_dataset(sizes=[5, 5, 2]), n_way=2, k_shot=1, k_query=2)


def test_augmentation_hook_sees_each_task_grouped_by_class():
    seen = []

    def flip(images, generator):
        seen.append(tuple(images.shape))
        return images.flip(-1) + 1

    ds = coded_dataset()
    plain = FewShot(ds, n_way=3, k_shot=1, k_query=2)
    aug = FewShot(ds, n_way=3, k_shot=1, k_query=2, augment=flip)
    a = plain.sample(2, generator=torch.Generator().manual_seed(4))
    b = aug.sample(2, generator=torch.Generator().manual_seed(4))
    assert seen == [(3, 3, 1, 4, 4)] * 2
    assert torch.equal(b.support.x, a.support.x.flip(-1) + 1)
    assert torch.equal(b.query.x, a.query.x.flip(-1) + 1)
    bad = FewShot(ds, n_way=3, k_shot=1, k_query=2, augment=lambda x, g: x[:1])
    with pytest.raises(ValueError, match="augment"):
        bad.sample(1)


def test_rotated_classes_are_sampled_rotated():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (6, 5, 5), dtype=np.uint8)
    ds = ImageClasses.from_labels(data, [0, 0, 0, 1, 1, 1], rotations=(0, 90))
    tasks = FewShot(ds, n_way=4, k_shot=1, k_query=2)
    b = tasks.sample(5, generator=torch.Generator().manual_seed(0))
    originals = torch.cat([ds.images(0), ds.images(2)])
    assert ds.class_names == ["0/rot000", "0/rot090", "1/rot000", "1/rot090"]
    for t in range(5):
        for j, c in enumerate(b.info["classes"][t].tolist()):
            x = b.support.x[t, j]
            base = torch.rot90(x, -1, dims=(-2, -1)) if c % 2 else x
            assert any(torch.equal(base, o) for o in originals)


def test_mirrored_classes_are_reflected_then_rotated():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (4, 5, 5), dtype=np.uint8)
    ds = ImageClasses.from_labels(
        data, [0, 0, 1, 1], ["a", "b"], rotations=(0, 90), groups=["g", "h"], mirror=True
    )
    assert ds.num_classes == 8
    assert ds.class_names[:4] == ["a/rot000", "a/rot090", "a/mirror/rot000", "a/mirror/rot090"]
    assert ds.class_groups[4:] == ["h/rot000", "h/rot090", "h/mirror/rot000", "h/mirror/rot090"]
    for base in (0, 1):
        x = ds.images(4 * base)
        assert torch.equal(x, torch.from_numpy(data[2 * base : 2 * base + 2, None]) / 255)
        assert torch.equal(ds.images(4 * base + 1), torch.rot90(x, 1, dims=(-2, -1)))
        assert torch.equal(ds.images(4 * base + 2), x.flip(-1))
        assert torch.equal(ds.images(4 * base + 3), torch.rot90(x.flip(-1), 1, dims=(-2, -1)))
    # One gather of mixed classes transforms each image by its own class.
    both = ds.gather(torch.tensor([3, 0, 6]), torch.tensor([[1], [0], [1]]))
    for row, (c, i) in enumerate([(3, 1), (0, 0), (6, 1)]):
        assert torch.equal(both[row, 0], ds.images(c, [i])[0])
    plain = ImageClasses.from_labels(data, [0, 0, 1, 1], ["a", "b"], mirror=True)
    assert plain.class_names == ["a", "a/mirror", "b", "b/mirror"]
    with pytest.raises(TypeError, match="mirror"):
        ImageClasses.from_labels(data, [0, 0, 1, 1], mirror="yes")


def test_evaluate_uses_a_fixed_task_set():
    torch.manual_seed(0)
    tasks = FewShot(coded_dataset(classes=6, per_class=6), n_way=3, k_shot=1, k_query=2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    maml = ml.MAML(model, F.cross_entropy, inner_lr=0.1, inner_steps=1)
    first = ml.evaluate(maml, tasks, num_tasks=6, steps=[0, 1], batch_size=4)
    again = ml.evaluate(maml, tasks, num_tasks=6, steps=[0, 1], batch_size=6)
    assert first.per_task["accuracy"].shape == (6, 2)
    assert torch.allclose(first.per_task["loss"], again.per_task["loss"], atol=1e-6)
    different = ml.evaluate(maml, tasks, num_tasks=6, steps=[0, 1], seed=1)
    assert not torch.allclose(first.per_task["loss"], different.per_task["loss"])


def test_within_group_tasks_draw_every_class_from_one_group():
    ds = coded_dataset(classes=9)
    groups = ["a", "a", "a", "b", "b", "b", "b", "c", "c"]
    with pytest.warns(UserWarning, match=r"c \(2\)"):
        tasks = FewShot(ds, n_way=3, k_shot=1, k_query=2, groups=groups)
    assert tasks.groups == ["a", "b"]
    batch = tasks.sample(400, generator=torch.Generator().manual_seed(0))
    classes = batch.info["classes"]
    seen = {"a": 0, "b": 0}
    for row in classes.tolist():
        members = {groups[c] for c in row}
        assert len(members) == 1 and len(set(row)) == 3
        seen[members.pop()] += 1
    assert 150 < seen["a"] < 250  # the group is picked uniformly (200 expected)
    # Images still come from the class each label stands for.
    support_ids = ids(batch.support.x).reshape(400, 3)
    assert torch.equal(support_ids // 25, classes)
    again = tasks.sample(400, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.support.x, batch.support.x)


def test_group_errors_name_the_fix():
    ds = coded_dataset(classes=4)
    with pytest.raises(ValueError, match="lower n_way"):
        FewShot(ds, n_way=3, k_shot=1, k_query=1, groups=["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="each of the 4 classes"):
        FewShot(ds, n_way=2, k_shot=1, k_query=1, groups=["a", "a", "b"])
    with pytest.raises(ValueError, match="each of the 4 classes"):
        FewShot(ds, n_way=2, k_shot=1, k_query=1, groups="aabb")


class CountingReads:
    """A dataset that logs every ``gather`` (the images a task sampler reads)."""

    def __init__(self, dataset, log):
        self.dataset, self.log = dataset, log
        self.num_classes, self.class_sizes = dataset.num_classes, dataset.class_sizes

    def gather(self, classes, indices):
        self.log.append(("read", len(classes)))
        return self.dataset.gather(classes, indices)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"augment": ml.tasks.RandomAffine(degrees=15, translate=0.2)},
        {"groups": ["a"] * 4 + ["b"] * 4},
    ],
    ids=["plain", "augmented", "within-group"],
)
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10])
def test_chunks_are_the_batch_sample_draws(options, chunk_size):
    tasks = FewShot(coded_dataset(), n_way=3, k_shot=2, k_query=3, **options)
    g_whole, g_chunks = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    whole = tasks.sample(7, g_whole)
    chunks = list(tasks.sample_chunks(7, chunk_size, g_chunks))
    assert [c.num_tasks for c in chunks] == [
        min(chunk_size, 7 - s) for s in range(0, 7, chunk_size)
    ]
    joined = ml.tasks.TaskBatch.concat(chunks)
    for a, b in [(joined.support, whole.support), (joined.query, whole.query)]:
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert torch.equal(joined.info["classes"], whole.info["classes"])
    assert torch.equal(g_chunks.get_state(), g_whole.get_state())  # the next batch is the same


def test_chunks_read_their_images_only_when_reached():
    log = []
    tasks = FewShot(CountingReads(coded_dataset(), log), n_way=3, k_shot=1, k_query=2)
    chunks = tasks.sample_chunks(5, 2, torch.Generator().manual_seed(0))
    assert log == []  # the tasks are drawn, no image is read yet
    for chunk in chunks:
        log.append(("got", chunk.num_tasks))
    # each chunk reads its support and its query images (n_way rows per task) just before
    assert log == [("read", 6), ("read", 6), ("got", 2)] * 2 + [
        ("read", 3),
        ("read", 3),
        ("got", 1),
    ]
    with pytest.raises(ValueError, match="chunk_size"):
        tasks.sample_chunks(5, 0)
