"""Sine-wave regression with ANIL (Raghu et al. 2019): only the last layer adapts.

ANIL's paper reports few-shot classification (MiniImagenet, Omniglot) with MAML's protocol and
the head as the only adapted layer; on sine we use MAML's protocol unchanged (MLP 1-40-40-1,
K=10, meta-batch 25, one inner step of lr 0.01, Adam 1e-3, 70,000 iterations in the paper;
evaluation on 600 test tasks after 0, 1 and 10 steps). With ``--compare`` MAML is trained
alongside for the same iterations, so the cost of adapting the head alone is visible.

Run:  python examples/sine_anil.py --iterations 5000 --compare
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import metalearn as ml

STEPS = (0, 1, 10)


def main(argv: list[str] | None = None) -> dict[str, ml.Evaluation]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=70000)
    parser.add_argument("--meta-batch", type=int, default=25)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--meta-lr", type=float, default=1e-3)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--compare", action="store_true", help="train MAML too")
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("func", "higher"), default="func")
    parser.add_argument("--out", type=Path, default=Path("outputs/sine_anil"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest for this tiny MLP")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    kinds = {"ANIL": ml.ANIL, **({"MAML": ml.MAML} if args.compare else {})}
    results = {}
    for name, cls in kinds.items():
        torch.manual_seed(args.seed)
        learner = cls(
            ml.models.MLP([1, 40, 40, 1]),
            F.mse_loss,
            args.inner_lr,
            args.inner_steps,
            first_order=args.first_order,
            backend=args.backend,
        )
        optimizer = torch.optim.Adam(learner.parameters(), lr=args.meta_lr)
        ml.train(
            learner,
            ml.tasks.Sine(10, 10),
            optimizer,
            args.iterations,
            args.meta_batch,
            seed=args.seed,
            progress=not args.no_progress,
        )
        test_tasks = ml.tasks.Sine(10, 100, query_grid=True)
        results[name] = ml.evaluate(learner, test_tasks, args.test_tasks, STEPS, seed=10_000)
        print(f"{name}, {args.iterations} iterations (MSE):\n{results[name]}")
    args.out.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(f"{name}\n{result}" for name, result in results.items())
    (args.out / "results.md").write_text(f"{args.iterations} iterations\n\n{text}\n")
    return results


if __name__ == "__main__":
    main()
