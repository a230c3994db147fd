"""MAML on MiniImagenet (Finn et al. 2017, section 5.2): 5-way 1-shot and 5-shot.

Paper setting: Conv-4 with 32 filters, meta-batch 4 (1-shot) or 2 (5-shot), 5 inner steps of
lr 0.01 (10 at test), 15 query images per class, Adam 1e-3, 60,000 meta-iterations; reported
accuracy 48.70 ± 1.84% (1-shot) and 63.11 ± 0.92% (5-shot) over 600 test tasks.

    python examples/miniimagenet_maml.py --root data/miniimagenet            # 1-shot
    python examples/miniimagenet_maml.py --root data/miniimagenet --shots 5  # 5-shot

Prepare the data once for fast loading: ``python -m metalearn data prepare miniimagenet ROOT``
(or ``metalearn.datasets.prepare("miniimagenet", ROOT)``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import metalearn as ml


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="folder holding MiniImagenet (any layout)")
    p.add_argument("--shots", type=int, default=1, help="K (1 or 5 in the paper)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--queries", type=int, default=15, help="query images per class")
    p.add_argument("--iterations", type=int, default=60_000)
    p.add_argument("--meta-batch", type=int, default=None, help="default 4 (1-shot), 2 (5-shot)")
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--test-steps", type=int, default=10)
    p.add_argument("--inner-lr", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--test-tasks", type=int, default=600)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-class-check", action="store_true", help="allow a subset of the 64/16/20 classes"
    )
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> ml.Evaluation:
    args = parse(argv)
    torch.manual_seed(args.seed)
    check = not args.no_class_check
    train = ml.datasets.MiniImagenet(args.root, "train", check_classes=check)
    test = ml.datasets.MiniImagenet(args.root, "test", check_classes=check)
    train_tasks = ml.tasks.FewShot(train, args.ways, args.shots, args.queries)
    test_tasks = ml.tasks.FewShot(test, args.ways, args.shots, args.queries)
    model = ml.models.Conv4(in_channels=3, n_classes=args.ways, hidden=args.hidden, image_size=84)
    maml = ml.MAML(
        model,
        F.cross_entropy,
        inner_lr=args.inner_lr,
        inner_steps=args.inner_steps,
        first_order=args.first_order,
    ).to(args.device)
    optimizer = torch.optim.Adam(maml.parameters(), lr=args.lr)
    meta_batch = args.meta_batch or (4 if args.shots == 1 else 2)
    print(f"{train}\n{test}\n{args.ways}-way {args.shots}-shot, meta-batch {meta_batch}")
    ml.train(
        maml,
        train_tasks,
        optimizer,
        args.iterations,
        meta_batch,
        seed=args.seed,
        progress=not args.no_progress,
    )
    result = ml.evaluate(maml, test_tasks, num_tasks=args.test_tasks, steps=[args.test_steps])
    mean, ci = result.summary("accuracy")
    print(
        f"MiniImagenet {args.ways}-way {args.shots}-shot, {args.test_tasks} test tasks, "
        f"{args.test_steps} steps: accuracy {100 * mean:.2f} ± {100 * ci:.2f}%"
    )
    return result


if __name__ == "__main__":
    main()
