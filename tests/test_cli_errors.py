"""Hostile and careless inputs to the command line: exit 2, one line naming what to change, and
no file the run did not write is changed. Also the guarantees of a resumed run and a run folder.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn.cli import main
from metalearn.training import load_checkpoint, save_checkpoint
from metalearn.training.run_folder import claim_run_folder

CONFIGS = Path(__file__).parents[1] / "configs"
SINE = str(CONFIGS / "sine" / "maml.yaml")
MINI = str(CONFIGS / "miniimagenet" / "maml_5way_1shot.yaml")
TINY = [
    "train.iterations=4",
    "train.meta_batch_size=2",
    "train.checkpoint_every=2",
    "train.plot=false",
    "train.tensorboard=false",
    "validation.every=2",
    "validation.num_tasks=4",
    "test=null",
    "model.sizes=[1, 8, 1]",
    "learner.vectorize=loop",
]


def overrides(*extra: str) -> list[str]:
    return [arg for o in (*TINY, *extra) for arg in ("-o", o)]


def train_args(run: Path, *extra: str, flags: tuple[str, ...] = ()) -> list[str]:
    return ["train", SINE, "--run-dir", str(run), "--no-progress", *flags, *overrides(*extra)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny sine run (4 iterations) to copy, resume and evaluate."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(train_args(run)) == 0
    return run


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class Hostile:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


# -- the cases: each sets up files under tmp (and may use a copy of a finished run at tmp/run) --
def truncated_pickle(tmp, run):
    data = pickle.dumps({"image_data": np.zeros((4, 84, 84, 3), np.uint8), "class_dict": {}})
    (tmp / "mini").mkdir()
    (tmp / "mini" / "mini-imagenet-cache-train.pkl").write_bytes(data[: len(data) // 2])
    return ["data", "prepare", "miniimagenet", str(tmp / "mini")], "mini-imagenet-cache-train.pkl"


def learn2learn_three_classes(tmp, run):
    (tmp / "mini").mkdir()
    for split in ("train", "validation", "test"):
        data = {
            "image_data": np.zeros((12, 84, 84, 3), np.uint8),
            "class_dict": {f"n0{i}": list(range(4 * i, 4 * i + 4)) for i in range(3)},
        }
        with (tmp / "mini" / f"mini-imagenet-cache-{split}.pkl").open("wb") as f:
            pickle.dump(data, f)
    args = ["train", MINI, "--run-dir", str(tmp / "new"), "--no-progress"]
    args += ["-o", f"data.root={tmp / 'mini'}", "-o", "data.check_classes=false"]
    return args, "n_way"


def learn2learn_text_rows(tmp, run):
    (tmp / "mini").mkdir()
    data = {"image_data": np.zeros((4, 84, 84, 3), np.uint8), "class_dict": {"n01": ["a", "b"]}}
    with (tmp / "mini" / "mini-imagenet-cache-train.pkl").open("wb") as f:
        pickle.dump(data, f)
    return ["data", "prepare", "miniimagenet", str(tmp / "mini")], "mini-imagenet-cache-train.pkl"


def decompression_bomb_png(tmp, run):
    # A PNG whose header claims 30000 x 30000 pixels: Pillow refuses it before decoding.
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    folder = tmp / "mini" / "train" / "n01"
    folder.mkdir(parents=True)
    (folder / "bomb.png").write_bytes(png)
    return ["data", "prepare", "miniimagenet", str(tmp / "mini")], "bomb.png"


def corrupt_checkpoint(tmp, run):
    (run / "checkpoint.pt").write_bytes(b"\x80\x02 not a checkpoint at all")
    return ["evaluate", str(run / "checkpoint.pt")], "checkpoint.pt"


def hostile_checkpoint(tmp, run):
    torch.save({"learner": Hostile()}, run / "best.pt")
    return ["evaluate", str(run)], "best.pt"


def cross_entropy_on_sine(tmp, run):
    return train_args(tmp / "new", "learner.loss=cross_entropy"), "learner.loss"


def model_input_too_wide(tmp, run):
    return train_args(tmp / "new", "model.sizes=[2, 8, 1]"), "model"


def model_output_too_wide(tmp, run):
    return train_args(tmp / "new", "model.sizes=[1, 8, 3]"), "model"


def step_schedule_without_step_size(tmp, run):
    return train_args(tmp / "new", "scheduler={name: step}"), "scheduler.step_size"


def evaluate_override_typo(tmp, run):
    return ["evaluate", str(run), "-o", "learner.inner_lrr=0.1"], "learner.inner_lrr"


def evaluate_zero_tasks(tmp, run):
    return ["evaluate", str(run), "--num-tasks", "0"], "--num-tasks"


def missing_config(tmp, run):
    return ["train", str(tmp / "nope.yaml")], "nope.yaml"


def resume_corrupt_checkpoint(tmp, run):
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    return train_args(run, flags=("--resume",)), "checkpoint.pt"


def resume_without_rng(tmp, run):
    state = load_checkpoint(run / "checkpoint.pt")
    del state["rng"]
    save_checkpoint(state, run / "checkpoint.pt")
    return train_args(run, flags=("--resume",)), "rng"


def resume_as_fomaml(tmp, run):
    return train_args(run, "learner.name=FOMAML", flags=("--resume",)), "learner.name"


def resume_other_inner_lr(tmp, run):
    return train_args(run, "learner.inner_lr=0.02", flags=("--resume",)), "learner.inner_lr"


def resume_other_seed(tmp, run):
    return train_args(run, "seed=3", flags=("--resume",)), "seed"


def resume_other_data(tmp, run):
    return train_args(run, "data.amplitude=[1.0, 2.0]", flags=("--resume",)), "data.amplitude"


def resume_with_sgd(tmp, run):
    return train_args(run, "optimizer.name=sgd", flags=("--resume",)), "optimizer.name"


def allow_changes_without_resume(tmp, run):
    return [*train_args(tmp / "new"), "--allow-changes", "seed"], "--allow-changes"


def users_config_in_folder(tmp, run):
    (tmp / "new").mkdir()
    (tmp / "new" / "config.yaml").write_text("my own notes: keep\n")
    return train_args(tmp / "new"), "config.yaml"


def users_files_in_folder(tmp, run):
    (tmp / "new").mkdir()
    (tmp / "new" / "notes.txt").write_text("keep me\n")
    return train_args(tmp / "new"), "notes.txt"


def users_metrics_in_folder(tmp, run):
    (tmp / "new").mkdir()
    (tmp / "new" / "metrics.jsonl").write_text('{"mine": 1}\n')
    return train_args(tmp / "new"), "metrics.jsonl"


def existing_run_without_resume(tmp, run):
    return train_args(run), "--resume"


CASES = [
    truncated_pickle,
    learn2learn_text_rows,
    decompression_bomb_png,
    learn2learn_three_classes,
    corrupt_checkpoint,
    hostile_checkpoint,
    cross_entropy_on_sine,
    model_input_too_wide,
    model_output_too_wide,
    step_schedule_without_step_size,
    evaluate_override_typo,
    evaluate_zero_tasks,
    missing_config,
    resume_corrupt_checkpoint,
    resume_without_rng,
    resume_as_fomaml,
    resume_other_inner_lr,
    resume_other_seed,
    resume_other_data,
    resume_with_sgd,
    allow_changes_without_resume,
    users_config_in_folder,
    users_files_in_folder,
    users_metrics_in_folder,
    existing_run_without_resume,
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    case, finished_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a hostile file that ran would leave "pwned" here
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    args, names = case(tmp_path, run)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metalearn "), err
    assert names in err, err
    assert "Traceback" not in err and "weights_only=False" not in err
    after = snapshot(tmp_path)
    # Nothing that existed changed; at most the (empty) lock of a refused run folder appeared.
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(Path(k).name == ".metalearn.lock" for k in after.keys() - before.keys())
    assert not (tmp_path / "pwned").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "evaluate", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("does not exist")


def test_an_internal_error_exits_3(monkeypatch, capsys):
    import metalearn.training.plot as plot

    monkeypatch.setattr(plot, "plot_run", lambda run_dir: {}["bug"])
    assert main(["plot", "somewhere"]) == 3
    err = capsys.readouterr().err
    assert "internal error (KeyError" in err and "--debug" in err and err.count("\n") == 1


def test_a_folder_in_use_is_refused(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with claim_run_folder(run):
        assert main(train_args(run, "train.iterations=6", flags=("--resume",))) == 2
    assert "in use by another run (pid" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoint.pt")["iteration"] == 4


def test_resume_accepts_listed_changes_and_records_them(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    # A write killed mid-way leaves a temporary file; the next run owning the folder removes it.
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    changed = ("train.iterations=6", "learner.inner_lr=0.02", "optimizer.name=sgd")
    flags = ("--resume", "--allow-changes", "learner.inner_lr", "optimizer")
    assert main(train_args(run, *changed, flags=flags)) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["iteration"] == 6
    assert state["metadata"]["config"]["learner"]["inner_lr"] == 0.02
    (record,) = state["metadata"]["changes"]
    assert "learner.inner_lr: 0.01 -> 0.02" in record and "'adam' -> 'sgd'" in record
    assert "from iteration 4" in record
    assert (run / "config.yaml").read_text().startswith("# resumed with changes: ")
    assert not (run / ".checkpoint.pt.abc123.tmp").exists()


def test_resume_may_extend_a_run_and_point_to_moved_data(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main(train_args(run, "train.iterations=6", "device=cpu", flags=("--resume",))) == 0
    assert load_checkpoint(run / "checkpoint.pt")["iteration"] == 6


def test_an_earlier_start_without_checkpoint_restarts_with_resume(tmp_path, capsys):
    run = tmp_path / "run"
    # Diverges at iteration 1, before any checkpoint: config.yaml and metrics.jsonl remain.
    diverging = ("optimizer.lr=1e30", "train.checkpoint_every=10")
    assert main(train_args(run, *diverging)) == 1
    assert (run / "config.yaml").exists() and not (run / "checkpoint.pt").exists()
    capsys.readouterr()
    assert main(train_args(run, *diverging)) == 2
    assert "pass --resume to start it over" in capsys.readouterr().err
    # Another config may not take the folder over; the same one starts over with --resume.
    assert main(train_args(run, "optimizer.lr=1e-3", flags=("--resume",))) == 2
    assert "is not this config" in capsys.readouterr().err
    assert main(train_args(run, *diverging, flags=("--resume",))) == 1


def test_evaluate_counts_the_tasks_that_diverged(finished_run, monkeypatch, capsys):
    import metalearn.training.experiment as experiment
    from metalearn.training import Evaluation

    loss = torch.tensor([[1.0, 0.5], [1.0, float("nan")], [2.0, float("inf")], [1.0, 0.2]])
    result = Evaluation((0, 1), {"loss": loss.double()})
    monkeypatch.setattr(experiment, "evaluate_checkpoint", lambda *a, **k: (result, None))
    assert main(["evaluate", str(finished_run)]) == 0
    captured = capsys.readouterr()
    assert "nan" in captured.out
    assert "2 of 4 tasks gave NaN or infinite metrics" in captured.err
