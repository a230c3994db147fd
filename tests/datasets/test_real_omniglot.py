"""Real Omniglot (the release's two minimal background sets), read from ../shared/data.

These tests run where the project's shared data sits beside the checkout (CI has it) and skip
with the reason otherwise: a user's fresh clone has no ../shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn.datasets import Omniglot
from metalearn.datasets.omniglot import MINIMAL_TEST_ALPHABETS, MINIMAL_TRAIN_ALPHABETS

pytestmark = pytest.mark.real_data

PROJECT = Path(__file__).resolve().parents[2]
DATA = PROJECT / ".." / "shared" / "data" / "omniglot"
SHA256 = {
    "images_background_small1.zip": (
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"
    ),
    "images_background_small2.zip": (
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"
    ),
}
ALPHABETS = sorted(set(MINIMAL_TRAIN_ALPHABETS) | set(MINIMAL_TEST_ALPHABETS))


@pytest.fixture(scope="module")
def root() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real Omniglot not found at {DATA.resolve()} (only beside the project's CI)")
    for name, expected in SHA256.items():
        digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
        assert digest == expected, f"{DATA / name} has sha256 {digest}, expected {expected}"
    return DATA


def test_both_sets_give_242_distinct_characters(root):
    everything = Omniglot(root, alphabets=ALPHABETS, rotations=(0,))
    keys = [n.split("/", 1)[1] for n in everything.base_names]
    assert len(keys) == 242 and len(set(keys)) == 242
    assert len(everything) == 4840 and set(everything.class_sizes.tolist()) == {20}
    assert everything.alphabets == ALPHABETS
    # No two classes hold the same images (Greek and Latin are in both zips).
    digests = {hashlib.sha256(np.ascontiguousarray(everything.images(c).numpy())).hexdigest()
               for c in range(everything.num_classes)}  # fmt: skip
    assert len(digests) == 242


def test_minimal_split_by_alphabet(root):
    train = Omniglot(root, "train", "minimal")
    test = Omniglot(root, "test", "minimal", rotations=(0,))
    assert len(train.base_names) == 136 and train.num_classes == 4 * 136
    assert len(test.base_names) == 106
    assert set(train.alphabets) == set(MINIMAL_TRAIN_ALPHABETS)
    assert Counter(test.class_groups) == {"Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17}
    assert not {n.split("/", 1)[1] for n in train.base_names} & {
        n.split("/", 1)[1] for n in test.base_names
    }
    x = test.images(0)
    assert x.shape == (20, 1, 28, 28) and x.max() > 0.9 and x.mean() < 0.3  # strokes are 1


def test_short_maml_run_beats_chance_and_pixels_on_unseen_alphabets(root, load_example, tmp_path):
    example = load_example("omniglot_minimal")
    common = ["--root", str(root), "--ways", "5", "--test-tasks", "100", "--curve-every", "0",
              "--protocols", "any-class", "--out", str(tmp_path), "--no-progress",
              "--threads", "1"]  # fmt: skip
    threads = torch.get_num_threads()  # the example sets the process's thread count
    try:
        pixels = example.main(["--learner", "pixel-nn", *common])["accuracy"]["any-class"]
        maml = example.main(
            ["--learner", "maml", "--iterations", "50", "--meta-batch", "8", "--queries", "2",
             "--hidden", "32", "--inner-lr", "0.4", *common]
        )["accuracy"]["any-class"]  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    # 50 iterations give ~65% here (80 gave ~70%, at 60% more time); pixels ~40%.
    assert maml["mean"] > 0.6  # chance is 0.2
    assert maml["mean"] - maml["ci95"] > pixels["mean"] + pixels["ci95"], (maml, pixels)


def test_gpu_omniglot_script_tests_a_saved_learner(root, load_example, tmp_path):
    """benchmarks/gpu_omniglot.sh with LOAD: no meta-training; each protocol in a process of
    its own, tested with 8 support copies, 30 steps and 8 query copies (here on the CPU, one
    task, a freshly initialised learner of the mirrored 20-way config)."""
    example = load_example("omniglot_minimal")
    config = PROJECT / "configs" / "omniglot_minimal" / "maml_20way_mirror.yaml"
    saved = tmp_path / "maml_20way.pt"
    args = example.parse(["--root", str(root), "--config", str(config)])
    torch.save(example.build_learner(args).state_dict(), saved)
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "TASKS": "1", "THREADS": "1", "LOAD": str(saved),
           "OUT": str(out), "PYTHON": sys.executable}  # fmt: skip
    script = PROJECT / "benchmarks" / "gpu_omniglot.sh"
    subprocess.run(["bash", str(script), str(root)], env=env, check=True, timeout=600)
    log = (out / "log.txt").read_text()
    assert f"testing the saved learner {saved}" in log
    assert "meta-training on" not in log and not (out / "om").exists()
    for protocol in ("any-class", "within-alphabet"):
        (result,) = (out / f"om_20way_{protocol}").glob("*.json")
        summary = json.loads(result.read_text())
        o = summary["options"]
        assert (o["test_support_copies"], o["test_steps"], o["test_query_copies"]) == (8, 30, 8)
        assert (o["test_tasks"], o["load"], o["device"]) == (1, str(saved), "cpu")
        assert list(summary["accuracy"]) == [protocol]
        assert f"20-way 1-shot {protocol}:" in log


def test_gpu_recipes_script_trains_tests_and_picks_the_best(root, tmp_path):
    """benchmarks/gpu_omniglot_recipes.sh with a 5-way and a 20-way recipe (here on the CPU, a
    few seconds of training, one task): each recipe's options reach its run, and the best run
    of each N (BEST=1) is tested with the copies."""
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "TASKS": "1", "THREADS": "1", "MINUTES": "0.02",
           "RECIPES": "pool m20_q1", "BEST": "1", "OUT": str(out),
           "PYTHON": sys.executable}  # fmt: skip
    script = PROJECT / "benchmarks" / "gpu_omniglot_recipes.sh"
    subprocess.run(["bash", str(script), str(root)], env=env, check=True, timeout=600)
    log = (out / "log.txt").read_text()
    assert "tests with distorted support and query copies: pool m20_q1 at" in log
    for name, ways, queries in (("pool", 5, 5), ("m20_q1", 20, 1)):
        trained = json.loads((out / name / f"maml_{ways}way.json").read_text())
        o = trained["options"]
        assert (o["mirror"], o["meta_batch"], o["device"], o["test_tasks"]) == (True, 32, "cpu", 1)
        assert (o["ways"], o["queries"]) == (ways, queries)
        assert trained["iterations_done"] >= 1 and set(trained["accuracy"]) == {
            "any-class", "within-alphabet"
        }  # fmt: skip
        for protocol in ("any-class", "within-alphabet"):
            (result,) = (out / f"{name}_{protocol}").glob("*.json")
            o = json.loads(result.read_text())["options"]
            assert (o["test_support_copies"], o["test_steps"], o["test_query_copies"]) == (8, 30, 8)
            assert o["load"] == str(out / name / f"maml_{ways}way.pt") and o["mirror"]
            assert f"{ways}-way 1-shot {protocol}:" in log


def test_gpu_recipes_script_refuses_an_unknown_recipe(root, tmp_path):
    env = {**os.environ, "RECIPES": "pool big", "OUT": str(tmp_path), "PYTHON": sys.executable}
    script = PROJECT / "benchmarks" / "gpu_omniglot_recipes.sh"
    done = subprocess.run(["bash", str(script), str(root)], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "unknown recipe big (known:" in done.stdout
    assert not (tmp_path / "pool").exists()
