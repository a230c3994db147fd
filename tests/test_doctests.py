"""Every docstring example of the package runs (part of `make test`, like any other test).

Examples that need data a test run does not have are marked ``# doctest: +SKIP``; everything
else must run as written, from the repository root (configs are found as ``configs/...``).
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from pathlib import Path

import pytest

import metalearn

ROOT = Path(__file__).parents[1]
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(metalearn.__path__, "metalearn.")
    if m.name != "metalearn.__main__"  # runs the command line when imported
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module, name)
    # A name re-exported from another module is tested where it is defined.
    return [t for t in tests if t.examples and t.name.startswith(name)]


@pytest.mark.parametrize("name", ["metalearn", *MODULES])
def test_docstring_examples_run(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in examples(name):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


def test_there_are_examples_to_run():
    count = sum(len(t.examples) for name in MODULES for t in examples(name))
    assert count > 100
