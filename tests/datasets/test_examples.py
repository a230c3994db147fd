"""The few-shot examples run end to end (2 iterations, 3 test tasks) on tiny generated data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from fewshot_fakes import write_omniglot


def write_tiny_miniimagenet(root: Path, classes: int = 5, per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "validation", "test"):
        data = rng.integers(0, 256, (classes * per_class, 84, 84, 3), dtype=np.uint8)
        class_dict = {
            f"n{split[:2]}{c:06d}": list(range(c * per_class, (c + 1) * per_class))
            for c in range(classes)
        }
        with (root / f"mini-imagenet-cache-{split}.pkl").open("wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f)


COMMON = ["--iterations", "2", "--test-tasks", "2", "--no-class-check", "--no-progress"]
COMMON += ["--hidden", "4", "--meta-batch", "2", "--queries", "1", "--test-steps", "1"]


def test_miniimagenet_example_runs(tmp_path, capsys, load_example):
    write_tiny_miniimagenet(tmp_path)
    argv = ["--root", str(tmp_path), "--inner-steps", "1", *COMMON]
    result = load_example("miniimagenet_maml").main(argv)
    assert result.num_tasks == 2 and result.steps == (1,)
    assert "accuracy" in capsys.readouterr().out


def test_miniimagenet_example_defaults_follow_the_paper(load_example):
    args = load_example("miniimagenet_maml").parse(["--root", "x"])
    assert (args.shots, args.ways, args.queries, args.inner_steps, args.test_steps) == (
        1, 5, 15, 5, 10
    )  # fmt: skip
    assert (args.inner_lr, args.lr, args.hidden, args.iterations, args.test_tasks) == (
        0.01, 1e-3, 32, 60_000, 600
    )  # fmt: skip


@pytest.mark.parametrize("ways", [2])
def test_omniglot_example_runs(tmp_path, capsys, ways, load_example):
    write_omniglot(tmp_path)
    argv = ["--root", str(tmp_path), "--ways", str(ways), "--inner-steps", "1", *COMMON]
    result = load_example("omniglot_maml").main(argv)
    assert result.num_tasks == 2
    assert "Omniglot 2-way 1-shot" in capsys.readouterr().out


@pytest.mark.parametrize("algorithm", ["fomaml", "anil", "metasgd", "mamlpp", "reptile"])
def test_miniimagenet_example_runs_every_algorithm(tmp_path, algorithm, load_example):
    write_tiny_miniimagenet(tmp_path)
    module = load_example("miniimagenet_maml")
    argv = ["--root", str(tmp_path), "--algorithm", algorithm, "--inner-steps", "1", *COMMON]
    result = module.main(argv)
    assert result.num_tasks == 2
    args = module.parse(["--root", "x", "--algorithm", algorithm])
    expected = {**module.MAML_DEFAULTS, **module.PAPER_DEFAULTS[algorithm]}
    assert all(getattr(args, k) == v for k, v in expected.items())
