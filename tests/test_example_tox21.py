"""examples/tox21_fewshot.py end to end on a small generated table with Tox21's columns."""

from __future__ import annotations

import json

import numpy as np
import pytest

import metalearn as ml

pytest.importorskip("rdkit")
pytest.importorskip("sklearn")


def test_every_learner_runs_and_writes_json(tmp_path, load_example):
    rng = np.random.default_rng(0)
    assays = [*ml.chem.TOX21_TRAIN, *ml.chem.TOX21_TEST]
    molecules = [("C" * n) + "O" + ("C" * m) + "N" for n in range(1, 13) for m in range(8)]
    lines = [",".join([*assays, "smiles"])]
    for s in molecules:
        cells = ["" if rng.random() < 0.1 else str(int(rng.random() < 0.3)) for _ in assays]
        lines.append(",".join([*cells, s]))
    (tmp_path / "tox.csv").write_text("\n".join(lines) + "\n")
    example = load_example("tox21_fewshot")
    out = tmp_path / "results.json"
    results = example.main(
        ["--csv", str(tmp_path / "tox.csv"), "--cache-dir", str(tmp_path / "cache"),
         "--shots", "1", "2", "--draws", "2", "--size", "64", "--hidden", "16",
         "--iterations", "2", "--meta-batch", "2", "--multitask-epochs", "1",
         "--inner-steps", "1", "--k-query", "4",
         "--out", str(out)]
    )  # fmt: skip
    assert set(results["learners"]) == {"maml", "fomaml", "anil", "protonet", "pretrain",
                                        "multitask", "rf", "logreg"}  # fmt: skip
    for result in results["learners"].values():
        for k in ("1", "2"):
            mean, ci = json.loads(out.read_text())["learners"]["maml"]["shots"][k]["roc_auc"]
            assert 0.0 <= mean <= 1.0 and ci >= 0.0
        assert set(result["shots"][1]["per_assay"]) == set(ml.chem.TOX21_TEST)
