"""tune_cpu_allocator: freed blocks under 32 MiB are reused; larger ones go back to the OS."""

import platform
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import metalearn as ml

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# In one child (one torch import): glibc's bytes in mmapped blocks (mallinfo2) grow when a
# 24 MiB tensor is allocated with glibc as it comes (mmap threshold 128 KiB until a block is
# freed, then the largest freed block: 24 MiB); after tuning, a 30 MiB tensor comes from the
# heap and a 64 MiB one is mmapped. Then 20 rounds of three 16 MiB tensors, allocated,
# touched and freed, and the minor page faults of the last 10 (no trim: the heap is reused);
# last, the resident memory before, during and after a 64 MiB tensor (unmapped when freed).
CHILD = textwrap.dedent(
    """
    import ctypes, resource, torch
    import metalearn as ml
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    def mmapped_mib(numel):
        before = libc.mallinfo2().hblkhd
        x = torch.ones(numel)
        return (libc.mallinfo2().hblkhd - before) / 2**20
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    plain = mmapped_mib(6 * 2**20)
    assert ml.tune_cpu_allocator()
    under, over = mmapped_mib(int(7.5 * 2**20)), mmapped_mib(16 * 2**20)
    for i in range(20):
        if i == 10:
            start = faults()
        blocks = [torch.ones(4 * 2**20) for _ in range(3)]
        del blocks
    reuse = faults() - start
    before = rss_mib()
    large = torch.ones(16 * 2**20)
    during = rss_mib()
    del large
    print(plain, under, over, reuse, before, during, rss_mib())
    """
)


@pytest.fixture(scope="module")
def child() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    names = ["plain", "under", "over", "reuse", "before", "during", "after"]
    return dict(zip(names, map(float, out.stdout.split()[-len(names) :]), strict=True))


def test_is_idempotent_and_reports_whether_it_applies():
    assert ml.tune_cpu_allocator() is GLIBC
    assert ml.tune_cpu_allocator() is GLIBC


HAS_MALLINFO2 = GLIBC and tuple(map(int, platform.libc_ver()[1].split("."))) >= (2, 33)


@pytest.mark.skipif(not HAS_MALLINFO2, reason="glibc >= 2.33 (mallinfo2) only")
def test_blocks_under_32_mib_come_from_the_heap_and_larger_ones_from_mmap(child):
    assert child["plain"] == pytest.approx(24, abs=0.1)  # glibc as it comes: mmapped
    assert child["under"] == 0  # tuned: a 30 MiB block from the heap
    assert child["over"] == pytest.approx(64, abs=0.1)  # a 64 MiB one still mmapped


@pytest.mark.skipif(not HAS_MALLINFO2, reason="glibc >= 2.33 (mallinfo2) only")
def test_freed_heap_memory_is_reused_and_large_blocks_go_back_to_the_os(child):
    assert child["reuse"] < 1_000  # 48 MiB a round would be 12,288 faults of 4 KiB pages
    assert child["during"] - child["before"] > 60  # the 64 MiB tensor was resident
    assert child["after"] - child["before"] < 4  # and freeing it returned it


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
