"""Grouped: few-shot tasks from a grouped table (arrays, CSV, DataFrame)."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.tasks import Grouped, GroupSampler


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def traceable_table(num_groups: int = 30, rows: int = 12, seed: int = 0):
    """Rows whose group and row number can be read back: x = [group, row, noise].

    The target is ``group * 100 + row``.
    """
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(num_groups), rows)
    row = np.arange(num_groups * rows)
    x = np.stack([groups, row, rng.normal(size=row.size)], axis=1).astype(np.float64)
    y = groups * 100.0 + row
    perm = rng.permutation(row.size)  # rows of a group need not be contiguous
    return x[perm], y[perm], groups[perm]


def raw(data: Grouped, x: torch.Tensor) -> torch.Tensor:
    return x.double() * data.feature_std.double() + data.feature_mean.double()


# -- tasks come from one group, support and query disjoint -----------------------------------
@pytest.mark.parametrize("standardize", [True, False])
def test_every_task_is_one_group_with_disjoint_support_and_query(standardize):
    x, y, groups = traceable_table()
    data = Grouped(x, y, groups, k_shot=5, k_query=4, standardize=standardize, dtype=torch.float64)
    for split in ("train", "val", "test"):
        batch = data.split(split).sample(40, generator=gen(1))
        assert batch.support.x.shape == (40, 5, 3) and batch.query.x.shape == (40, 4, 3)
        assert batch.support.y.shape == (40, 5, 1) and batch.query.y.shape == (40, 4, 1)
        sx, qx = raw(data, batch.support.x), raw(data, batch.query.x)
        sy = data.inverse_transform_target(batch.support.y)[..., 0]
        for t in range(40):
            group = data.group_ids[int(batch.info["group"][t])]
            assert group in data.split_groups[split]
            assert torch.allclose(sx[t, :, 0], torch.full((5,), float(group), dtype=torch.float64))
            assert torch.allclose(qx[t, :, 0], torch.full((4,), float(group), dtype=torch.float64))
            # the target still belongs to the row's features (rows were not mixed up)
            assert torch.allclose(sy[t], group * 100.0 + sx[t, :, 1], atol=1e-6)
            rows = torch.cat([sx[t, :, 1], qx[t, :, 1]]).round().long()
            assert len(set(rows.tolist())) == 9  # support and query rows are distinct
            info_rows = torch.cat([batch.info["support_rows"][t], batch.info["query_rows"][t]])
            assert torch.equal(torch.as_tensor(x[info_rows.numpy(), 1]).long(), rows)


def test_no_test_group_is_ever_sampled_in_meta_training():
    x, y, groups = traceable_table(num_groups=50)
    data = Grouped(x, y, groups, k_shot=3, k_query=3, seed=3)
    train, val, test = (set(data.split_groups[s]) for s in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and not (val & test)
    assert train | val | test == set(range(50))
    seen = set()
    g = gen(0)
    for _ in range(30):
        batch = data.train.sample(20, generator=g)
        seen |= set(raw(data, batch.support.x)[..., 0].round().long().flatten().tolist())
        seen |= set(raw(data, batch.query.x)[..., 0].round().long().flatten().tolist())
    assert seen <= train and not seen & (val | test)
    assert len(seen) == len(train)  # every training group gets used


def test_training_through_metalearn_train_never_sees_test_groups():
    x, y, groups = traceable_table(num_groups=20)
    data = Grouped(x, y, groups, k_shot=3, k_query=3, seed=0)
    seen: list[torch.Tensor] = []

    class Recording(GroupSampler):
        def sample(self, num_tasks, generator=None):
            batch = super().sample(num_tasks, generator)
            seen.append(raw(data, batch.support.x)[..., 0])
            return batch

    recording = Recording(data, "train", data.train._indices, [])
    maml = ml.MAML(ml.models.MLP([3, 8, 1]), F.mse_loss, inner_lr=0.01)
    opt = torch.optim.Adam(maml.parameters(), lr=1e-3)
    ml.train(maml, recording, opt, iterations=5, meta_batch_size=4, progress=False)
    ids = set(torch.cat(seen).round().long().flatten().tolist())
    assert ids and ids <= set(data.split_groups["train"])


# -- the split rule ---------------------------------------------------------------------------
def test_fraction_split_follows_the_documented_rule():
    ids = [f"cond-{i:02d}" for i in range(40)]
    groups = np.repeat(np.array(ids, dtype=object), 6)
    x = np.random.default_rng(0).normal(size=(groups.size, 2))
    data = Grouped(x, x[:, 0], groups, k_shot=3, k_query=3, seed=7)
    order = np.random.default_rng(7).permutation(40)
    expected = [sorted(ids)[i] for i in order]
    assert data.split_groups["train"] == tuple(expected[:28])
    assert data.split_groups["val"] == tuple(expected[28:34])
    assert data.split_groups["test"] == tuple(expected[34:])


@pytest.mark.parametrize(
    ("num_groups", "fractions", "counts"),
    [
        (2, (0.7, 0.15, 0.15), (1, 0, 1)),
        (3, (0.7, 0.15, 0.15), (1, 1, 1)),
        (10, (0.7, 0.15, 0.15), (6, 2, 2)),  # 1.5 rounds half up
        (20, (0.8, 0.0, 0.2), (16, 0, 4)),
        (5, (0.5, 0.0, 0.5), (2, 0, 3)),
    ],
)
def test_split_sizes(num_groups, fractions, counts):
    groups = np.repeat(np.arange(num_groups), 4)
    x = np.arange(groups.size, dtype=float)
    data = Grouped(x, x, groups, k_shot=2, k_query=2, split=fractions)
    got = tuple(len(data.split_groups[s]) for s in ("train", "val", "test"))
    assert got == counts


def test_split_seed_changes_the_split_and_is_reproducible():
    x, y, groups = traceable_table(num_groups=30)
    a = Grouped(x, y, groups, 3, 3, seed=0).split_groups
    b = Grouped(x, y, groups, 3, 3, seed=0).split_groups
    c = Grouped(x, y, groups, 3, 3, seed=1).split_groups
    assert a == b and a != c


def test_listed_split_is_used_as_given_and_unlisted_groups_are_warned_about():
    x, y, groups = traceable_table(num_groups=6)
    with pytest.warns(UserWarning, match=r"1 group of 6 are in no split.*5"):
        data = Grouped(x, y, groups, 3, 3, split={"train": [0, 1, 2], "test": [np.int64(4), 3]})
    assert data.split_groups == {"train": (0, 1, 2), "val": (), "test": (4, 3)}
    with pytest.raises(ValueError, match=r"split 'val'.*no groups"):
        data.val.sample(1)


def test_listed_split_errors():
    x, y, groups = traceable_table(num_groups=6)
    with pytest.raises(ValueError, match=r"split\['test'\] names groups that are not in the data"):
        Grouped(x, y, groups, 3, 3, split={"train": [0], "test": [9]})
    with pytest.raises(ValueError, match="group 1 is listed in split 'train' and in 'test'"):
        Grouped(x, y, groups, 3, 3, split={"train": [0, 1], "test": [1]})
    with pytest.raises(ValueError, match="unknown keys"):
        Grouped(x, y, groups, 3, 3, split={"train": [0], "validation": [1]})
    with pytest.raises(ValueError, match="at least one group for 'train'"):
        Grouped(x, y, groups, 3, 3, split={"test": [0]})
    with pytest.raises(ValueError, match="summing to 1"):
        Grouped(x, y, groups, 3, 3, split=(0.5, 0.2, 0.2))
    with pytest.raises(TypeError, match="split must be"):
        Grouped(x, y, groups, 3, 3, split=0.7)


# -- determinism ------------------------------------------------------------------------------
def test_same_generator_seed_gives_the_same_tasks():
    x, y, groups = traceable_table()
    data = Grouped(x, y, groups, 4, 4)
    a, b = data.train.sample(10, gen(5)), data.train.sample(10, gen(5))
    c = data.train.sample(10, gen(6))
    for u, v in ((a.support.x, b.support.x), (a.query.y, b.query.y)):
        assert torch.equal(u, v)
    assert not torch.equal(a.support.x, c.support.x)
    rebuilt = Grouped(x, y, groups, 4, 4).train.sample(10, gen(5))
    assert torch.equal(rebuilt.support.x, a.support.x)


def test_evaluate_on_the_test_split_is_deterministic():
    x, y, groups = traceable_table(num_groups=20)
    data = Grouped(x, y, groups, 4, 4)
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([3, 16, 1]), F.mse_loss, inner_lr=0.05)
    first = ml.evaluate(maml, data.test, num_tasks=30, steps=[0, 3], seed=2, batch_size=7)
    second = ml.evaluate(maml, data.test, num_tasks=30, steps=[0, 3], seed=2, batch_size=30)
    assert torch.allclose(first.per_task["loss"], second.per_task["loss"], atol=1e-6)
    other = ml.evaluate(maml, data.test, num_tasks=30, steps=[0, 3], seed=3)
    assert not torch.allclose(first.per_task["loss"], other.per_task["loss"])


# -- standardisation --------------------------------------------------------------------------
def test_standardisation_is_fitted_on_meta_train_rows_only():
    x, y, groups = traceable_table(num_groups=20)
    data = Grouped(x, y, groups, 3, 3, dtype=torch.float64)
    train = np.isin(groups, data.split_groups["train"])
    assert np.allclose(data.feature_mean.numpy(), x[train].mean(0))
    assert np.allclose(data.feature_std.numpy(), x[train].std(0))
    assert np.allclose(data.target_mean.numpy(), y[train].mean())
    assert np.allclose(data.target_std.numpy(), y[train].std())
    assert not np.allclose(data.feature_mean.numpy(), x.mean(0))

    # Changing every non-train row changes nothing in the fitted statistics.
    x2, y2 = x.copy(), y.copy()
    x2[~train] = x2[~train] * 50 + 1000
    y2[~train] = -y2[~train] * 7
    other = Grouped(x2, y2, groups, 3, 3, dtype=torch.float64)
    for name in ("feature_mean", "feature_std", "target_mean", "target_std"):
        assert torch.equal(getattr(data, name), getattr(other, name))
    # ... while the test rows are transformed with the train statistics.
    batch = other.test.sample(3, gen(0))
    expected = (torch.as_tensor(x2[batch.info["support_rows"].numpy()]) - other.feature_mean) / (
        other.feature_std
    )
    assert torch.allclose(batch.support.x, expected)


def test_standardisation_can_be_switched_off_and_inverted():
    x, y, groups = traceable_table(num_groups=10)
    data = Grouped(x, y, groups, 3, 3, standardize=False, standardize_target=False)
    assert torch.equal(data.feature_mean, torch.zeros(3))
    assert torch.equal(data.target_std, torch.ones(1))
    batch = data.train.sample(2, gen(0))
    assert torch.equal(batch.support.x, torch.as_tensor(x[batch.info["support_rows"]]).float())
    on = Grouped(x, y, groups, 3, 3)
    z = on.transform_features(x[:4])
    assert torch.allclose(z * on.feature_std + on.feature_mean, torch.as_tensor(x[:4]).float())
    b = on.train.sample(2, gen(0))
    assert torch.allclose(
        on.inverse_transform_target(b.support.y)[..., 0],
        torch.as_tensor(y[b.info["support_rows"].numpy()]).float(),
        rtol=1e-5,
    )


def test_transforms_for_a_new_condition():
    x, y, groups = traceable_table(num_groups=10)
    data = Grouped(x, y, groups, 3, 3, dtype=torch.float64)
    support_y = data.transform_target(y[:5])
    assert support_y.shape == (5, 1)
    assert torch.allclose(data.inverse_transform_target(support_y)[:, 0], torch.as_tensor(y[:5]))
    assert data.transform_features(torch.as_tensor(x[:5])).shape == (5, 3)
    with pytest.raises(ValueError, match=r"x must be \[\.\.\., 3\]"):
        data.transform_features(x[:5, :2])
    one = Grouped(x[:, 0], y, groups, 3, 3)
    assert one.transform_features(x[:5, 0]).shape == (5, 1)
    xc, labels, gc = class_table()
    cls = Grouped(xc, labels, gc, 2, 2, task="classification", n_way=2)
    with pytest.raises(ValueError, match="inverse_transform_target is for regression"):
        cls.inverse_transform_target(torch.zeros(3))


def test_constant_feature_does_not_divide_by_zero():
    x, y, groups = traceable_table(num_groups=10)
    x[:, 2] = 3.0
    data = Grouped(x, y, groups, 3, 3)
    assert data.feature_std[2] == 1 and torch.isfinite(data.train.sample(4).support.x).all()


# -- skipped groups ---------------------------------------------------------------------------
def test_small_groups_are_skipped_with_a_warning_naming_them():
    x, y, groups = traceable_table(num_groups=20, rows=8)
    keep = ~((groups == 3) & (np.arange(groups.size) % 2 == 0)) & ~(
        (groups == 11) & (np.arange(groups.size) % 3 == 0)
    )
    x, y, groups = x[keep], y[keep], groups[keep]
    small = {g: int((groups == g).sum()) for g in (3, 11)}
    assert all(n < 7 for n in small.values())
    with pytest.warns(
        UserWarning, match=r"skipped 2 of 20 groups with fewer than .* = 7 rows"
    ) as w:
        data = Grouped(x, y, groups, k_shot=4, k_query=3)
    assert w[0].filename == __file__  # the warning points at the user's call
    assert set(data.skipped) == {3, 11}
    for g, n in small.items():
        assert f"{n} rows" in data.skipped[g]
    for sampler in (data.train, data.val, data.test):
        assert not set(sampler.groups) & {3, 11}
        if sampler.groups:
            batch = sampler.sample(30, gen(0))
            assert not set(batch.info["group"].tolist()) & {3, 11}


def test_no_warning_when_nothing_is_skipped():
    x, y, groups = traceable_table(num_groups=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Grouped(x, y, groups, 3, 3)


def test_all_train_groups_too_small_raises():
    x, y, groups = traceable_table(num_groups=10, rows=4)
    with pytest.raises(ValueError, match="none of the 6 meta-train groups"), pytest.warns():
        Grouped(x, y, groups, k_shot=3, k_query=3)


# -- classification ---------------------------------------------------------------------------
def class_table(num_groups: int = 12, seed: int = 0):
    """Group g has classes g..g+3 (text labels), 6 rows each; x = [group, class, row]."""
    rows = []
    for g in range(num_groups):
        for c in range(g, g + 4):
            rows += [(g, c, len(rows) + i) for i in range(6)]
    table = np.array(rows, dtype=float)
    table = table[np.random.default_rng(seed).permutation(len(table))]
    labels = np.array([f"class-{int(c)}" for c in table[:, 1]], dtype=object)
    return table, labels, table[:, 0].astype(int)


def test_classification_tasks_are_n_way_k_shot_within_one_group():
    x, labels, groups = class_table()
    data = Grouped(
        x, labels, groups, k_shot=2, k_query=3, task="classification", n_way=3, standardize=False
    )
    batch = data.train.sample(25, gen(0))
    assert batch.support.x.shape == (25, 6, 3) and batch.query.x.shape == (25, 9, 3)
    assert batch.support.y.dtype == torch.int64
    assert torch.equal(batch.support.y[0], torch.tensor([0, 0, 1, 1, 2, 2]))
    for t in range(25):
        task = batch.task(t)
        assert len(set(torch.cat([task.support.x[:, 0], task.query.x[:, 0]]).tolist())) == 1
        rows = torch.cat([task.support.x[:, 2], task.query.x[:, 2]])
        assert len(set(rows.tolist())) == 15
        for split in (task.support, task.query):
            for label in range(3):
                original = split.x[split.y == label, 1]
                assert len(set(original.tolist())) == 1  # one class per label
                name = data.classes[int(batch.info["classes"][t, label])]
                assert name == f"class-{int(original[0])}"
        assert len(set(task.support.x[:, 1].tolist())) == 3


def test_classification_skips_groups_with_too_few_usable_classes():
    x, labels, groups = class_table()
    # group 5 keeps only 2 rows of two of its classes: 2 usable classes < n_way = 3
    cut = np.zeros(len(x), bool)
    for c in (5, 6):
        idx = np.flatnonzero((groups == 5) & (x[:, 1] == c))
        cut[idx[2:]] = True
    keep = ~cut
    with pytest.warns(UserWarning, match=r"skipped 1 of 12 groups with fewer than n_way = 3"):
        data = Grouped(x[keep], labels[keep], groups[keep], 2, 3, task="classification", n_way=3)
    assert list(data.skipped) == [5] and "2 classes" in data.skipped[5]


def test_classification_argument_errors():
    x, labels, groups = class_table()
    with pytest.raises(ValueError, match="needs n_way"):
        Grouped(x, labels, groups, 2, 2, task="classification")
    with pytest.raises(ValueError, match="n_way is for task='classification'"):
        Grouped(x, x[:, 0], groups, 2, 2, n_way=3)
    with pytest.raises(ValueError, match="standardize_target is for regression"):
        Grouped(x, labels, groups, 2, 2, task="classification", n_way=2, standardize_target=True)
    with pytest.raises(ValueError, match="task must be"):
        Grouped(x, labels, groups, 2, 2, task="ranking")


# -- bad input --------------------------------------------------------------------------------
def test_nan_in_features_names_the_column_and_row_count():
    x, y, groups = traceable_table()
    x[[3, 8], 1] = np.nan
    x[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"3 rows: 'row' \(2 rows\), 'noise' \(1 row\)"):
        Grouped(x, y, groups, 3, 3, feature_names=["group", "row", "noise"])


def test_nan_or_inf_in_targets():
    x, y, groups = traceable_table()
    y[[1, 2]] = [np.nan, -np.inf]
    with pytest.raises(ValueError, match=r"target 'ic50' has 2 rows with a missing, NaN or inf"):
        Grouped(x, y, groups, 3, 3, target_name="ic50")


def test_single_group_cannot_be_split():
    x, y, _ = traceable_table(num_groups=1)
    with pytest.raises(ValueError, match=r"single distinct value \('plate-1'\)"):
        Grouped(x, y, ["plate-1"] * len(y), 3, 3)


def test_mismatched_lengths():
    x, y, groups = traceable_table()
    with pytest.raises(ValueError, match=r"x: 360 rows, y: 359 rows, groups: 360 rows"):
        Grouped(x, y[:-1], groups, 3, 3)


@pytest.mark.parametrize(("k_shot", "k_query"), [(0, 3), (3, 0), (-1, 2)])
def test_k_must_be_positive(k_shot, k_query):
    x, y, groups = traceable_table()
    with pytest.raises(ValueError, match=r"k_(shot|query) must be >= 1"):
        Grouped(x, y, groups, k_shot, k_query)
    with pytest.raises(TypeError, match="k_shot must be an int"):
        Grouped(x, y, groups, 2.5, 3)


def test_other_bad_arrays():
    x, y, groups = traceable_table()
    with pytest.raises(ValueError, match=r"x must be \[rows\] or \[rows, features\]"):
        Grouped(x[:, :, None], y, groups, 3, 3)
    with pytest.raises(TypeError, match="x must hold numbers"):
        Grouped(np.array(["a"] * len(y), dtype=object), y, groups, 3, 3)
    with pytest.raises(TypeError, match="x must be a numpy array"):
        Grouped("x.csv", y, groups, 3, 3)
    with pytest.raises(ValueError, match="groups has missing ids"):
        Grouped(x, y, np.where(groups == 2, np.nan, groups), 3, 3)
    with pytest.raises(ValueError, match="feature_names has 2 names but x has 3"):
        Grouped(x, y, groups, 3, 3, feature_names=["a", "b"])
    with pytest.raises(ValueError, match="num_tasks"):
        Grouped(x, y, groups, 3, 3).train.sample(0)


def test_tensors_and_lists_are_accepted():
    x, y, groups = traceable_table(num_groups=10)
    a = Grouped(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(groups), 3, 3)
    b = Grouped(x.tolist(), y.tolist(), groups.tolist(), 3, 3)
    assert a.group_ids == b.group_ids == list(range(10))
    assert torch.equal(a.train.sample(3, gen(0)).support.x, b.train.sample(3, gen(0)).support.x)


# -- CSV and DataFrame ------------------------------------------------------------------------
def write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def csv_rows(x, y, groups):
    return [
        [
            f"cond-{g:02d}",
            repr(float(a)),
            f"name{i}",
            repr(float(b)),
            repr(float(c)),
            repr(float(t)),
        ]
        for i, (g, (a, b, c), t) in enumerate(zip(groups, x, y, strict=True))
    ]


HEADER = ["condition", "group_feature", "compound", "row", "noise", "response"]


def test_from_csv_matches_the_arrays(tmp_path):
    x, y, groups = traceable_table(num_groups=12)
    path = tmp_path / "assay.csv"
    write_csv(path, HEADER, csv_rows(x, y, groups))
    with pytest.warns(UserWarning, match=r"non-numeric columns left out.*'compound'") as w:
        data = Grouped.from_csv(path, target="response", group="condition", k_shot=3, k_query=3)
    assert w[0].filename == __file__
    assert data.feature_names == ["group_feature", "row", "noise"]
    assert data.target_name == "response"
    assert data.group_ids == [f"cond-{g:02d}" for g in range(12)]
    ids = np.array([f"cond-{g:02d}" for g in groups], dtype=object)
    reference = Grouped(x, y, ids, 3, 3)
    assert data.split_groups == reference.split_groups
    for split in ("train", "test"):
        a, b = data.split(split).sample(5, gen(1)), reference.split(split).sample(5, gen(1))
        assert torch.equal(a.support.x, b.support.x) and torch.equal(a.query.y, b.query.y)


def test_from_csv_explicit_features_tsv_and_options(tmp_path):
    x, y, groups = traceable_table(num_groups=8)
    path = tmp_path / "assay.tsv"
    write_csv(path, HEADER, csv_rows(x, y, groups), delimiter="\t")
    data = Grouped.from_csv(
        path,
        target="response",
        group="condition",
        features=["noise", "row"],
        k_shot=2,
        k_query=2,
        delimiter="\t",
        split=(0.5, 0.25, 0.25),
        seed=4,
    )
    assert data.feature_names == ["noise", "row"] and data.num_features == 2
    assert [len(data.split_groups[s]) for s in ("train", "val", "test")] == [4, 2, 2]


def test_from_csv_missing_column_names_it_and_lists_the_columns(tmp_path):
    x, y, groups = traceable_table(num_groups=4)
    path = tmp_path / "assay.csv"
    write_csv(path, HEADER, csv_rows(x, y, groups))
    expected = "target column 'ic50' is not in .*assay.csv; available columns: 'condition', "
    with pytest.raises(ValueError, match=expected):
        Grouped.from_csv(path, target="ic50", group="condition", k_shot=2, k_query=2)
    with pytest.raises(ValueError, match="group column 'plate' is not in"):
        Grouped.from_csv(path, target="response", group="plate", k_shot=2, k_query=2)
    with pytest.raises(ValueError, match="features column 'dose' is not in"):
        Grouped.from_csv(
            path, target="response", group="condition", features=["dose"], k_shot=2, k_query=2
        )
    with pytest.raises(FileNotFoundError, match="no CSV file"):
        Grouped.from_csv(tmp_path / "nope.csv", target="r", group="g", k_shot=2, k_query=2)


def test_from_csv_missing_cells_are_reported_by_column(tmp_path):
    x, y, groups = traceable_table(num_groups=4)
    rows = csv_rows(x, y, groups)
    rows[2][4] = ""
    rows[7][4] = "NA"
    path = tmp_path / "assay.csv"
    write_csv(path, HEADER, rows)
    with pytest.raises(ValueError, match=r"x has NaN .* 2 rows: 'noise' \(2 rows\)"):
        Grouped.from_csv(
            path,
            target="response",
            group="condition",
            features=["row", "noise"],
            k_shot=2,
            k_query=2,
        )
    rows[2][4], rows[7][4] = "0.5", "0.1"
    rows[5][5] = "n/a"
    write_csv(path, HEADER, rows)
    with pytest.raises(ValueError, match="target 'response' has 1 row"), pytest.warns():
        Grouped.from_csv(path, target="response", group="condition", k_shot=2, k_query=2)
    rows[5][5] = "1.0"
    rows[6][3] = "twelve"
    write_csv(path, HEADER, rows)
    with pytest.raises(ValueError, match=r"line 8: column 'row' has 'twelve', not a number"):
        Grouped.from_csv(
            path, target="response", group="condition", features=["row"], k_shot=2, k_query=2
        )
    rows[6][3] = "3"
    rows[1][0] = ""
    write_csv(path, HEADER, rows)
    with pytest.raises(ValueError, match=r"group column 'condition' has 1 empty cell .*line 3"):
        Grouped.from_csv(
            path, target="response", group="condition", features=["row"], k_shot=2, k_query=2
        )


def test_from_csv_malformed_files(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        Grouped.from_csv(path, target="y", group="g", k_shot=1, k_query=1)
    path.write_text("g,x,y\n")
    with pytest.raises(ValueError, match="no data rows"):
        Grouped.from_csv(path, target="y", group="g", k_shot=1, k_query=1)
    path.write_text("g,x,y\na,1,2\nb,1\n")
    with pytest.raises(ValueError, match="line 3 has 2 cells but the header has 3"):
        Grouped.from_csv(path, target="y", group="g", k_shot=1, k_query=1)
    path.write_text("g,x,x\na,1,2\n")
    with pytest.raises(ValueError, match=r"duplicated column names \['x'\]"):
        Grouped.from_csv(path, target="x", group="g", k_shot=1, k_query=1)


def test_from_csv_classification_with_text_labels(tmp_path):
    x, labels, groups = class_table(num_groups=8)
    path = tmp_path / "cls.csv"
    rows = [
        [str(g), *(repr(float(v)) for v in r), lab]
        for g, r, lab in zip(groups, x, labels, strict=True)
    ]
    write_csv(path, ["plate", "a", "b", "c", "label"], rows)
    data = Grouped.from_csv(
        path, target="label", group="plate", k_shot=1, k_query=2, task="classification", n_way=2
    )
    assert data.classes == sorted({f"class-{c}" for c in range(11)})
    batch = data.test.sample(4, gen(0))
    assert batch.support.y.shape == (4, 2) and batch.query.y.shape == (4, 4)


def test_from_dataframe_matches_from_csv(tmp_path):
    pd = pytest.importorskip("pandas")
    x, y, groups = traceable_table(num_groups=10)
    path = tmp_path / "assay.csv"
    write_csv(path, HEADER, csv_rows(x, y, groups))
    df = pd.read_csv(path, dtype={"condition": str})
    with pytest.warns(UserWarning, match="'compound'"):
        a = Grouped.from_dataframe(df, target="response", group="condition", k_shot=3, k_query=3)
        b = Grouped.from_csv(path, target="response", group="condition", k_shot=3, k_query=3)
    assert a.feature_names == b.feature_names and a.split_groups == b.split_groups
    assert torch.equal(a.train.sample(4, gen(0)).support.x, b.train.sample(4, gen(0)).support.x)
    with pytest.raises(ValueError, match="target column 'ic50' is not in the DataFrame"):
        Grouped.from_dataframe(df, target="ic50", group="condition", k_shot=3, k_query=3)
    df.loc[4, "noise"] = None
    with pytest.raises(ValueError, match=r"'noise' \(1 row\)"):
        Grouped.from_dataframe(
            df, target="response", group="condition", features=["noise"], k_shot=3, k_query=3
        )
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        Grouped.from_dataframe(x, target="response", group="condition", k_shot=3, k_query=3)


# -- every learner and the trainer ------------------------------------------------------------
@pytest.mark.parametrize("make", [ml.MAML, ml.FOMAML, ml.Pretrain])
def test_learners_meta_train_and_evaluate_on_grouped_regression(make):
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 10)
    slope = rng.normal(size=30)[groups]
    x = rng.uniform(-2, 2, size=(300, 1))
    y = slope * x[:, 0] + 0.05 * rng.normal(size=300)
    data = Grouped(x, y, groups, k_shot=5, k_query=5)
    torch.manual_seed(0)
    learner = make(ml.models.MLP([1, 16, 1]), F.mse_loss, inner_lr=0.1)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
    history = ml.train(learner, data.train, opt, iterations=30, meta_batch_size=8, progress=False)
    assert all(math.isfinite(h["meta_loss"]) for h in history)
    result = ml.evaluate(learner, data.test, num_tasks=20, steps=[0, 5])
    assert all(math.isfinite(v) for v in result.summary("loss", 5))


def test_maml_learns_grouped_classification():
    x, labels, groups = class_table(num_groups=12)
    data = Grouped(x, labels, groups, 2, 2, task="classification", n_way=2)
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([3, 16, 2]), F.cross_entropy, inner_lr=0.5)
    opt = torch.optim.Adam(maml.parameters(), lr=1e-2)
    history = ml.train(maml, data.train, opt, iterations=5, meta_batch_size=4, progress=False)
    assert "accuracy" in history[-1]
    result = ml.evaluate(maml, data.val, num_tasks=10, steps=[0, 3])
    assert 0 <= result.summary("accuracy", 3)[0] <= 1


def test_repr():
    x, y, groups = traceable_table(num_groups=10)
    data = Grouped(x, y, groups, 3, 3)
    assert "train=6, val=2, test=2" in repr(data) and "split='test'" in repr(data.test)
    assert isinstance(data.train, ml.tasks.TaskSampler)


def test_train_and_evaluate_on_device(device):
    x, y, groups = traceable_table(num_groups=12)
    data = Grouped(x, y, groups, 3, 3)
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([3, 8, 1]), F.mse_loss, inner_lr=0.05).to(device)
    opt = torch.optim.SGD(maml.parameters(), lr=1e-2)
    ml.train(maml, data.train, opt, iterations=2, meta_batch_size=4, progress=False)
    result = ml.evaluate(maml, data.test, num_tasks=6, steps=[0, 2])
    assert math.isfinite(result.summary("loss", 2)[0])


@pytest.mark.parametrize("column", ["target", "feature"])
def test_one_huge_value_is_an_error_naming_the_column(tmp_path, column):
    # One 1e308 made the mean and std infinite and every standardised value -0.0, silently.
    x, y, groups = traceable_table(num_groups=12)
    if column == "target":
        y[0] = 1e308
    else:
        x[0, 2] = 1e308
    path = tmp_path / "assay.csv"
    write_csv(path, HEADER, csv_rows(x, y, groups))
    name = "target 'response'" if column == "target" else "feature 'noise'"
    with (
        warnings.catch_warnings(),
        pytest.raises(ValueError, match=rf"{name}: .*largest magnitude 1e\+308.*rescale"),
    ):
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow warning either
        warnings.filterwarnings("ignore", "non-numeric columns", UserWarning)
        Grouped.from_csv(path, target="response", group="condition", k_shot=3, k_query=3)
    # Unstandardised, a value beyond float32 is refused too rather than becoming inf.
    with pytest.raises(ValueError, match=r"standardisation is off"):
        Grouped(x, y, groups, 3, 3, standardize=False, standardize_target=False)


def test_csv_encodings_utf16_reads_and_latin1_is_named(tmp_path):
    x, y, groups = traceable_table(num_groups=12)
    rows = csv_rows(x, y, groups)
    write_csv(tmp_path / "utf8.csv", HEADER, rows)
    text = (tmp_path / "utf8.csv").read_text(encoding="utf-8")
    (tmp_path / "utf16.csv").write_text(text, encoding="utf-16")
    options = dict(target="response", group="condition", k_shot=3, k_query=3)
    options["features"] = ["group_feature", "row", "noise"]
    a = Grouped.from_csv(tmp_path / "utf8.csv", **options)
    b = Grouped.from_csv(tmp_path / "utf16.csv", **options)
    assert torch.equal(
        a.split("train").sample(2, gen(0)).support.x, b.split("train").sample(2, gen(0)).support.x
    )
    latin1 = text.replace("name3,", "Gänse,", 1)
    (tmp_path / "latin1.csv").write_bytes(latin1.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv line 5 is not UTF-8 text.*save the file"):
        Grouped.from_csv(tmp_path / "latin1.csv", **options)


def test_a_text_cell_in_a_numeric_column_is_an_error_naming_the_line(tmp_path):
    x, y, groups = traceable_table(num_groups=12)
    rows = csv_rows(x, y, groups)
    rows[6][3] = "twelve"  # the "row" column, line 8 of the file
    write_csv(tmp_path / "assay.csv", HEADER, rows)
    with (
        warnings.catch_warnings(),
        pytest.raises(ValueError, match=r"assay\.csv line 8: column 'row' has 'twelve', not a"),
    ):
        warnings.simplefilter("ignore")
        Grouped.from_csv(
            tmp_path / "assay.csv", target="response", group="condition", k_shot=3, k_query=3
        )


def test_mixed_class_labels_are_named_as_labels():
    x, _, groups = traceable_table(num_groups=12)
    labels = np.array([1, "active"] * (len(x) // 2), dtype=object)
    with pytest.raises(TypeError, match=r"the class labels \(target 'y'\): mixed kinds"):
        Grouped(x, labels, groups, 2, 2, task="classification", n_way=2)
