"""The ``metalearn`` command (also ``python -m metalearn``).

Commands::

    metalearn train CONFIG [--override KEY=VALUE ...] [--device cuda] [--run-dir DIR] [--resume]
                   [--allow-changes KEY ...]
    metalearn evaluate CHECKPOINT [--num-tasks N] [--steps 0 1 10] [--seed S] [--override ...]
    metalearn plot RUN_DIR
    metalearn data download NAME ROOT
    metalearn data prepare NAME ROOT

Every command takes ``--debug`` (show the traceback of an error instead of one line).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["EXIT_DIVERGED", "EXIT_INTERNAL", "EXIT_USER_ERROR", "main"]

#: Exit statuses (docs/cli.md): 0 success, then these.
EXIT_DIVERGED = 1
EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3

#: Errors a user causes and can fix: a bad config, file, data set, checkpoint or argument. The
#: library raises these with a message naming the key or file; anything else is a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # includes ConfigError, refused pickles and checkpoints, bad data
    TypeError,  # a wrong type for a constructor argument given in a config
    OSError,  # missing, unreadable or existing files and folders
    ImportError,  # a missing optional package or component
    pickle.UnpicklingError,
)


def _parser() -> argparse.ArgumentParser:
    # --debug is accepted before or after the command; SUPPRESS keeps a subcommand's default
    # from overwriting a --debug given before it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, show the full traceback instead of one line",
    )
    parser = argparse.ArgumentParser(
        prog="metalearn",
        description="Gradient-based meta-learning (MAML and friends).",
        parents=[debug],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[debug], **kwargs)

    train = command("train", help="meta-train as a YAML config says")
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
    train.add_argument(
        "--allow-changes",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY",
        help="with --resume: accept these config keys (or sections) differing from the "
        "checkpoint's config, e.g. --allow-changes learner.inner_lr optimizer",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ev = command("evaluate", help="evaluate a checkpoint on its fixed test tasks")
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

    plot = command("plot", help="write learning-curve PNGs of a run folder")
    plot.add_argument("run_dir", type=Path)

    data = command("data", help="download or prepare a dataset")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for action, text in (
        ("download", "download a dataset from its public source (checksummed)"),
        ("prepare", "convert a dataset on disk into the fast cache"),
    ):
        sub = data_commands.add_parser(action, help=text, parents=[debug])
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
    if args.allow_changes and not args.resume:
        raise ConfigError("--allow-changes applies to a resumed run; pass --resume as well")
    trainer = run_experiment(
        config,
        run_dir,
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
        allow_changes=args.allow_changes,
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

    if args.num_tasks is not None and args.num_tasks < 1:
        raise ValueError(f"--num-tasks must be >= 1, got {args.num_tasks}")
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
    diverged = _diverged_tasks(result)
    if diverged:
        print(
            f"metalearn evaluate: {diverged} of {result.num_tasks} tasks gave NaN or infinite "
            "metrics (their adaptation diverged), so the means above are not finite; lower "
            "the inner learning rate or the --steps",
            file=sys.stderr,
        )
    if args.json is not None:
        summary = {"checkpoint": str(args.checkpoint), **result.to_dict()}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _diverged_tasks(result) -> int:
    """How many tasks of an :class:`~metalearn.training.Evaluation` have a non-finite metric."""
    import torch

    bad = [~torch.isfinite(values).all(dim=1) for values in result.per_task.values()]
    return int(torch.stack(bad).any(dim=0).sum())


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

    Errors a user can fix (a bad config key, a missing or corrupt file, a refused checkpoint, a
    run folder in use) are printed as one line on stderr naming what to change, with status 2;
    a diverged run exits with 1; anything else is a bug in metalearn and exits with 3. With
    ``--debug`` the traceback is printed as well.
    """
    args = _parser().parse_args(argv)
    handlers = {"train": _train, "evaluate": _evaluate, "plot": _plot, "data": _data}
    try:
        return handlers[args.command](args)
    except Exception as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        status, message = _status(e)
    print(f"metalearn {args.command}: {message}", file=sys.stderr)
    return status


def _status(error: Exception) -> tuple[int, str]:
    """The exit status of ``error`` and its one-line message."""
    from metalearn.training.trainer import DivergenceError

    if isinstance(error, DivergenceError):
        return EXIT_DIVERGED, str(error)
    if isinstance(error, USER_ERRORS):
        return EXIT_USER_ERROR, _one_line(error)
    return EXIT_INTERNAL, (
        f"internal error ({type(error).__name__}: {_one_line(error)}); this is a bug in "
        "metalearn: rerun with --debug and report the traceback"
    )


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (a file name stays readable; details are joined)."""
    text = str(error)
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])  # KeyError's str() adds quotes
    if (
        isinstance(error, OSError)
        and error.filename is not None
        and str(error.filename) not in text
    ):
        text = f"{error.filename}: {text}"
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
