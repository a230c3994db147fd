"""The ``metalearn`` command (also ``python -m metalearn``).

Commands::

    metalearn train CONFIG [--override KEY=VALUE ...] [--device cuda] [--run-dir DIR] [--resume]
    metalearn evaluate CHECKPOINT [--num-tasks N] [--steps 0 1 10] [--seed S] [--override ...]
    metalearn plot RUN_DIR
    metalearn data download NAME ROOT
    metalearn data prepare NAME ROOT
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalearn", description="Gradient-based meta-learning (MAML and friends)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="meta-train as a YAML config says")
    train.add_argument("config", type=Path, help="a YAML config, e.g. configs/sine/maml.yaml")
    train.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a config value, e.g. --override train.iterations=100 (repeatable)",
    )
    train.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the config's)")
    train.add_argument(
        "--run-dir",
        type=Path,
        help="where checkpoints, metrics and plots go (default: the config's run_dir, else "
        "runs/<config name>)",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt if it exists"
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ev = commands.add_parser("evaluate", help="evaluate a checkpoint on its fixed test tasks")
    ev.add_argument("checkpoint", type=Path, help="best.pt, checkpoint.pt or a run folder")
    ev.add_argument("--num-tasks", type=int, help="test tasks (default: the config's, 600)")
    ev.add_argument("--steps", type=int, nargs="+", help="inner step counts to report")
    ev.add_argument("--seed", type=int, help="seed of the test task set")
    ev.add_argument("--split", choices=["test", "val"], default="test")
    ev.add_argument("--device", help="cpu, cuda or auto (default: the config's)")
    ev.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a stored config value, e.g. data.root=/data/miniimagenet",
    )
    ev.add_argument("--json", type=Path, help="also write the summary to this JSON file")

    plot = commands.add_parser("plot", help="write learning-curve PNGs of a run folder")
    plot.add_argument("run_dir", type=Path)

    data = commands.add_parser("data", help="download or prepare a dataset")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for action, text in (
        ("download", "download a dataset from its public source (checksummed)"),
        ("prepare", "convert a dataset on disk into the fast cache"),
    ):
        sub = data_commands.add_parser(action, help=text)
        sub.add_argument("name", help="omniglot or miniimagenet")
        sub.add_argument("root", type=Path, help="the dataset folder")
    return parser


def _train(args: argparse.Namespace) -> int:
    from metalearn.config import ConfigError, load_config
    from metalearn.training.experiment import check_config, run_experiment

    config = load_config(args.config, args.override)
    try:
        check_config(config)
    except ConfigError as e:
        raise ConfigError(f"{args.config}: {e}") from None
    run_dir = args.run_dir or Path(config.run_dir or Path("runs") / args.config.stem)
    trainer = run_experiment(
        config, run_dir, resume=args.resume, device=args.device, progress=not args.no_progress
    )
    print(f"run folder: {run_dir}")
    if trainer.best_iteration is not None and trainer.best_score is not None:
        print(
            f"best validation score {trainer.best_score:.4f} at iteration {trainer.best_iteration}"
        )
    if trainer.test_result is not None:
        print(f"test, state of iteration {trainer.best_iteration}: {trainer.test_result}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from metalearn.training.experiment import evaluate_checkpoint

    result, _ = evaluate_checkpoint(
        args.checkpoint,
        overrides=args.override,
        num_tasks=args.num_tasks,
        steps=args.steps,
        seed=args.seed,
        split=args.split,
        device=args.device,
    )
    print(result)
    if args.json is not None:
        summary = {"checkpoint": str(args.checkpoint), **result.to_dict()}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from metalearn.training.plot import plot_run

    for path in plot_run(args.run_dir):
        print(path)
    return 0


def _data(args: argparse.Namespace) -> int:
    import importlib

    try:
        datasets = importlib.import_module("metalearn.datasets")
    except ModuleNotFoundError as e:
        raise ImportError(f"the datasets package is not available ({e})") from e
    action = getattr(datasets, args.data_command, None)
    if action is None:
        raise ImportError(f"metalearn.datasets.{args.data_command} is not available")
    result = action(args.name, args.root)
    if result is not None:
        print(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``metalearn`` command line; returns the exit status.

    Errors a user can fix (a bad config key, a missing file, a diverged run) are printed as one
    line on stderr with exit status 2 (1 for a diverged run), not as a traceback.
    """
    from metalearn.config import ConfigError
    from metalearn.training.trainer import DivergenceError

    args = _parser().parse_args(argv)
    handlers = {"train": _train, "evaluate": _evaluate, "plot": _plot, "data": _data}
    try:
        return handlers[args.command](args)
    except DivergenceError as e:
        print(f"metalearn {args.command}: {e}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"metalearn {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
