"""docs/new_algorithm.md's code runs as written, on public names only."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

import metalearn as ml

DOC = Path(__file__).resolve().parents[2] / "docs" / "new_algorithm.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_tutorial_uses_public_names_only():
    for code in blocks():
        # No private attribute or module (dunders such as super().__init__ are public).
        assert not re.search(r"\._(?!_)", code), code
        assert "metalearn.algorithms." not in code, code


def test_the_tutorial_code_runs_and_its_learners_train():
    # Every block but the evaluation-contract fragment (it names a learner and a split from
    # the surrounding text) runs in one namespace, in the page's order; the last block runs
    # metalearn.testing's checks on ProximalMAML.
    namespace: dict = {}
    runnable = [b for b in blocks() if "learner.inner(params, support" not in b]
    assert len(runnable) == len(blocks()) - 1
    for code in runnable:
        exec(compile(code, str(DOC), "exec"), namespace)
    batch = ml.tasks.Sine(5, 6).sample(4, generator=torch.Generator().manual_seed(0))
    learners = [
        namespace["ProximalMAML"](ml.models.MLP([1, 8, 1]), F.mse_loss, 0.1, 2, lam=0.5),
        namespace["ContextLearner"](ml.models.MLP([1 + 4, 8, 1]), F.mse_loss, 0.1, 2),
        namespace["AnalyticFOMAML"](ml.models.MLP([1, 8, 1]), F.mse_loss, 0.1, 2),
    ]
    for learner in learners:
        before = [p.detach().clone() for p in learner.parameters()]
        optimizer = torch.optim.SGD(learner.parameters(), lr=0.01)
        learner(batch).loss.backward()
        optimizer.step()
        moved = [not torch.equal(a, p) for a, p in zip(before, learner.parameters(), strict=True)]
        assert any(moved), type(learner).__name__
        result = ml.evaluate(learner, ml.tasks.Sine(5, 6), num_tasks=4, steps=[0, 2])
        assert result.summary("loss", steps=2)[0] >= 0
