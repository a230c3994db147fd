"""Speed against peak memory of glibc allocator settings, for a user's plain Conv-4 under MAML.

MiniImagenet 5-way 1-shot, 15 queries, 5 inner steps (the ``miniimagenet`` workload of
``bench_maml.py``), the user's own ``nn.Module`` trained by metalearn's MAML, and learn2learn
in its users' idiom beside it. Each setting runs in a fresh process on one thread; time is CPU
time per meta-step (``time.process_time``: robust on a shared machine, where wall time is not),
memory the process's peak RSS. Settings:

- ``default``: glibc as it comes (large blocks are mmapped until one is freed; the free top of
  the heap is handed back to the OS once it exceeds twice the largest freed block);
- ``tuned``: ``ml.tune_cpu_allocator()``, what the ``Trainer`` applies on CPU: the mmap
  threshold fixed at 32 MiB (glibc's largest), no trim, so blocks under 32 MiB are reused and
  larger ones still go back to the OS;
- ``no-mmap``: no mmap at all and no trim (every block reused from the heap: the tuning before
  2026-12-03);
- ``no-mmap+trim``: ``no-mmap``, and ``malloc_trim(0)`` after every meta-step (is the extra
  memory of ``no-mmap`` left over between steps, or taken within one?).

Run: ``python benchmarks/allocator_tradeoff.py [--meta-batch 4] [--steps 5]``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

SETTINGS = ("default", "tuned", "no-mmap", "no-mmap+trim")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def child(setting: str, impl: str, meta_batch: int, steps: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_maml as bench
    import torch

    import metalearn as ml

    torch.set_num_threads(1)
    libc = ctypes.CDLL(None)
    if setting == "tuned":
        ml.tune_cpu_allocator()
    elif setting.startswith("no-mmap"):
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    workload = replace(bench.WORKLOADS["miniimagenet"], meta_batch=meta_batch)
    implementation = bench.IMPLEMENTATIONS[impl](workload, torch.device("cpu"))
    batch = workload.batch(torch.device("cpu"))
    implementation.prepare(batch)
    bench.reset_peak_rss()
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.process_time()
        implementation.step(batch)
        if setting == "no-mmap+trim":
            libc.malloc_trim(0)
        times.append(time.process_time() - start)
    return {"cpu_s": statistics.median(times[1:]), "peak_mib": bench.peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed meta-steps per setting")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.meta_batch, args.steps)))
        return
    rows = [(s, "metalearn+own-model") for s in SETTINGS] + [("default", "learn2learn")]
    results = {}
    for setting, impl in rows:
        command = [sys.executable, __file__, "--child", setting, impl]
        command += ["--meta-batch", str(args.meta_batch), "--steps", str(args.steps)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[setting, impl] = json.loads(out.splitlines()[-1])
    reference = results["default", "learn2learn"]
    print(
        "| implementation | allocator | CPU s / step | peak MiB | speed vs learn2learn "
        "| memory vs learn2learn |\n|---|---|---:|---:|---:|---:|"
    )
    for (setting, impl), r in results.items():
        speed = reference["cpu_s"] / r["cpu_s"]
        memory = r["peak_mib"] / reference["peak_mib"]
        print(
            f"| {impl} | {setting} | {r['cpu_s']:.2f} | {r['peak_mib']:.0f} | {speed:.2f}x | "
            f"{memory:.2f}x |"
        )


if __name__ == "__main__":
    main()
