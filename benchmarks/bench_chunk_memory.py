"""Peak memory of one meta-update against ``Trainer(chunk_size=...)``, looped and vmapped.

The vmapped inner loop (the default on CUDA, and for models without convolutions) runs the
tasks of a batch as one computation and keeps the whole batch's second-order graph until the
backward, so its memory grows with the meta-batch; the looped path finishes each task's
meta-gradient before the next. ``chunk_size`` runs the batch a few tasks at a time and
accumulates the meta-gradient: the same tasks and update, the graph of one chunk. Measured on
CPU (no GPU on the development machine; on a GPU the same graphs live in device memory).

Workload: ``bench_maml.py``'s ``omniglot`` (20-way 1-shot, 5 queries, Conv-4 with 64 filters
on 28x28, 5 inner steps of 0.4), ``ml.models.Conv4`` (metalearn BatchNorm, so it can vmap),
meta-batch 16 by default. Each setting runs in a fresh process on one thread with glibc's
allocator as it comes (``tune_allocator=False``, so freed memory goes back and the peak is the
live memory's); time is CPU time per meta-step (median after a warm-up), memory the peak RSS
during the steps, and the process's memory before the first step (model, optimizer and batch).

Run: ``python benchmarks/bench_chunk_memory.py [--meta-batch 16] [--steps 2]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

SETTINGS = (("loop", 0), ("vmap", 0), ("vmap", 8), ("vmap", 4), ("vmap", 1))


def child(vectorize: str, chunk: int, meta_batch: int, steps: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_maml as bench
    import torch

    import metalearn as ml

    torch.set_num_threads(1)
    workload = replace(bench.WORKLOADS["omniglot"], meta_batch=meta_batch)
    torch.manual_seed(0)
    learner = ml.MAML(
        workload.metalearn_model(), workload.loss, workload.inner_lr, workload.inner_steps,
        vectorize=vectorize,
    )  # fmt: skip
    batch = workload.batch(torch.device("cpu"))

    class Fixed:
        def sample(self, num_tasks, generator=None):
            return batch

    trainer = ml.Trainer(
        learner, Fixed(), torch.optim.Adam(learner.parameters(), 1e-3), iterations=steps + 1,
        meta_batch_size=meta_batch, chunk_size=chunk or None, progress=False,
        tune_allocator=False,
    )  # fmt: skip
    before = bench.current_rss_mib()
    bench.reset_peak_rss()
    times = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.process_time()
        trainer.step()
        times.append(time.process_time() - start)
    return {
        "cpu_s": statistics.median(times[1:]),
        "peak_mib": bench.peak_rss_mib(),
        "before_mib": before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed meta-steps per setting")
    parser.add_argument("--child", nargs=2, metavar=("VECTORIZE", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        vectorize, chunk = args.child[0], int(args.child[1])
        print(json.dumps(child(vectorize, chunk, args.meta_batch, args.steps)))
        return
    print(
        "| inner loop | chunk_size | CPU s / step | peak MiB | growth over the batch (MiB) |\n"
        "|---|---:|---:|---:|---:|"
    )
    for vectorize, chunk in SETTINGS:
        command = [sys.executable, __file__, "--child", vectorize, str(chunk)]
        command += ["--meta-batch", str(args.meta_batch), "--steps", str(args.steps)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.splitlines()[-1])
        print(
            f"| {vectorize} | {chunk or 'none'} | {r['cpu_s']:.2f} | {r['peak_mib']:.0f} | "
            f"{r['peak_mib'] - r['before_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
