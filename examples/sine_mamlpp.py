"""Sine-wave regression with MAML++ (Antoniou, Edwards, Storkey 2019).

MAML++ was evaluated on Omniglot and MiniImagenet with 5 inner steps, per-step learned inner
rates (LSLR), a multi-step loss annealed over the first epochs (MSL; 15 in the authors' code),
first-order gradients for the first 50 epochs (DA), cosine annealing of the meta learning rate
(CA) and per-step BatchNorm (BNWB). On sine we keep MAML's data protocol (MLP 1-40-40-1, K=10,
meta-batch 25, Adam 1e-3) and MAML++'s inner loop (5 steps); an "epoch" is ``--epoch-size``
iterations, MSL anneals over the first tenth of the epochs and DA is first order for the first
third. The MLP has no BatchNorm, so BNWB is off (``per_step_bn=False``). Each fix can be
switched off with its flag to see what it contributes.

Run:  python examples/sine_mamlpp.py --epochs 50
      python examples/sine_mamlpp.py --epochs 50 --no-msl --no-lslr
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import metalearn as ml

STEPS = (0, 1, 5, 10)


def main(argv: list[str] | None = None) -> ml.Evaluation:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--epoch-size", type=int, default=100, help="iterations per epoch")
    parser.add_argument("--meta-batch", type=int, default=25)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--meta-lr", type=float, default=1e-3)
    parser.add_argument("--min-meta-lr", type=float, default=1e-5)
    parser.add_argument("--no-lslr", action="store_true", help="fixed inner learning rate")
    parser.add_argument("--no-msl", action="store_true", help="last-step loss only")
    parser.add_argument("--no-da", action="store_true", help="second order from the start")
    parser.add_argument("--no-ca", action="store_true", help="constant meta learning rate")
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/sine_mamlpp"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest for this tiny MLP")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    learner = ml.MAMLPlusPlus(
        ml.models.MLP([1, 40, 40, 1]),
        F.mse_loss,
        args.inner_lr,
        args.inner_steps,
        learn_step_sizes=not args.no_lslr,
        multi_step_loss=not args.no_msl,
        msl_epochs=max(1, args.epochs // 10),
        per_step_bn=False,
        first_order_epochs=0 if args.no_da else args.epochs // 3,
        cosine_annealing=not args.no_ca,
    )
    optimizer = torch.optim.Adam(learner.parameters(), lr=args.meta_lr)
    schedule = learner.scheduler(optimizer, total_epochs=args.epochs, min_lr=args.min_meta_lr)
    tasks = ml.tasks.Sine(10, 10)
    for epoch in range(args.epochs):
        learner.set_epoch(epoch)  # MSL weights and derivative order follow the epoch
        ml.train(
            learner,
            tasks,
            optimizer,
            args.epoch_size,
            args.meta_batch,
            seed=args.seed * 100_003 + epoch,
            progress=False,
        )
        schedule.step()
        if not args.no_progress and (epoch % 10 == 0 or epoch == args.epochs - 1):
            order = "first" if learner.uses_first_order() else "second"
            print(f"epoch {epoch}: {order} order, meta lr {optimizer.param_groups[0]['lr']:.2e}")
    test_tasks = ml.tasks.Sine(10, 100, query_grid=True)
    result = ml.evaluate(learner, test_tasks, args.test_tasks, STEPS, seed=10_000)
    print(f"MAML++, {args.epochs} x {args.epoch_size} iterations (MSE):\n{result}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(f"MAML++, {args.epochs} epochs\n\n{result}\n")
    return result


if __name__ == "__main__":
    main()
