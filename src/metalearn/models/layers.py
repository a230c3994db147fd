"""Layers that behave under ``torch.func.functional_call`` and ``vmap`` as MAML needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn._functorch import under_functorch_transform

__all__ = ["BatchNorm", "MaxPool2x2", "convert_batchnorm"]


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


class MaxPool2x2(nn.MaxPool2d):
    """2x2 max-pooling with stride 2, ``F.max_pool2d(x, 2)``, with a faster CPU path.

    On CPU, torch's ``max_pool2d`` forward is a scalar loop (about 90 ms for the
    ``[75, 32, 84, 84]`` activations of a MiniImagenet query set, a tenth of a MAML step on two
    cores). Outside ``torch.func`` transforms, this layer takes the maxima of the four strided
    quarters with vectorised element-wise ops instead, and picks the same maximum
    ``max_pool2d`` picks (the first in the window's row-major order), so its backward is
    torch's own ``max_pool2d_with_indices_backward``: values, gradients and higher-order
    gradients are identical to ``F.max_pool2d``, ties included (tested). For the backward it
    keeps one byte per window (which corner won), not ``max_pool2d``'s input and int64
    indices: every pre-pooling activation of a meta-step's graph is freed early, and the
    indices take an eighth of the memory. Elsewhere (CUDA, under ``vmap``) it is
    ``F.max_pool2d``.

    Example:
        >>> MaxPool2x2()(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.device.type != "cpu"
            or x.dim() not in (3, 4)
            or min(x.shape[-2:]) < 2
            or under_functorch_transform()
        ):
            return F.max_pool2d(x, 2)
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool2x2.apply(x)
        top, bottom = _row_maxima(x)
        return torch.maximum(top, bottom)


def _quarters(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # The four corners of every 2x2 window (an odd last row/column is dropped, as by pooling).
    h, w = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    x = x[..., :h, :w]
    return x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]


def _row_maxima(x: Tensor) -> tuple[Tensor, Tensor]:
    a00, a01, a10, a11 = _quarters(x)
    return torch.maximum(a00, a01), torch.maximum(a10, a11)


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        a00, a01, a10, a11 = _quarters(x)
        top, bottom = torch.maximum(a00, a01), torch.maximum(a10, a11)
        # max_pool2d's choice: the first maximum in row-major order, so a tie goes to the top
        # row, then to the left column.
        lower = bottom > top
        right_top, right_bottom = a01 > a00, a11 > a10
        right = right_top ^ (lower & (right_top ^ right_bottom))  # where(lower, bottom's, top's)
        # Kept for the backward: the window's corner as one byte (2 * lower + right), not the
        # int64 flat index max_pool2d keeps (8x the memory); the backward rebuilds the index.
        code = lower.to(torch.uint8)
        code += lower  # (bool ops and in-place adds are the cheap kernels here)
        code += right
        ctx.save_for_backward(code)
        ctx.layout = x.shape, x.stride()
        return torch.maximum(top, bottom)  # (propagates NaN as max_pool2d does)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (code,) = ctx.saved_tensors
        shape, stride = ctx.layout
        width = shape[-1]
        rows, cols = code.shape[-2:]
        index = (code >> 1).to(torch.int64)  # lower row?
        index *= width
        index += code & 1
        corner = torch.arange(0, 2 * rows * width, 2 * width, device=code.device).view(-1, 1)
        index += corner + torch.arange(0, 2 * cols, 2, device=code.device)  # windows' top-left
        # torch's own backward, differentiable again (its derivative gathers at ``index``); it
        # reads only the shape and strides of its ``self`` argument, never its values.
        like_x = torch.empty_strided(shape, stride, dtype=grad.dtype, device=grad.device)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, like_x, [2, 2], [2, 2], [0, 0], [1, 1], False, index
        )


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
