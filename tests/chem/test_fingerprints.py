"""Morgan fingerprints (RDKit), their disk cache, and wide SMILES tables read from CSV."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import metalearn as ml

rdkit = pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import rdFingerprintGenerator  # noqa: E402

SMILES = ["CCO", "c1ccccc1O", "C1CC", "CC(=O)Oc1ccccc1C(=O)O", "", "CCN(CC)CC"]


def test_bits_match_rdkit_and_invalid_smiles_are_reported_by_position():
    settings = ml.chem.MorganFingerprint(radius=3, size=512)
    with pytest.warns(UserWarning, match=r"2 SMILES of 6 .* positions 2 \('C1CC'\), 4 \(''\)"):
        fp = ml.chem.morgan_fingerprints(SMILES, settings)
    assert fp.invalid == (2, 4)
    assert fp.rows.tolist() == [0, 1, 3, 5]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=3, fpSize=512)
    expected = [generator.GetFingerprintAsNumPy(Chem.MolFromSmiles(SMILES[i])) for i in fp.rows]
    np.testing.assert_array_equal(fp.features, np.stack(expected))
    assert fp.features.dtype == np.uint8 and fp.features.shape == (4, 512)


def test_counts_and_radius_change_the_features():
    valid = ["CCO", "CCCCCCCC", "c1ccccc1O"]
    bits = ml.chem.morgan_fingerprints(valid, ml.chem.MorganFingerprint(size=256)).features
    counts = ml.chem.morgan_fingerprints(
        valid, ml.chem.MorganFingerprint(size=256, counts=True)
    ).features
    assert counts.max() > 1 and np.array_equal(counts > 0, bits > 0)
    r0 = ml.chem.morgan_fingerprints(valid, ml.chem.MorganFingerprint(radius=0, size=256))
    assert r0.features.sum() < bits.sum()


def test_cache_is_written_once_and_reused(tmp_path):
    settings = ml.chem.MorganFingerprint(size=128)
    with pytest.warns(UserWarning, match="could not be parsed"):
        first = ml.chem.morgan_fingerprints(SMILES, settings, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    # A cached result is read back, not recomputed: tamper with it and see the change.
    with np.load(files[0]) as cached:
        arrays = dict(cached)
    arrays["features"] = arrays["features"] * 0 + 7
    np.savez(files[0], **arrays)
    with pytest.warns(UserWarning, match=r"positions 2 \('C1CC'\)"):  # still reported
        again = ml.chem.morgan_fingerprints(SMILES, settings, cache_dir=tmp_path)
    assert (again.features == 7).all() and again.invalid == first.invalid
    # Other settings or other SMILES get their own file.
    ml.chem.morgan_fingerprints(SMILES[:2], settings, cache_dir=tmp_path)
    ml.chem.morgan_fingerprints(SMILES[:2], ml.chem.MorganFingerprint(size=64), tmp_path)
    assert len(list(tmp_path.iterdir())) == 3
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="not one string"):
        ml.chem.morgan_fingerprints("CCO")
    with pytest.raises(TypeError, match="positions 1"):
        ml.chem.morgan_fingerprints(["CCO", None])
    with pytest.raises(ValueError, match="names has 1 entries for 2 SMILES"):
        ml.chem.morgan_fingerprints(["CCO", "CCC"], names=["line 2"])
    with pytest.raises(ValueError, match="size must be >= 1"):
        ml.chem.MorganFingerprint(size=0)


def test_wide_csv_to_tasks_names_csv_lines_of_invalid_smiles(tmp_path):
    path = tmp_path / "screen.csv"
    rng = np.random.default_rng(0)
    chains = [("C" * n) + "O" + ("C" * m) for n in range(1, 9) for m in range(0, 6)]  # 48 valid
    lines = ["id,smiles,A,B,C"]
    for i, s in enumerate([*chains[:10], "C1CC", *chains[10:]]):
        cells = ["" if rng.random() < 0.2 else str(int(rng.random() < 0.4)) for _ in range(3)]
        lines.append(f"m{i},{s},{','.join(cells)}")
    path.write_text("\n".join(lines) + "\n")
    table = ml.chem.read_assay_csv(path)
    assert table.assays == ["A", "B", "C"] and table.labels.shape == (49, 3)
    assert np.isnan(table.labels).any()
    with pytest.warns(UserWarning, match=r"1 SMILES of 49 .*: line 12 \('C1CC'\)"):
        data = ml.chem.molecule_assays(
            path, 2, 2, {"train": ["A", "B"], "test": ["C"]}, ml.chem.MorganFingerprint(size=64)
        )
    assert data.num_features == 64 and len(data._x) == 48
    assert data.train.sample(3).support.x.shape == (3, 4, 64)


def test_csv_errors_name_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("smiles,A\nCCO,1\nCCC,active\n")
    with pytest.raises(ValueError, match="no SMILES column 'SMILES'"):
        ml.chem.read_assay_csv(path, smiles="SMILES")
    with pytest.raises(ValueError, match=r"line 3: assay column 'A' has 'active'"):
        ml.chem.read_assay_csv(path, assays=["A"])


def test_without_the_extra_metalearn_imports_and_errors_name_the_install(monkeypatch):
    code = (
        "import sys; sys.modules['rdkit'] = None; sys.modules['sklearn'] = None\n"
        "import metalearn, metalearn.chem, metalearn.tasks, metalearn.training"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "rdkit", None)
    with pytest.raises(ImportError, match=r"needs rdkit.*pip install 'metalearn\[chem\]'"):
        ml.chem.morgan_fingerprints(["CCO"])
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)
    data = ml.tasks.MultiAssay(
        np.eye(8), np.tile([0.0, 1.0], 4)[:, None].repeat(2, 1), ["a", "b"], 1, 1,
        {"train": ["a"], "test": ["b"]},
    )  # fmt: skip
    learner = ml.Pretrain(torch.nn.Linear(8, 2), torch.nn.functional.cross_entropy, 0.1)
    with pytest.raises(ImportError, match=r"needs scikit-learn.*pip install 'metalearn\[chem\]'"):
        ml.evaluate(learner, data.test, num_tasks=1, metrics=["roc_auc"])
