"""The documentation site builds with ``mkdocs build --strict`` (links and docstrings checked)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed")
    site = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return site


def test_docs_build_strictly(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("metalearn.training.Trainer", "metalearn.algorithms.MAML", "metalearn.tasks.Sine"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    for page in ("getting_started", "concepts", "training", "cli", "results", "architecture"):
        assert (site / page / "index.html").is_file(), page


def test_api_cross_references_link(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # The docstrings' Sphinx roles (scripts/griffe_sphinx_roles.py) become links, never text.
    literal = re.findall(r":(?:class|meth|func|attr|mod|data|exc):(?:`|<code>)", api)
    assert not literal, literal[:5]
    links = re.findall(
        r'<a class="autorefs autorefs-internal"[^>]*href="([^"]*)"><code>([^<]*)<', api
    )
    targets = {text: href for href, text in links}
    for text, anchor in [
        ("TaskBatch", "#metalearn.tasks.TaskBatch"),
        ("from_tensors", "#metalearn.tasks.TaskBatch.from_tensors"),
        ("metalearn.evaluate", "#metalearn.training.evaluate.evaluate"),
        ("Grouped", "#metalearn.tasks.Grouped"),
    ]:
        assert targets.get(text, "").endswith(anchor), (text, targets.get(text))
    assert len(links) > 80
    # A target outside metalearn is code, not a broken link.
    assert "<code>torch.Tensor.to</code>" in api


def test_api_examples_render_as_code(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # Every ">>>" line is in a highlighted code block, none runs on in a paragraph.
    assert not re.search(r"<p>[^<]*&gt;&gt;&gt;", api)
    prompts = api.count('<span class="gp">&gt;&gt;&gt; </span>')
    assert prompts > 100, prompts
    trainer = api[api.index('id="metalearn.training.Trainer"') :]
    assert trainer.index('<div class="highlight">') < trainer.index(
        'id="metalearn.training.Trainer.step"'
    )
