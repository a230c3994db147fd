"""Task augmentations for :class:`~metalearn.tasks.FewShot` (its ``augment`` hook)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RandomAffine"]


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
