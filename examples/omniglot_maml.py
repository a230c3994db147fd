"""MAML on Omniglot (Finn et al. 2017, section 5.2): 5-way and 20-way, 1-shot and 5-shot.

Paper setting: Conv-4 with 64 filters on 28x28 images; 5-way: meta-batch 32, 1 inner step of
lr 0.4; 20-way: meta-batch 16, 5 inner steps of lr 0.1; 10 steps at test (--test-steps).
Reported accuracy: 98.7% (5-way 1-shot), 99.9% (5-way 5-shot), 95.8% (20-way 1-shot),
98.9% (20-way 5-shot).

    python examples/omniglot_maml.py --root data/omniglot --ways 5 --shots 1
    python examples/omniglot_maml.py --root data/omniglot --ways 20 --shots 1

Get the data with ``metalearn.datasets.download("omniglot", ROOT)``; the Vinyals split with
rotated classes is used (``--split-mode maml`` for Finn et al.'s 1200-character split).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import metalearn as ml

PAPER = {5: {"meta_batch": 32, "inner_steps": 1, "inner_lr": 0.4}}
PAPER[20] = {"meta_batch": 16, "inner_steps": 5, "inner_lr": 0.1}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="folder holding images_background/evaluation")
    p.add_argument("--ways", type=int, default=5, help="N (5 or 20 in the paper)")
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15, help="query images per class")
    p.add_argument("--iterations", type=int, default=60_000)
    p.add_argument("--meta-batch", type=int, default=None, help="default 32 (5-way), 16 (20-way)")
    p.add_argument("--inner-steps", type=int, default=None, help="default 1 (5-way), 5 (20-way)")
    p.add_argument("--inner-lr", type=float, default=None, help="default 0.4 (5-way), 0.1")
    p.add_argument("--test-steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--split-mode", choices=["vinyals", "maml"], default="vinyals")
    p.add_argument("--first-order", action="store_true")
    p.add_argument("--test-tasks", type=int, default=600)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-class-check", action="store_true", help="allow a subset of characters")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> ml.Evaluation:
    args = parse(argv)
    torch.manual_seed(args.seed)
    paper = PAPER.get(args.ways, PAPER[20])
    meta_batch = args.meta_batch or paper["meta_batch"]
    inner_steps = args.inner_steps or paper["inner_steps"]
    inner_lr = args.inner_lr or paper["inner_lr"]
    test_steps = args.test_steps
    train_split = "train" if args.split_mode == "vinyals" else "trainval"
    kw = {
        "split_mode": args.split_mode,
        "image_size": args.image_size,
        "seed": args.seed,
        "check_classes": not args.no_class_check,
    }
    train = ml.datasets.Omniglot(args.root, train_split, **kw)
    test = ml.datasets.Omniglot(args.root, "test", **kw)
    train_tasks = ml.tasks.FewShot(train, args.ways, args.shots, args.queries)
    test_tasks = ml.tasks.FewShot(test, args.ways, args.shots, args.queries)
    model = ml.models.Conv4(1, args.ways, hidden=args.hidden, image_size=args.image_size)
    maml = ml.MAML(
        model, F.cross_entropy, inner_lr=inner_lr, inner_steps=inner_steps,
        first_order=args.first_order,
    ).to(args.device)  # fmt: skip
    optimizer = torch.optim.Adam(maml.parameters(), lr=args.lr)
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
    result = ml.evaluate(maml, test_tasks, num_tasks=args.test_tasks, steps=[test_steps])
    mean, ci = result.summary("accuracy")
    print(
        f"Omniglot {args.ways}-way {args.shots}-shot, {args.test_tasks} test tasks, "
        f"{test_steps} steps: accuracy {100 * mean:.2f} ± {100 * ci:.2f}%"
    )
    return result


if __name__ == "__main__":
    main()
