"""Layers that behave under ``torch.func.functional_call`` and ``vmap`` as MAML needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn._functorch import under_functorch_transform

__all__ = ["BatchNorm", "convert_batchnorm"]


class BatchNorm(nn.Module):
    """Batch normalisation with batch statistics only, as in MAML (no running statistics).

    Statistics are always those of the current batch (training and evaluation alike), so the
    layer is a pure function of its input and its affine parameters. Inside ``torch.func``
    transforms it is written with ``mean``/``var`` rather than ``F.batch_norm``: on torch 2.13
    (CPU), ``vmap`` over tasks through a second-order ``F.batch_norm`` gives a wrong
    meta-gradient when the BatchNorm weight adapts in the inner loop; these ops are exact under
    ``vmap`` (tested). Outside transforms (the per-task loop) it calls the fused
    ``F.batch_norm`` kernel, exact there and several times faster (also tested).

    Args:
        num_features: channels (dimension 1 of the input).
        eps: added to the variance.
        affine: learn a per-channel scale and shift.

    Example:
        >>> bn = BatchNorm(8)
        >>> bn(torch.randn(4, 8, 5, 5)).shape
        torch.Size([4, 8, 5, 5])
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm({self.num_features}) expects input [batch, {self.num_features}, ...], "
                f"got {tuple(x.shape)}"
            )
        if x.numel() > x.shape[1] and not under_functorch_transform():
            # Outside torch.func transforms the fused kernel is exact to second order and
            # several times faster than the composite below (which vmap needs). It refuses a
            # single value per channel, which the composite normalises to zero.
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` (in place) by :class:`BatchNorm`.

    Affine parameters are copied; running statistics are dropped, since MAML normalises with
    batch statistics. Use it to make a model from elsewhere safe to ``vmap`` over tasks.

    Returns:
        ``module`` itself (or a new :class:`BatchNorm` when ``module`` is a BatchNorm).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        new = BatchNorm(module.num_features, module.eps, module.affine)
        if module.affine:
            with torch.no_grad():
                new.weight.copy_(module.weight)
                new.bias.copy_(module.bias)
        return new.to(device=_device_of(module))
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
