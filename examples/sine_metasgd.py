"""Sine-wave regression with Meta-SGD (Li et al. 2017): learned per-parameter inner rates.

Meta-SGD's sine experiment uses MAML's setup (MLP 1-40-40-1, amplitude in [0.1, 5], phase in
[0, pi], x in [-5, 5]) with one inner step whose learning rates (one per parameter entry) are
meta-learned together with the initialisation; K=5, 10 and 20 shots. Here: K=10 by default,
meta-batch 25, Adam 1e-3, rates initialised to 0.01; evaluation after 0, 1 and 10 steps on 600
test tasks (steps beyond the first reuse the learned rates). Prints the learned rates' range.

Run:  python examples/sine_metasgd.py --iterations 5000 --k-shot 5
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
    parser.add_argument("--iterations", type=int, default=70000)
    parser.add_argument("--k-shot", type=int, default=10)
    parser.add_argument("--meta-batch", type=int, default=25)
    parser.add_argument("--inner-lr", type=float, default=0.01, help="initial learned rate")
    parser.add_argument("--meta-lr", type=float, default=1e-3)
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("func", "higher"), default="func")
    parser.add_argument("--out", type=Path, default=Path("outputs/sine_metasgd"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest for this tiny MLP")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    metasgd = ml.MetaSGD(
        ml.models.MLP([1, 40, 40, 1]), F.mse_loss, args.inner_lr, 1, backend=args.backend
    )
    optimizer = torch.optim.Adam(metasgd.parameters(), lr=args.meta_lr)  # phi and the rates
    ml.train(
        metasgd,
        ml.tasks.Sine(args.k_shot, 10),
        optimizer,
        args.iterations,
        args.meta_batch,
        seed=args.seed,
        progress=not args.no_progress,
    )
    test_tasks = ml.tasks.Sine(args.k_shot, 100, query_grid=True)
    result = ml.evaluate(metasgd, test_tasks, args.test_tasks, STEPS, seed=10_000)
    print(f"Meta-SGD, K={args.k_shot}, {args.iterations} iterations (MSE):\n{result}")
    for name, rate in metasgd.update.named_rates().items():
        print(f"  learned rate {name:<14} min {rate.min():+.4f}  max {rate.max():+.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(f"Meta-SGD, {args.iterations} iterations\n\n{result}\n")
    return result


if __name__ == "__main__":
    main()
