"""tune_cpu_allocator: freed memory is reused instead of faulted in again."""

import platform
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import metalearn as ml

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Allocate, touch and free a 64 MiB tensor (over glibc's largest mmap threshold) 20 times and
# print the minor page faults of the last 10 rounds: first with glibc's defaults, then, in the
# same child (one torch import), after tuning the allocator, as the Trainer does mid-process.
FAULTS = textwrap.dedent(
    """
    import resource, torch
    import metalearn as ml
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def rounds():
        for i in range(20):
            if i == 10:
                start = faults()
            torch.ones(16 * 2**20).sum()
        return faults() - start
    plain = rounds()
    assert ml.tune_cpu_allocator()
    print(plain, rounds())
    """
)


def _faults() -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True)
    plain, tuned = out.stdout.split()[-2:]
    return int(plain), int(tuned)


def test_is_idempotent_and_reports_whether_it_applies():
    assert ml.tune_cpu_allocator() is GLIBC
    assert ml.tune_cpu_allocator() is GLIBC


@pytest.mark.skipif(not GLIBC, reason="glibc malloc only")
def test_large_blocks_are_reused_without_page_faults():
    plain, tuned = _faults()
    assert plain > 10 * 16_000  # every round faults its 64 MiB (4 KiB pages) in again
    assert tuned < 1_000


def test_trainer_tunes_the_allocator_on_cpu_unless_told_not_to(monkeypatch):
    import metalearn.training.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "tune_cpu_allocator", lambda: calls.append(1))
    learner = ml.MAML(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.1)
    opt = torch.optim.SGD(learner.parameters(), 0.1)
    sampler = ml.tasks.Sine(2, 2)
    ml.Trainer(learner, sampler, opt, iterations=1, meta_batch_size=1, progress=False)
    assert calls == [1]
    ml.Trainer(
        learner, sampler, opt, iterations=1, meta_batch_size=1, progress=False,
        tune_allocator=False,
    )  # fmt: skip
    assert calls == [1]
