"""Fixtures of the algorithm tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Run on one intra-op thread: these tensors are tiny, and on a busy 2-core machine the
    thread hand-offs cost more than the work (a tiny Conv-4 meta-gradient measured 60 ms on one
    thread, over 1 s on two)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
