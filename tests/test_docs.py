"""The documentation site builds with ``mkdocs build --strict`` (links and docstrings checked)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed")
def test_docs_build_strictly(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("metalearn.training.Trainer", "metalearn.algorithms.MAML", "metalearn.tasks.Sine"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    for page in ("getting_started", "concepts", "training", "cli", "results", "architecture"):
        assert (site / page / "index.html").is_file(), page
