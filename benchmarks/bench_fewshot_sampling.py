"""How long does FewShot take to sample a MiniImagenet-sized meta-batch?

Target (issue 3): 4 tasks of 5-way 1-shot with 15 queries from the 38,400-image train split
(64 classes x 600 images, 3 x 84 x 84 uint8) in < 10 ms. Measured on a synthetic dataset of
that size, held in memory and as a memory-mapped prepared cache (the page cache is warm after
the first pass, as it is during training).

    .venv/bin/python benchmarks/bench_fewshot_sampling.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import metalearn as ml
from metalearn.datasets.cache import write_cache


def bench(dataset, repeats: int, n_way: int, k_shot: int, k_query: int, tasks: int) -> list[float]:
    sampler = ml.tasks.FewShot(dataset, n_way=n_way, k_shot=k_shot, k_query=k_query)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):  # warm-up (page cache, allocator)
        sampler.sample(tasks, generator=generator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sampler.sample(tasks, generator=generator)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    classes, per_class = 64, 600
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(classes * per_class, 84, 84, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    rows = [np.flatnonzero(labels == c) for c in range(classes)]
    names = [f"n{c:08d}" for c in range(classes)]
    settings = [(5, 1, 15, 4), (5, 5, 15, 2)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(data)} images")
    with tempfile.TemporaryDirectory() as tmp:
        write_cache(Path(tmp), "miniimagenet", "train", data, rows, names, "synthetic")
        cached = ml.datasets.MiniImagenet(tmp, "train", format="cache")
        assert cached.is_memmap
        in_memory = ml.datasets.ImageClasses(data, rows, names)
        for label, dataset in (("in memory", in_memory), ("memmap cache", cached)):
            for n_way, k_shot, k_query, tasks in settings:
                t = bench(dataset, args.repeats, n_way, k_shot, k_query, tasks)
                print(
                    f"{label:13s} {tasks} tasks of {n_way}-way {k_shot}-shot + {k_query} query: "
                    f"median {statistics.median(t):6.2f} ms, p90 {np.percentile(t, 90):6.2f} ms"
                )
        del cached


if __name__ == "__main__":
    main()
