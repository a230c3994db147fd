"""Data-parallel scaling of sine MAML: meta-training tasks per second for 1, 2, ... processes.

Each world size runs in fresh processes started by ``metalearn.training.distributed.spawn``
(gloo on CPU; the same code path as torchrun), with the CPU cores split evenly between the
ranks. The global meta-batch is the same for every world size, so the runs compute the same
meta-updates; only the time differs. Prints a Markdown table::

    python benchmarks/bench_distributed.py                       # world sizes 1 and 2
    python benchmarks/bench_distributed.py --world-sizes 1 2 4 --iterations 50
    python benchmarks/bench_distributed.py --threads 1            # one thread per process
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.training import distributed


def _run(info: distributed.RankInfo, config: dict) -> dict:
    torch.manual_seed(0)
    learner = ml.MAML(
        ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01, inner_steps=config["steps"]
    ).to(info.device)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    stream = distributed.TaskStream(
        ml.tasks.Sine(k_shot=10, k_query=10), config["meta_batch_size"], seed=0
    )
    distributed.broadcast_parameters(learner)

    def step(iteration: int) -> None:
        out = learner(stream.sample(iteration).to(info.device))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        distributed.average_gradients(learner)
        optimizer.step()

    for it in range(config["warmup"]):
        step(it)
    rates = []
    for repeat in range(config["repeats"]):
        distributed.barrier()
        start = time.perf_counter()
        for it in range(config["iterations"]):
            step(config["warmup"] + repeat * config["iterations"] + it)
        distributed.barrier()
        seconds = time.perf_counter() - start
        rates.append(config["iterations"] * config["meta_batch_size"] / seconds)
    return {"rates": rates, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--meta-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1, help="inner steps")
    parser.add_argument("--iterations", type=int, default=20, help="timed meta-updates/repeat")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per process (default cores/N)"
    )
    args = parser.parse_args()
    config = {k: getattr(args, k) for k in ("meta_batch_size", "steps", "iterations")}
    config.update(warmup=args.warmup, repeats=args.repeats)
    cores = os.cpu_count() or 1
    print(
        f"sine MAML, MLP [1, 40, 40, 1], meta-batch {args.meta_batch_size}, "
        f"{args.steps} inner step(s), gloo on CPU; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {cores} cores"
    )
    print("\n| processes | threads/process | tasks/s (median) | speed-up |")
    print("|---|---|---|---|")
    base = None
    for size in args.world_sizes:
        threads = args.threads or max(1, cores // size)
        results = distributed.spawn(_run, size, (config,), num_threads=threads, timeout=300.0)
        rate = statistics.median(results[0]["rates"])
        base = base or rate
        print(f"| {size} | {threads} | {rate:.0f} | {rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
