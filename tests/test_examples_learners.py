"""The learner-family sine examples run end to end (tiny budgets), so they cannot rot."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("script", "flags"),
    [
        ("sine_reptile", ["--iterations", "5", "--inner-optimizer", "adam"]),
        ("sine_reptile", ["--iterations", "3", "--backend", "higher"]),
        ("sine_anil", ["--iterations", "3", "--compare"]),
        ("sine_metasgd", ["--iterations", "3", "--k-shot", "5"]),
        ("sine_mamlpp", ["--epochs", "3", "--epoch-size", "2"]),
        ("sine_mamlpp", ["--epochs", "2", "--epoch-size", "2", "--no-msl", "--no-lslr", "--no-ca"]),
    ],
)
def test_sine_example_runs(tmp_path, script, flags, load_example):
    out = load_example(script).main(
        [*flags, "--test-tasks", "10", "--out", str(tmp_path), "--no-progress"]
    )
    results = out if isinstance(out, dict) else {"result": out}
    for result in results.values():
        assert result.per_task["loss"].shape[0] == 10
    assert (tmp_path / "results.md").read_text().strip()
