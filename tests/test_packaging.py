"""The package as users install it: its dependencies and the versions it accepts."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCK = (ROOT / "requirements-dev.lock").read_text()


def lower_bound(requirement: str) -> tuple[int, ...]:
    match = re.search(r">=\s*([0-9.]+)", requirement)
    assert match, requirement
    return tuple(int(part) for part in match.group(1).split("."))


def test_the_command_line_needs_no_extra():
    # `pip install metalearn` then `metalearn train config.yaml`: the config is YAML.
    names = [re.split(r"[<>=\[ ]", d)[0].lower() for d in PROJECT["dependencies"]]
    assert "pyyaml" in names


def test_the_oldest_accepted_torch_and_python_are_the_tested_ones():
    (torch_requirement,) = [d for d in PROJECT["dependencies"] if d.startswith("torch")]
    pinned = re.search(r"^torch==([0-9.]+)", LOCK, re.M).group(1)
    assert lower_bound(torch_requirement) == tuple(int(p) for p in pinned.split("."))[:2]
    assert torch.__version__.startswith(pinned)
    python = lower_bound(PROJECT["requires-python"])
    assert sys.version_info[:2] >= python
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["target-version"] == "py{}{}".format(*python)
