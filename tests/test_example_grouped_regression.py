"""examples/grouped_regression.py runs end to end (small flags) and writes a readable table."""

from __future__ import annotations

import csv
import math
import runpy
import warnings
from pathlib import Path

import torch

import metalearn as ml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grouped_regression.py"


def test_example_runs_with_small_flags(tmp_path, capsys):
    example = runpy.run_path(str(EXAMPLE))
    table = tmp_path / "assay.csv"
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # failed plates are skipped, by design
            results = example["main"](
                [
                    "--conditions", "40", "--iterations", "3", "--meta-batch", "4",
                    "--eval-tasks", "8", "--inner-steps", "2", "--csv", str(table),
                ]
            )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert set(results) == {"MAML", "Pretrain", "from scratch"}
    assert all(math.isfinite(m) and math.isfinite(ci) for m, ci in results.values())
    out = capsys.readouterr().out
    assert "held-out test conditions" in out and "MAML - Pretrain" in out

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == example["COLUMNS"]
    assert len({r["condition"] for r in rows}) == 40
    data = ml.tasks.Grouped.from_csv(
        table, target="viability", group="condition", k_shot=3, k_query=1
    )
    assert data.feature_names == example["COLUMNS"][1:-1]


def test_synthetic_table_is_dose_response_shaped():
    example = runpy.run_path(str(EXAMPLE))
    rows = example["make_assay_table"](60, seed=1)
    by_condition: dict[str, list] = {}
    for row in rows:
        by_condition.setdefault(row[0], []).append(row)
    sizes = [len(v) for v in by_condition.values()]
    assert len(by_condition) == 60 and min(sizes) >= 4 and max(sizes) <= 20
    assert sum(1 for n in sizes if n >= 8) >= 50
    # viability falls with dose: lowest-dose rows are higher than highest-dose rows on average
    low = [min(v, key=lambda r: r[1])[5] for v in by_condition.values()]
    high = [max(v, key=lambda r: r[1])[5] for v in by_condition.values()]
    assert sum(low) / len(low) > sum(high) / len(high) + 30
