"""Sine-wave regression with Reptile (Nichol, Achiam, Schulman 2018).

Reptile's own sine demo (OpenAI's reference script for the paper) adapts with plain SGD
(inner lr 0.02) for one epoch of 10-point minibatches over 50 points per task (5 steps), and
moves phi toward the adapted weights with an outer step size of 0.1 annealed linearly to 0, one
task per iteration, for 30,000 iterations. Here the inner loop takes 5 full-batch steps on the
K=10 support points, so that evaluation follows MAML's protocol (600 test tasks, MSE on 100
evenly spaced x after 0, 1 and 10 steps, mean ± 95% CI) and compares with the other learners.
The outer update is ``torch.optim.SGD(lr=epsilon)`` on Reptile's meta-loss, which is exactly
the Reptile step; the linear annealing is a ``LambdaLR`` schedule.

Run:  python examples/sine_reptile.py                    # 30,000 iterations, a minute or two
      python examples/sine_reptile.py --inner-optimizer adam --inner-lr 0.001
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import metalearn as ml

STEPS = (0, 1, 10)


def main(argv: list[str] | None = None) -> ml.Evaluation:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=30000)
    parser.add_argument("--meta-batch", type=int, default=1, help="tasks per outer step")
    parser.add_argument("--inner-lr", type=float, default=0.02)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--inner-optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--epsilon", type=float, default=0.1, help="outer step size at start")
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("func", "higher"), default="func")
    parser.add_argument("--out", type=Path, default=Path("outputs/sine_reptile"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest for this tiny MLP")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    reptile = ml.Reptile(
        ml.models.MLP([1, 40, 40, 1]),
        F.mse_loss,
        inner_lr=args.inner_lr,
        inner_steps=args.inner_steps,
        update=(
            ml.updates.adam(args.inner_lr, betas=(0.0, 0.999))
            if args.inner_optimizer == "adam"
            else ml.updates.sgd(args.inner_lr)
        ),
        backend=args.backend,
    )
    optimizer = torch.optim.SGD(reptile.parameters(), lr=args.epsilon)
    # epsilon annealed linearly to 0 over training, as in the paper.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 1.0 - i / max(1, args.iterations)
    )
    ml.train(
        reptile,
        ml.tasks.Sine(k_shot=10, k_query=10),
        optimizer,
        args.iterations,
        args.meta_batch,
        seed=args.seed,
        progress=not args.no_progress,
        callback=lambda *_: schedule.step(),
    )
    test_tasks = ml.tasks.Sine(k_shot=10, k_query=100, query_grid=True)
    result = ml.evaluate(reptile, test_tasks, args.test_tasks, steps=STEPS, seed=10_000)
    print(f"Reptile, {args.iterations} iterations, {args.test_tasks} test tasks (MSE):\n{result}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(f"Reptile, {args.iterations} iterations\n\n{result}\n")
    return result


if __name__ == "__main__":
    main()
