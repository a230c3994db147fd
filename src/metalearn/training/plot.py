"""Learning-curve PNGs of a run folder, drawn from its ``metrics.jsonl`` with matplotlib (Agg)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from metalearn.training.log import METRICS_FILE, read_metrics

__all__ = ["plot_run"]

# Bookkeeping keys of a record that are not curves.
_NOT_CURVES = {"split", "iteration", "time", "steps", "num_tasks", "seed"}


def _moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _after(steps: int | None) -> str:
    if steps is None:
        return ""
    return f" after {steps} inner step{'s' if steps != 1 else ''}"


def plot_run(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Write one learning-curve PNG per metric to ``run_dir/plots/<metric>.png``.

    Training values are drawn raw (faint) and as a moving average; validation values as points
    with their 95% confidence band.

    Args:
        run_dir: a run folder holding ``metrics.jsonl`` (written by
            :class:`~metalearn.training.Trainer` or ``python -m metalearn train``).

    Returns:
        The paths of the PNG files written.

    Raises:
        FileNotFoundError: when ``run_dir`` has no metrics file.
        ImportError: when matplotlib is not installed (``pip install 'metalearn[plots]'``).
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a metalearn run folder?")
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'metalearn[plots]'") from e

    # curves[metric][split] = (iterations, values, ci95 or None)
    curves: dict[str, dict[str, tuple[list[int], list[float], list[float]]]] = defaultdict(dict)
    inner_steps: dict[str, int] = {}  # split -> inner steps of its (last) evaluation
    for record in read_metrics(path):
        split = record.get("split", "train")
        if "steps" in record:
            inner_steps[split] = record["steps"]
        for key, value in record.items():
            if key in _NOT_CURVES or key.endswith("_ci95"):
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            its, values, cis = curves[key].setdefault(split, ([], [], []))
            its.append(record["iteration"])
            values.append(float(value))
            cis.append(float(record.get(f"{key}_ci95", 0.0)))

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    for metric, by_split in sorted(curves.items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        if "train" in by_split:
            its, values, _ = by_split["train"]
            window = max(1, len(values) // 50)
            ax.plot(its, values, color="C0", alpha=0.25, linewidth=0.8)
            ax.plot(its, _moving_average(values, window), color="C0", label="train")
        if "val" in by_split:
            its, values, cis = by_split["val"]
            low = [v - c for v, c in zip(values, cis, strict=True)]
            high = [v + c for v, c in zip(values, cis, strict=True)]
            ax.fill_between(its, low, high, color="C1", alpha=0.2)
            label = f"validation{_after(inner_steps.get('val'))} (95% CI)"
            ax.plot(its, values, "o-", color="C1", markersize=3, label=label)
        if "test" in by_split:
            its, values, cis = by_split["test"]
            label = f"test{_after(inner_steps.get('test'))} (95% CI)"
            ax.errorbar(its, values, yerr=cis, fmt="s", color="C2", label=label)
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        target = out_dir / f"{metric}.png"
        fig.savefig(target, dpi=100)
        plt.close(fig)
        written.append(target)
    return written
