"""examples/omniglot_minimal.py without the data: options from a config, and the report."""

from __future__ import annotations

import json

import pytest


def test_config_fills_what_the_command_line_does_not_name(load_example, tmp_path):
    example = load_example("omniglot_minimal")
    config = tmp_path / "c.yaml"
    config.write_text("learner: anil\nways: 20\niterations: 50\ncurve_every: 150\n")
    args = example.parse(["--root", "r", "--config", str(config), "--curve-every", "100"])
    # 100 is the default, but it was given explicitly: it wins over the config's 150.
    assert (args.learner, args.ways, args.iterations, args.curve_every) == ("anil", 20, 50, 100)
    config.write_text("learner: anil\nwayz: 20\n")
    with pytest.raises(SystemExit):
        example.parse(["--root", "r", "--config", str(config)])
    with pytest.raises(SystemExit):
        example.parse([])  # --root is required unless --report


def test_report_table_and_curves(load_example, tmp_path):
    example = load_example("omniglot_minimal")
    for learner, ways, acc in (("maml", 5, 0.9), ("pixel-nn", 5, 0.4), ("maml", 20, 0.7)):
        curve = [{"iteration": i, "test_accuracy": acc * i / 10} for i in (1, 10)]
        summary = {
            "learner": learner,
            "ways": ways,
            "options": {"iterations": 10},
            "accuracy": {"any-class": {"mean": acc, "ci95": 0.01}},
            "seconds": 120.0,
            "curve": curve if learner == "maml" else [],
        }
        if ways == 20:
            summary["iterations_done"] = 7  # --max-minutes stopped it before its 10 iterations
        (tmp_path / f"{learner}_{ways}way.json").write_text(json.dumps(summary))
    table = example.report(tmp_path).splitlines()
    assert table[2] == "| maml | 5 | 90.0 ± 1.0 | - | 10 | 2.0 |"
    assert table[3] == "| pixel-nn | 5 | 40.0 ± 1.0 | - | - | 2.0 |"
    assert table[4] == "| maml | 20 | 70.0 ± 1.0 | - | 7 | 2.0 |"
    assert (tmp_path / "curves.png").stat().st_size > 1000
