"""Metrics of a run: one JSON object per line in ``metrics.jsonl``, and TensorBoard if installed.

Every record has ``"split"`` (``"train"``, ``"val"`` or ``"test"``) and ``"iteration"`` (the
number of meta-updates done when it was written); the other keys are metric values. The file is
appended to and flushed after every record, so a killed run keeps everything it logged.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["METRICS_FILE", "MetricsLog", "read_metrics"]

#: Name of the metrics file inside a run folder.
METRICS_FILE = "metrics.jsonl"


def _tensorboard_writer(log_dir: Path, enabled: bool | None) -> Any:
    """A ``SummaryWriter`` when TensorBoard is installed (``enabled=None``: if available)."""
    if enabled is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # the tensorboard package is an optional extra
        if enabled:
            raise ImportError(
                "tensorboard=True needs the tensorboard package: "
                "pip install 'metalearn[tensorboard]'"
            ) from e
        return None
    return SummaryWriter(log_dir=str(log_dir))


class MetricsLog:
    """Append-only metrics log of a run folder (JSONL, plus TensorBoard scalars when installed).

    Args:
        run_dir: the run folder; ``metrics.jsonl`` is created in it.
        tensorboard: ``None`` (default) writes TensorBoard events to ``run_dir/tensorboard``
            when the package is installed; ``True`` requires it; ``False`` never.

    Example:
        >>> import tempfile
        >>> log = MetricsLog(tempfile.mkdtemp(), tensorboard=False)
        >>> log.write("train", 1, {"loss": 0.5})
        >>> next(read_metrics(log.path))["loss"]
        0.5
        >>> log.close()
    """

    def __init__(self, run_dir: str | os.PathLike[str], tensorboard: bool | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self._file = self.path.open("a", encoding="utf-8")
        self._tensorboard = _tensorboard_writer(self.run_dir / "tensorboard", tensorboard)

    def write(self, split: str, iteration: int, metrics: Mapping[str, Any]) -> None:
        """Append one record and flush it (and add its numbers to TensorBoard)."""
        record = {"split": split, "iteration": int(iteration), **metrics}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(f"{split}/{key}", value, iteration)

    def truncate_after(self, iteration: int) -> None:
        """Drop records past ``iteration`` (a resumed run redoes them), atomically."""
        self._file.close()
        kept = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= iteration]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for record in kept:
                f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a metrics file; a last line cut short by a kill is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: skipping a truncated last line", stacklevel=2)
                return
            raise ValueError(f"{path}:{number} is not a JSON record: {e}") from e
        yield record
