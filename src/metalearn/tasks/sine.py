"""Sine-wave regression tasks (Finn et al. 2017, section 5.1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metalearn._checks import check_int
from metalearn.tasks.batch import TaskBatch

__all__ = ["Sine"]


def _check_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(
            f"{name} must be a finite (low, high) pair with low <= high, got {value!r}"
        )
    return low, high


class Sine:
    """Regress ``y = A sin(x - phase)`` from a few points; each task draws its own A and phase.

    Amplitude, phase and inputs are uniform on their ranges, as in Finn et al. (2017). Support
    and query points are drawn independently; with ``query_grid=True`` the query inputs are
    instead ``k_query`` evenly spaced points over ``x_range`` (the paper's evaluation curve).

    Args:
        k_shot: support points per task (K in the paper), >= 1.
        k_query: query points per task, >= 1.
        amplitude: range of A, default (0.1, 5.0).
        phase: range of the phase, default (0, pi).
        x_range: range of the inputs, default (-5, 5).
        query_grid: use evenly spaced query inputs instead of random ones.
        dtype: dtype of the sampled tensors.

    Example:
        >>> import torch, metalearn as ml
        >>> tasks = ml.tasks.Sine(k_shot=10, k_query=10)
        >>> batch = tasks.sample(25, generator=torch.Generator().manual_seed(0))
        >>> batch.support.x.shape
        torch.Size([25, 10, 1])

    Reference:
        Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks.
        ICML 2017.
    """

    def __init__(
        self,
        k_shot: int,
        k_query: int,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        query_grid: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.k_shot = check_int("k_shot", k_shot, 1)
        self.k_query = check_int("k_query", k_query, 1)
        self.amplitude = _check_range("amplitude", amplitude)
        self.phase = _check_range("phase", phase)
        self.x_range = _check_range("x_range", x_range)
        self.query_grid = query_grid
        self.dtype = dtype

    @staticmethod
    def function(x: Tensor, amplitude: Tensor | float, phase: Tensor | float) -> Tensor:
        """The task's target function ``amplitude * sin(x - phase)``."""
        return amplitude * torch.sin(x - phase)

    def _uniform(self, shape: tuple[int, ...], bounds: tuple[float, float], g) -> Tensor:
        low, high = bounds
        return low + (high - low) * torch.rand(shape, generator=g, dtype=self.dtype)

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``num_tasks`` tasks; the same generator state gives the same tasks.

        Returns:
            A :class:`TaskBatch` with ``x``/``y`` of shape ``[num_tasks, k, 1]`` and
            ``info["amplitude"]``, ``info["phase"]`` of shape ``[num_tasks]``.
        """
        check_int("num_tasks", num_tasks, 1)
        amp = self._uniform((num_tasks,), self.amplitude, generator)
        phase = self._uniform((num_tasks,), self.phase, generator)
        sx = self._uniform((num_tasks, self.k_shot, 1), self.x_range, generator)
        if self.query_grid:
            grid = torch.linspace(*self.x_range, self.k_query, dtype=self.dtype)
            qx = grid.view(1, -1, 1).expand(num_tasks, -1, -1).clone()
        else:
            qx = self._uniform((num_tasks, self.k_query, 1), self.x_range, generator)
        a, p = amp.view(-1, 1, 1), phase.view(-1, 1, 1)
        return TaskBatch.from_tensors(
            sx,
            self.function(sx, a, p),
            qx,
            self.function(qx, a, p),
            info={"amplitude": amp, "phase": phase},
        )

    def __repr__(self) -> str:
        return (
            f"Sine(k_shot={self.k_shot}, k_query={self.k_query}, amplitude={self.amplitude}, "
            f"phase={self.phase}, x_range={self.x_range}, query_grid={self.query_grid})"
        )
