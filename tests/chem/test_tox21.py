"""Real data: MoleculeNet's Tox21 (12 assays, 7,831 compounds) as few-shot tasks.

Reads ``../shared/data/tox21/tox21.csv`` (relative to the project root), checks its sha256
first and skips with the reason when the folder is absent.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.training.evaluate import sample_fixed, task_seed

pytestmark = pytest.mark.real_data

pytest.importorskip("rdkit")
ensemble = pytest.importorskip("sklearn.ensemble")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

FOLDER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tox21"
SHA256 = "b1346d5bc675c97c555b372e5845dc7de3b5d04734c290189a4accd77dbd1b43"
# (labelled, active) per assay, from the dataset's README.
COUNTS = {
    "NR-AR": (7265, 309),
    "NR-AR-LBD": (6758, 237),
    "NR-AhR": (6549, 768),
    "NR-Aromatase": (5821, 300),
    "NR-ER": (6193, 793),
    "NR-ER-LBD": (6955, 350),
    "NR-PPAR-gamma": (6450, 186),
    "SR-ARE": (5832, 942),
    "SR-ATAD5": (7072, 264),
    "SR-HSE": (6467, 372),
    "SR-MMP": (5810, 918),
    "SR-p53": (6774, 423),
}
SPLIT = {"train": ml.chem.TOX21_TRAIN, "test": ml.chem.TOX21_TEST}
FINGERPRINT = ml.chem.MorganFingerprint(radius=2, size=1024)


@pytest.fixture(scope="module")
def csv_path() -> Path:
    path = FOLDER / "tox21.csv"
    if not path.is_file():
        pytest.skip(f"Tox21 is not at {FOLDER.resolve()} (MoleculeNet's tox21.csv; see README)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        pytest.fail(f"{path} has sha256 {digest}, expected {SHA256}: a different or damaged file")
    return path


@pytest.fixture(scope="module")
def table(csv_path) -> ml.chem.AssayTable:
    return ml.chem.read_assay_csv(csv_path)


@pytest.fixture(scope="module")
def features(table, tmp_path_factory) -> ml.chem.Fingerprints:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fingerprints = ml.chem.morgan_fingerprints(
            table.smiles, FINGERPRINT, tmp_path_factory.mktemp("fingerprints")
        )
    return fingerprints, [str(w.message) for w in caught]


def test_table_has_the_readme_counts(table):
    assert len(table.smiles) == 7831 and table.assays == list(COUNTS)
    for j, assay in enumerate(table.assays):
        column = table.labels[:, j]
        labelled = ~np.isnan(column)
        assert (int(labelled.sum()), int(np.nansum(column))) == COUNTS[assay], assay
        assert set(np.unique(column[labelled])) == {0.0, 1.0}


def test_invalid_smiles_are_counted_and_named_by_line(table, features):
    fingerprints, messages = features
    assert len(fingerprints.rows) + len(fingerprints.invalid) == 7831
    assert 0 < len(fingerprints.invalid) < 20  # RDKit rejects a few hypervalent Al salts
    (message,) = [m for m in messages if "could not be parsed" in m]
    assert f"{len(fingerprints.invalid)} SMILES of 7831" in message
    first = fingerprints.invalid[0]
    assert f"{first} ({table.smiles[first]!r})" in message
    assert fingerprints.features.shape == (7831 - len(fingerprints.invalid), 1024)


def tasks(table, features, k_shot) -> ml.tasks.MultiAssay:
    fingerprints, _ = features
    labels = table.labels[fingerprints.rows]
    return ml.tasks.MultiAssay(fingerprints.features, labels, table.assays, k_shot, None, SPLIT)


@pytest.mark.parametrize("k_shot", [1, 10])
def test_support_is_k_actives_and_k_inactives_and_never_in_the_query(table, features, k_shot):
    data = tasks(table, features, k_shot)
    rows = features[0].rows
    for assay in ml.chem.TOX21_TEST:
        j = table.assays.index(assay)
        batch = data.assay(assay).sample(3, generator=torch.Generator().manual_seed(0))
        for i in range(3):
            support = rows[batch.info["support_rows"][i].numpy()]  # rows of the CSV table
            query = rows[batch.info["query_rows"][i].numpy()]
            assert sorted(table.labels[support, j].tolist()) == [0.0] * k_shot + [1.0] * k_shot
            smiles = {table.smiles[r] for r in support}
            assert smiles.isdisjoint(table.smiles[r] for r in query)
            # The query is every other labelled, parsed compound of the assay.
            labelled = int((~np.isnan(table.labels[rows, j])).sum())
            assert len(query) == labelled - 2 * k_shot
            np.testing.assert_array_equal(batch.query.y[i].numpy(), table.labels[query, j])


def test_short_maml_beats_support_only_random_forest_at_10_shot(table, features):
    """100 MAML steps (~10 s) rank the held-out assays' compounds better than a forest
    trained on the same 10 + 10 support compounds (Altae-Tran et al.'s protocol, 4 draws)."""
    fingerprints, _ = features
    labels = table.labels[fingerprints.rows]
    train = ml.tasks.MultiAssay(fingerprints.features, labels, table.assays, 10, 16, SPLIT)
    test = tasks(table, features, 10)
    torch.manual_seed(0)
    maml = ml.MAML(ml.models.MLP([1024, 64, 2]), F.cross_entropy, inner_lr=0.1, inner_steps=2)
    optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)
    ml.train(maml, train.train, optimizer, 100, 8, seed=0, progress=False)
    maml_auc, forest_auc = [], []
    for assay in ml.chem.TOX21_TEST:
        ev = ml.evaluate(maml, test.assay(assay), num_tasks=4, batch_size=1, metrics=["roc_auc"])
        maml_auc.append(ev.summary("roc_auc")[0])
        batch = sample_fixed(test.assay(assay), [task_seed(0, i) for i in range(4)])
        for task in batch:
            forest = ensemble.RandomForestClassifier(100, random_state=0, n_jobs=1)
            forest.fit(task.support.x.numpy(), task.support.y.numpy())
            scores = forest.predict_proba(task.query.x.numpy())[:, 1]
            forest_auc.append(sklearn_metrics.roc_auc_score(task.query.y.numpy(), scores))
    assert np.mean(maml_auc) > np.mean(forest_auc) + 0.05, (maml_auc, forest_auc)
