"""`torchrun -m metalearn train CONFIG` on 2 CPU ranks gives the run of one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metalearn.cli import main
from metalearn.training.launch import free_port

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sine" / "maml.yaml"
OVERRIDES = [
    "train.iterations=6",
    "train.meta_batch_size=4",
    "train.checkpoint_every=3",
    "validation.every=3",
    "validation.num_tasks=8",
    "test.num_tasks=8",
    "train.plot=false",
]


def arguments(run_dir: Path) -> list[str]:
    args = ["train", str(CONFIG), "--run-dir", str(run_dir), "--no-progress"]
    return args + [a for o in OVERRIDES for a in ("--override", o)]


def run(tmp_path: Path, name: str, launcher: list[str]) -> dict:
    run_dir = tmp_path / name
    cmd = [*launcher, "-m", "metalearn", *arguments(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "test.json").read_text())


def test_torchrun_two_ranks_match_one_process(tmp_path):
    # The 1-process reference runs in this process (`python -m metalearn` as a child is
    # tests/test_cli.py's): one torch import fewer.
    threads = torch.get_num_threads()
    try:
        assert main(arguments(tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(threads)
    single = json.loads((tmp_path / "one" / "test.json").read_text())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    double = run(tmp_path, "two", torchrun)
    assert double["steps"] == single["steps"]
    assert double["metrics"]["loss"]["mean"] == pytest.approx(
        single["metrics"]["loss"]["mean"], rel=1e-4
    )
    assert not (tmp_path / "two" / "plots").exists()
