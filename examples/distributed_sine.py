"""Data-parallel MAML on sine regression, on one or several processes, CPUs or GPUs.

Run it alone or under torchrun; the run (tasks, losses, weights) is the same for any number of
processes that divides the meta-batch::

    python examples/distributed_sine.py --iterations 200
    python -m torch.distributed.run --nproc_per_node 2 examples/distributed_sine.py --iterations 200
    torchrun --nproc_per_node 4 examples/distributed_sine.py          # 4 GPUs: NCCL, one per rank

Only rank 0 prints and writes the checkpoint (``--out``). See docs/distributed.md.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import metalearn as ml
from metalearn.training import distributed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--meta-batch-size", type=int, default=24, help="over all ranks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    parser.add_argument("--timeout", type=float, default=600.0, help="collective timeout, s")
    parser.add_argument("--out", default=None, help="checkpoint path (written by rank 0)")
    args = parser.parse_args()

    info = distributed.init_distributed(args.backend, timeout=args.timeout)
    try:
        torch.manual_seed(args.seed)  # rank 0's weights are broadcast to the others anyway
        learner = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01).to(info.device)
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)

        def log(iteration: int, metrics: dict[str, float]) -> None:
            if info.is_main and (iteration + 1) % 50 == 0:
                print(
                    f"iteration {iteration + 1}: meta-loss {metrics['meta_loss']:.4f}", flush=True
                )

        start = time.perf_counter()
        ml.train(
            learner,
            ml.tasks.Sine(k_shot=10, k_query=10),
            optimizer,
            args.iterations,
            args.meta_batch_size,
            seed=args.seed,
            progress=False,
            callback=log,
            distributed=True,  # the rank-invariant task stream, also on a single process
        )
        seconds = time.perf_counter() - start
        if info.is_main:
            rate = args.iterations * args.meta_batch_size / seconds
            print(f"{info.world_size} process(es), {info.device}: {rate:.1f} tasks/s")
            if args.out:
                torch.save(
                    {"learner": learner.state_dict(), "iterations": args.iterations}, args.out
                )
            test = ml.evaluate(learner, ml.tasks.Sine(10, 100, query_grid=True), num_tasks=100)
            print(test)
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main()
