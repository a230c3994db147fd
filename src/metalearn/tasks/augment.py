"""Task augmentations for :class:`~metalearn.tasks.FewShot` (its ``augment`` hook)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from metalearn.tasks.batch import TaskBatch, TaskSampler

__all__ = ["AugmentSupport", "RandomAffine"]


class RandomAffine:
    """Small random affine distortions of every image of a task (rotation, scale, shear, shift).

    Handwriting varies by drawer in exactly these ways, so distorted drawings are new drawings
    of the same character: a cheap way to stretch the 20 drawings per Omniglot character (and
    any small image class). Parameters are drawn per image, uniformly in ``[-max, max]``, from
    the task's generator, so tasks stay reproducible. Pixels outside the image are 0.

    Args:
        degrees: largest rotation, in degrees.
        scale: largest relative change of size (0.1: 0.9x to 1.1x).
        shear: largest shear, in degrees.
        translate: largest shift, as a fraction of the image side.

    Example:
        >>> import torch, metalearn as ml
        >>> augment = ml.tasks.RandomAffine(degrees=10, scale=0.1, translate=0.1)
        >>> images = torch.rand(5, 2, 1, 28, 28)   # [n_way, k_shot + k_query, C, H, W]
        >>> augment(images, torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2, 1, 28, 28])
    """

    def __init__(
        self, degrees: float = 10.0, scale: float = 0.1, shear: float = 0.0, translate: float = 0.1
    ) -> None:
        for name, value in (
            ("degrees", degrees),
            ("scale", scale),
            ("shear", shear),
            ("translate", translate),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if scale >= 1:
            raise ValueError(f"scale must be < 1 (a relative change), got {scale}")
        self.degrees, self.scale, self.shear, self.translate = degrees, scale, shear, translate

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        shape = images.shape
        flat = images.reshape(-1, *shape[-3:])
        n = flat.shape[0]

        def uniform(limit: float) -> Tensor:
            u = torch.rand(n, generator=generator, dtype=torch.float64)
            return ((2 * u - 1) * limit).to(flat.dtype)

        angle = uniform(math.radians(self.degrees))
        shear = uniform(math.radians(self.shear))
        zoom = 1 + uniform(self.scale)
        shift = torch.stack([uniform(2 * self.translate), uniform(2 * self.translate)], dim=1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # affine_grid maps output to input coordinates: the inverse of the distortion.
        theta = torch.zeros(n, 2, 3, dtype=flat.dtype)
        theta[:, 0, 0] = cos / zoom
        theta[:, 0, 1] = (-sin + torch.tan(shear) * cos) / zoom
        theta[:, 1, 0] = sin / zoom
        theta[:, 1, 1] = (cos + torch.tan(shear) * sin) / zoom
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(flat.device), list(flat.shape), align_corners=False)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.reshape(shape)

    def __repr__(self) -> str:
        return (
            f"RandomAffine(degrees={self.degrees}, scale={self.scale}, shear={self.shear}, "
            f"translate={self.translate})"
        )


class AugmentSupport:
    """Wrap a task sampler so each task's support set also holds distorted copies of itself.

    A one-shot task gives the inner loop one drawing per class. ``copies`` distorted versions of
    every support example (e.g. by :class:`RandomAffine`), with the same labels, give it
    ``1 + copies`` per class to adapt on: data augmentation of the support set, used at test
    time (and possible in training). The query split is left as it is, and the wrapped sampler
    draws first from the same generator, so the tasks (classes, support and query images) are
    exactly those the plain sampler gives for that generator: accuracies at one seed compare
    task by task with and without the copies.

    Args:
        sampler: any task sampler (``sample(num_tasks, generator) -> TaskBatch``).
        augment: ``augment(x, generator) -> x``, shape-preserving, called once per task with
            ``x`` the task's support inputs repeated ``copies`` times
            (``[copies * k_support, *input_shape]``); :class:`RandomAffine` fits.
        copies: distorted copies of each support example (>= 1).

    Returns (from :meth:`sample`):
        A :class:`TaskBatch` whose support split has ``(1 + copies) * k_support`` examples: the
        original ones first, then copy 1 of each, copy 2 of each, ...

    Example:
        >>> import numpy as np, torch, metalearn as ml
        >>> images = ml.datasets.ImageClasses.from_labels(   # 10 classes of 4 images
        ...     np.zeros((40, 28, 28), np.uint8), np.repeat(np.arange(10), 4))
        >>> plain = ml.tasks.FewShot(images, n_way=5, k_shot=1, k_query=2)
        >>> tasks = ml.tasks.AugmentSupport(plain, ml.tasks.RandomAffine(), copies=4)
        >>> batch = tasks.sample(3, torch.Generator().manual_seed(0))
        >>> batch.support.x.shape, batch.query.x.shape
        (torch.Size([3, 25, 1, 28, 28]), torch.Size([3, 10, 1, 28, 28]))
    """

    def __init__(
        self,
        sampler: TaskSampler,
        augment: Callable[[Tensor, torch.Generator | None], Tensor],
        copies: int,
    ) -> None:
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(
                f"sampler must have sample(num_tasks, generator), got {type(sampler).__name__}"
            )
        if not callable(augment):
            raise TypeError(f"augment must be callable, got {type(augment).__name__}")
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ValueError(
                f"copies must be an int >= 1, got {copies!r} (use the sampler itself for none)"
            )
        self.sampler, self.augment, self.copies = sampler, augment, copies

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        batch = self.sampler.sample(num_tasks, generator)
        x, y = batch.support
        shape = x.shape[2:]
        copied = []
        for i in range(batch.num_tasks):
            repeated = x[i].repeat(self.copies, *([1] * len(shape)))
            out = self.augment(repeated, generator)
            if not isinstance(out, Tensor) or out.shape != repeated.shape:
                raise ValueError(
                    f"augment must return a tensor of its input's shape {tuple(repeated.shape)}, "
                    f"got {getattr(out, 'shape', type(out).__name__)}"
                )
            copied.append(out)
        support_x = torch.cat([x, torch.stack(copied)], dim=1)
        support_y = y.repeat(1, 1 + self.copies, *([1] * (y.dim() - 2)))
        return TaskBatch.from_tensors(support_x, support_y, *batch.query, info=batch.info)

    def __repr__(self) -> str:
        return f"AugmentSupport({self.sampler!r}, {self.augment!r}, copies={self.copies})"
