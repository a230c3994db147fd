"""The ``metalearn`` command line: train, evaluate, plot, data."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.training import load_checkpoint, read_metrics

SINE = str(Path(__file__).parents[1] / "configs" / "sine" / "maml.yaml")
# A run of seconds: small network, few iterations and tasks.
TINY = [
    "train.iterations=20",
    "train.meta_batch_size=4",
    "train.checkpoint_every=10",
    "validation.every=10",
    "validation.num_tasks=10",
    "test.num_tasks=20",
    "model.sizes=[1, 16, 1]",
    "learner.vectorize=loop",
]


def tiny(*extra):
    args = []
    for override in (*TINY, *extra):
        args += ["-o", override]
    return args


def train(run_dir, *extra, flags=()):
    return main(["train", SINE, "--run-dir", str(run_dir), "--no-progress", *flags, *tiny(*extra)])


def test_train_writes_checkpoint_metrics_plots_and_test(tmp_path, capsys):
    assert train(tmp_path / "run") == 0
    run = tmp_path / "run"
    for name in ("checkpoint.pt", "best.pt", "config.yaml", "metrics.jsonl", "test.json"):
        assert (run / name).is_file(), name
    assert (run / "plots" / "loss.png").is_file()
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert checkpoint["iteration"] == 20
    assert checkpoint["metadata"]["config"]["train"]["iterations"] == 20
    records = list(read_metrics(run / "metrics.jsonl"))
    assert [r["iteration"] for r in records if r["split"] == "train"] == list(range(1, 21))
    assert [r["iteration"] for r in records if r["split"] == "val"] == [10, 20]
    summary = json.loads((run / "test.json").read_text())
    assert summary["num_tasks"] == 20 and summary["steps"] == [0, 1, 10]
    out = capsys.readouterr().out
    assert "best validation score" in out and "20 tasks" in out


def test_evaluate_a_checkpoint(tmp_path, capsys):
    train(tmp_path / "run")
    capsys.readouterr()
    report = tmp_path / "eval.json"
    args = ["evaluate", str(tmp_path / "run"), "--num-tasks", "8", "--steps", "0", "2"]
    assert main([*args, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("8 tasks") and "loss" in out
    summary = json.loads(report.read_text())
    assert summary["steps"] == [0, 2] and len(summary["metrics"]["loss"]["mean"]) == 2
    # The latest state, the best state and the run folder all evaluate; same seed, same tasks.
    assert main(["evaluate", str(tmp_path / "run" / "checkpoint.pt"), "--num-tasks", "4"]) == 0
    assert main(["evaluate", str(tmp_path / "run" / "best.pt"), "--split", "val"]) == 0


def test_resume_continues_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "train.iterations=10", "test=null") == 0
    assert train(run, "train.iterations=10") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert train(run, "train.iterations=15", "test=null", flags=["--resume"]) == 0
    records = list(read_metrics(run / "metrics.jsonl"))
    assert [r["iteration"] for r in records if r["split"] == "train"] == list(range(1, 16))
    assert load_checkpoint(run / "checkpoint.pt")["iteration"] == 15


def test_an_unknown_key_fails_naming_it(tmp_path, capsys):
    assert train(tmp_path / "run", "learner.inner_lrr=0.1") == 2
    err = capsys.readouterr().err
    assert "learner.inner_lrr: unknown key; did you mean inner_lr?" in err
    assert "maml.yaml" in err
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_stops_with_the_message(tmp_path, capsys):
    code = train(tmp_path / "run", "optimizer.lr=1e30", "train.checkpoint_every=1")
    assert code == 1
    err = capsys.readouterr().err
    assert "training diverged at iteration" in err
    assert str(tmp_path / "run" / "checkpoint.pt") in err


def test_plot_command(tmp_path, capsys):
    train(tmp_path / "run", "train.plot=false")
    assert not (tmp_path / "run" / "plots").exists()
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert "loss.png" in capsys.readouterr().out
    assert (tmp_path / "run" / "plots" / "loss.png").is_file()
    assert main(["plot", str(tmp_path / "empty")]) == 2


@pytest.mark.parametrize("action", ["prepare", "download"])
def test_data_commands_call_the_datasets_package(monkeypatch, tmp_path, action):
    calls = []
    module = types.ModuleType("metalearn.datasets")
    setattr(module, action, lambda name, root: calls.append((name, root)) or root / "done")
    monkeypatch.setitem(sys.modules, "metalearn.datasets", module)
    assert main(["data", action, "miniimagenet", str(tmp_path)]) == 0
    assert calls == [("miniimagenet", tmp_path)]


def test_data_command_without_the_datasets_package(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "metalearn.datasets", types.ModuleType("metalearn.datasets"))
    assert main(["data", "prepare", "omniglot", str(tmp_path)]) == 2
    assert "metalearn.datasets.prepare is not available" in capsys.readouterr().err


def test_python_dash_m_and_the_console_script():
    result = subprocess.run(
        [sys.executable, "-m", "metalearn", "--help"], capture_output=True, text=True, check=True
    )
    assert "train" in result.stdout and "evaluate" in result.stdout
    scripts = metadata.entry_points(group="console_scripts")
    assert [e.value for e in scripts if e.name == "metalearn"] == ["metalearn.cli:main"]


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert train(tmp_path / "run", flags=["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.cuda
def test_train_on_cuda(tmp_path):
    assert train(tmp_path / "run", "learner.vectorize=auto", flags=["--device", "cuda"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--device", "cuda", "--num-tasks", "8"]) == 0
