"""Lake et al.'s one-shot runs, generated in the release's exact layout, and evaluate_runs."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import metalearn as ml
from metalearn.datasets import OneShotRuns

WAYS = 20


def write_runs(root, runs=3, seed=0):
    """all_runs/runXX/{training,test,class_labels.txt}; item k is a drawing of a shuffled class.

    Class j's drawing is a white page with one black 5x5 block at its own place, so drawings of
    different classes do not overlap; the test image is the training image of its class.
    """
    rng = np.random.default_rng(seed)
    truth = {}
    for r in range(1, runs + 1):
        run = root / f"run{r:02d}"
        (run / "training").mkdir(parents=True)
        (run / "test").mkdir()
        pages = []
        for j in range(WAYS):
            page = np.ones((105, 105), dtype=bool)
            row, col = divmod(j, 5)
            page[10 + 20 * row : 15 + 20 * row, 10 + 20 * col : 15 + 20 * col] = False
            pages.append(page)
            Image.fromarray(page).convert("1").save(run / "training" / f"class{j + 1:02d}.png")
        order = rng.permutation(WAYS)
        lines = []
        for k, j in enumerate(order):
            Image.fromarray(pages[j]).convert("1").save(run / "test" / f"item{k + 1:02d}.png")
            lines.append(
                f"run{r:02d}/test/item{k + 1:02d}.png run{r:02d}/training/class{j + 1:02d}.png"
            )
        (run / "class_labels.txt").write_text("\n".join(lines) + "\n")
        truth[f"run{r:02d}"] = order
    return truth


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, WAYS))
        nn.init.zeros_(self.net[1].weight)
        nn.init.zeros_(self.net[1].bias)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("zipped", [False, True])
def test_runs_layout_labels_and_evaluation(tmp_path, zipped):
    truth = write_runs(tmp_path / "all_runs")
    root = tmp_path / "all_runs"
    if zipped:
        with zipfile.ZipFile(tmp_path / "all_runs.zip", "w") as z:
            for f in sorted(root.rglob("*")):
                z.write(f, f.relative_to(tmp_path).as_posix())
        shutil.rmtree(root)
        root = tmp_path / "all_runs.zip"
    runs = OneShotRuns(root)
    assert runs.runs == ["run01", "run02", "run03"] and len(runs) == 3
    task = runs.task(1)
    assert task.support.x.shape == (1, WAYS, 1, 28, 28)
    assert torch.equal(task.support.y[0], torch.arange(WAYS))
    assert torch.equal(task.query.y[0], torch.from_numpy(truth["run02"]))
    # Test image k is the training image of its class (strokes are 1 after inverting).
    assert torch.equal(task.query.x[0], task.support.x[0, task.query.y[0]])
    assert task.support.x.max() > 0.9 and task.support.x.mean() < 0.2
    # A zero-initialised linear model: before adapting every logit ties and argmax says
    # class 0 (1 of 20 right); one step on the support moves each class's weight towards its
    # own non-overlapping drawing, so every test image is then classified right.
    maml = ml.MAML(Linear(), F.cross_entropy, inner_lr=1.0)
    before = ml.evaluate_runs(maml, runs, steps=0)
    assert before.accuracy == pytest.approx(1 / WAYS)
    after = ml.evaluate_runs(maml, runs, steps=1)
    assert after.accuracy == 1.0 and after.per_run == {r: 1.0 for r in runs.runs}
    assert after.ci95 == 0.0 and "100.00%" in str(after)


def test_malformed_runs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="runXX"):
        OneShotRuns(tmp_path)
    write_runs(tmp_path, runs=1)
    labels = tmp_path / "run01" / "class_labels.txt"
    text = labels.read_text()
    labels.write_text(text.replace("training/class01.png", "training/class99.png"))
    with pytest.raises(ValueError, match=r"class_labels.txt line \d+: class99.png"):
        OneShotRuns(tmp_path)
    labels.write_text("run01/test/item01.png\n")
    with pytest.raises(ValueError, match="line 1"):
        OneShotRuns(tmp_path)
    labels.write_text(text.replace("item01.png", "item77.png"))
    with pytest.raises(FileNotFoundError, match="item77.png"):
        OneShotRuns(tmp_path)
