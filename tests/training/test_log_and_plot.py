"""The metrics log (JSONL, optional TensorBoard) and the learning-curve plots."""

from __future__ import annotations

import importlib.util

import pytest

from metalearn.training import MetricsLog, plot_run, read_metrics


def test_records_are_appended_and_truncated(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for i in range(1, 6):
        log.write("train", i, {"loss": 1.0 / i})
    log.write("val", 5, {"loss": 0.3, "loss_ci95": 0.1})
    log.truncate_after(3)
    log.write("train", 4, {"loss": 9.0})
    log.close()
    records = list(read_metrics(tmp_path / "metrics.jsonl"))
    assert [(r["split"], r["iteration"]) for r in records] == [("train", i) for i in (1, 2, 3, 4)]
    assert records[-1]["loss"] == 9.0


def test_a_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"split": "train", "iteration": 1, "loss": 1.0}\n{"split": "tr')
    with pytest.warns(UserWarning, match="truncated last line"):
        records = list(read_metrics(path))
    assert len(records) == 1
    path.write_text('{"split": "tr\n{"split": "train", "iteration": 1}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:1"):
        list(read_metrics(path))


def test_plot_run_writes_a_png_per_metric(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for i in range(1, 11):
        log.write("train", i, {"loss": 1.0 / i, "accuracy": i / 10, "time": 0.1 * i})
    log.write("val", 10, {"steps": 5, "loss": 0.2, "loss_ci95": 0.05, "accuracy": 0.9})
    log.close()
    written = plot_run(tmp_path)
    assert sorted(p.name for p in written) == ["accuracy.png", "loss.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_plot_run_names_a_folder_without_metrics(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl"):
        plot_run(tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed"
)
def test_tensorboard_events_are_written(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=True)
    log.write("train", 1, {"loss": 0.5})
    log.close()
    assert any((tmp_path / "tensorboard").iterdir())


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed"
)
def test_requiring_missing_tensorboard_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match=r"metalearn\[tensorboard\]"):
        MetricsLog(tmp_path, tensorboard=True)
