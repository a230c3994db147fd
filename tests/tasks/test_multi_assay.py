"""MultiAssay: a wide label matrix with missing values as one task per assay (no RDKit needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalearn.tasks import MultiAssay

ASSAYS = ["a", "b", "c", "d", "e"]
SPLIT = {"train": ["a", "b", "c"], "val": ["d"], "test": ["e"]}


def wide_table(rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features = row number (so rows can be traced), labels ~20% active, ~30% missing."""
    rng = np.random.default_rng(seed)
    x = np.stack([np.arange(rows), rng.normal(size=rows)], axis=1)
    labels = (rng.random((rows, len(ASSAYS))) < 0.2).astype(float)
    labels[rng.random((rows, len(ASSAYS))) < 0.3] = np.nan
    return x, labels


def make(k_shot=3, k_query=4, **kw) -> tuple[MultiAssay, np.ndarray]:
    x, labels = wide_table()
    return MultiAssay(x, labels, ASSAYS, k_shot, k_query, kw.pop("split", SPLIT), **kw), labels


def test_support_has_k_per_class_and_labels_match_the_table():
    data, labels = make(k_shot=3, k_query=4)
    batch = data.train.sample(16, generator=torch.Generator().manual_seed(0))
    assert batch.support.x.shape == (16, 6, 2) and batch.query.x.shape == (16, 8, 2)
    for i in range(16):
        j = int(batch.info["assay"][i])
        assert data.assays[j] in SPLIT["train"]
        s_rows, q_rows = batch.info["support_rows"][i], batch.info["query_rows"][i]
        assert set(s_rows.tolist()).isdisjoint(q_rows.tolist())
        assert len(set(s_rows.tolist())) == 6
        # Label 1 is always the larger class value (active), 0 the smaller (inactive).
        np.testing.assert_array_equal(labels[s_rows.numpy(), j], batch.support.y[i].numpy())
        np.testing.assert_array_equal(labels[q_rows.numpy(), j], batch.query.y[i].numpy())
        assert batch.support.y[i].bincount().tolist() == [3, 3]
        assert torch.equal(batch.support.x[i, :, 0].long(), s_rows)  # features follow the rows


def test_all_other_labelled_compounds_form_the_query():
    data, labels = make(k_shot=2, k_query=None)
    batch = data.assay("e").sample(3, generator=torch.Generator().manual_seed(1))
    labelled = set(np.flatnonzero(~np.isnan(labels[:, 4])).tolist())
    for i in range(3):
        support = set(batch.info["support_rows"][i].tolist())
        query = batch.info["query_rows"][i].tolist()
        assert query == sorted(query)
        assert support.isdisjoint(query) and support | set(query) == labelled
        assert int(batch.query.y[i].sum()) == int(np.nansum(labels[query, 4]))


def test_same_generator_gives_same_tasks_and_splits_are_by_name():
    data, _ = make()
    a = data.test.sample(5, generator=torch.Generator().manual_seed(3))
    b = data.test.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.support.x, b.support.x) and torch.equal(a.query.y, b.query.y)
    assert data.split_assays == {"train": ("a", "b", "c"), "val": ("d",), "test": ("e",)}
    assert set(data.val.sample(4).info["assay"].tolist()) == {3}


def test_label_counts_and_pretraining_rows():
    data, labels = make()
    counts = data.label_counts()
    assert counts["b"] == {0.0: int((labels[:, 1] == 0).sum()), 1.0: int((labels[:, 1] == 1).sum())}
    x, y = data.rows(["a", "c"])
    either = ~np.isnan(labels[:, [0, 2]]).all(1)
    assert len(x) == either.sum()
    np.testing.assert_array_equal(y.numpy(), labels[either][:, [0, 2]])


def test_n_way_three_classes_keeps_sorted_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 3))
    labels = rng.integers(0, 3, size=(240, 2)).astype(float)
    data = MultiAssay(x, labels, ["p", "q"], 2, 2, {"train": ["p"], "test": ["q"]}, n_way=2)
    batch = data.train.sample(20, generator=torch.Generator().manual_seed(0))
    classes = batch.info["classes"]
    assert (classes[:, 0] < classes[:, 1]).all()  # a random pair of classes, kept in order
    for i in range(20):
        rows = batch.info["support_rows"][i].numpy()
        np.testing.assert_array_equal(labels[rows, 0], classes[i][batch.support.y[i]].numpy())


def test_k_query_none_across_assays_is_a_clear_error():
    data, _ = make(k_query=None)
    with pytest.raises(ValueError, match=r"data.assay\(name\)"):
        data.train.sample(10, generator=torch.Generator().manual_seed(0))


def test_small_assay_is_skipped_with_a_warning():
    x, labels = wide_table()
    labels[:, 4] = np.where(np.arange(len(labels)) < 3, 1.0, 0.0)  # 3 actives only
    with pytest.warns(UserWarning, match=r"skipped 1 assay .*'e' \(0: 297, 1: 3\)"):
        data = MultiAssay(x, labels, ASSAYS, 3, 4, SPLIT)
    assert "e" in data.skipped and len(data.test) == 0
    with pytest.raises(ValueError, match="no usable assay"):
        data.test.sample(1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": {"train": ["a"], "test": ["zz"]}}, r"not columns of labels: 'zz'"),
        ({"split": {"train": ["a"], "test": ["a"]}}, r"'a' is in split 'train' and in 'test'"),
        ({"split": ["a"]}, "split must be a dict"),
        ({"assays": ["a", "b"]}, "assays names 2 columns but labels has 5"),
        ({"k_shot": 0}, "k_shot must be >= 1"),
        ({"n_way": 3}, "n_way=3 but labels have only 2 classes"),
        ({"x": np.full((300, 2), np.nan)}, "x has NaN or infinite values in 300 rows"),
    ],
)
def test_bad_input_names_the_problem(change, message):
    x, labels = wide_table()
    args = {"x": x, "labels": labels, "assays": ASSAYS, "k_shot": 3, "k_query": 4}
    args.update({k: v for k, v in change.items() if k in args})
    options = {k: v for k, v in change.items() if k not in args}
    split = options.pop("split", SPLIT)
    with pytest.raises((ValueError, TypeError), match=message):
        MultiAssay(
            args["x"], args["labels"], args["assays"], args["k_shot"], args["k_query"], split,
            **options,
        )  # fmt: skip


def test_assays_in_no_split_are_named_in_a_warning():
    x, labels = wide_table()
    with pytest.warns(UserWarning, match=r"2 assays in no split: \['d', 'e'\]"):
        MultiAssay(x, labels, ASSAYS, 2, 2, {"train": ["a", "b", "c"]})
