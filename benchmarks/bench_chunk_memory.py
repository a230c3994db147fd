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

``--sampled`` measures the looped path instead, as a user trains it: the ``Trainer`` draws
MiniImagenet-shaped tasks (5-way 1-shot, 15 queries, 84x84 RGB) from an ``ml.tasks.FewShot``
over an in-memory ``uint8`` dataset (64 classes of 20 random images, 27 MB), the meta-batch
at 1 and 32, ``ml.models.Conv4`` with 32 filters, 5 steps of 0.01, the Trainer's allocator
tuning. With ``chunk_size`` the sampler reads each chunk's images when its turn comes
(``FewShot.sample_chunks``), so a meta-batch of 32 holds one task's images, not 32 (217 MB).
Every cell trains on 32 tasks (32 steps at meta-batch 1, one at 32): the peak over all of
them.

Run: ``python benchmarks/bench_chunk_memory.py [--meta-batch 16] [--steps 2] [--sampled]``
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
SAMPLED = ((1, 0), (32, 0), (32, 1))  # (meta-batch, chunk_size) of the --sampled rows


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


def sampled_child(meta_batch: int, chunk: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_maml as bench
    import numpy as np
    import torch

    import metalearn as ml

    torch.set_num_threads(1)
    workload = bench.WORKLOADS["miniimagenet"]
    rng = np.random.default_rng(0)
    size = workload.image_size
    images = ml.datasets.ImageClasses.from_labels(
        rng.integers(0, 256, (64 * 20, size, size, workload.channels), dtype=np.uint8),
        np.repeat(np.arange(64), 20),
    )
    tasks = ml.tasks.FewShot(images, workload.n_way, workload.k_shot, workload.k_query)
    torch.manual_seed(0)
    learner = ml.MAML(
        workload.metalearn_model(), workload.loss, workload.inner_lr, workload.inner_steps
    )
    steps = 32 // meta_batch
    trainer = ml.Trainer(
        learner, tasks, torch.optim.Adam(learner.parameters(), 1e-3), iterations=steps,
        meta_batch_size=meta_batch, chunk_size=chunk or None, progress=False,
    )  # fmt: skip
    before = bench.current_rss_mib()
    bench.reset_peak_rss()
    for _ in range(steps):
        trainer.step()
    return {"peak_mib": bench.peak_rss_mib(), "before_mib": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed meta-steps per setting")
    parser.add_argument(
        "--sampled", action="store_true", help="the looped path on sampled MiniImagenet tasks"
    )
    parser.add_argument("--child", nargs=2, metavar=("VECTORIZE", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and args.sampled:
        print(json.dumps(sampled_child(args.meta_batch, int(args.child[1]))))
        return
    if args.child:
        vectorize, chunk = args.child[0], int(args.child[1])
        print(json.dumps(child(vectorize, chunk, args.meta_batch, args.steps)))
        return
    if args.sampled:
        print(
            "| meta-batch | chunk_size | peak MiB | before the first step (MiB) |\n"
            "|---:|---:|---:|---:|"
        )
        for meta_batch, chunk in SAMPLED:
            command = [sys.executable, __file__, "--sampled", "--child", "loop", str(chunk)]
            out = subprocess.run(
                [*command, "--meta-batch", str(meta_batch)], capture_output=True, text=True,
                check=True,
            ).stdout  # fmt: skip
            r = json.loads(out.splitlines()[-1])
            print(
                f"| {meta_batch} | {chunk or 'none'} | {r['peak_mib']:.0f} | "
                f"{r['before_mib']:.0f} |",
                flush=True,
            )
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
