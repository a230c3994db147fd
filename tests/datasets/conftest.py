"""Fixtures: tiny datasets in each real on-disk layout, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PIL")
pytest.importorskip("h5py")

from fewshot_fakes import MINI_WRITERS, write_omniglot


@pytest.fixture(scope="session")
def mini_roots(tmp_path_factory) -> dict[str, Path]:
    """One root per MiniImagenet layout, each holding the same tiny dataset."""
    roots = {}
    for fmt, write in MINI_WRITERS.items():
        root = tmp_path_factory.mktemp(f"mini-{fmt}")
        write(root)
        roots[fmt] = root
    return roots


@pytest.fixture(scope="session")
def omniglot_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("omniglot-folders")
    write_omniglot(root)
    return root


@pytest.fixture(scope="session")
def omniglot_zip_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("omniglot-zips")
    write_omniglot(root, zipped=True)
    return root
