"""The Conv-4 backbone of Finn et al. (2017) and Vinyals et al. (2016)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metalearn._checks import check_int
from metalearn.models.layers import BatchNorm, MaxPool2x2

__all__ = ["Conv4", "ConvBlock", "FiLMConv4"]


class ConvBlock(nn.Sequential):
    """``conv3x3 -> BatchNorm (batch statistics) -> ReLU -> maxpool 2``, or a strided conv.

    Computed as ``conv -> BatchNorm -> maxpool -> ReLU``: ReLU is monotone, so it commutes
    with the max and gives the same values and gradients, on a quarter of the elements.
    The pooling is :class:`~metalearn.models.layers.MaxPool2x2` (``F.max_pool2d`` with a
    faster CPU path). With ``stride=2`` the block is ``conv3x3 (stride 2) -> BatchNorm ->
    ReLU`` and halves the image by the convolution's stride instead of pooling.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 (then max-pooling) or 2, got {stride!r}")
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        if stride == 2:
            super().__init__(conv, BatchNorm(out_channels), nn.ReLU())
        else:
            super().__init__(conv, BatchNorm(out_channels), MaxPool2x2(), nn.ReLU())


class Conv4(nn.Module):
    """Four conv blocks and a linear head: the few-shot classification model of MAML.

    Each block is ``conv3x3 (hidden filters) -> BatchNorm -> ReLU -> maxpool 2``; BatchNorm uses
    batch statistics in the inner loop, the outer loop and at evaluation, as in Finn et al.
    The flattened features feed ``self.head`` (what ANIL adapts).

    ``downsample="stride"`` is Finn et al.'s Omniglot variant: each block's convolution has
    stride 2 and there is no max-pooling; the last feature map is averaged over its positions,
    so the head sees ``hidden`` features. Its convolutions compute a quarter of the outputs,
    which makes a MAML step about 3.5 times cheaper on 28x28 images.

    Args:
        in_channels: 3 for MiniImagenet, 1 for Omniglot.
        n_classes: N of N-way classification.
        hidden: filters per conv layer (32 for MiniImagenet, 64 for Omniglot in the paper).
        image_size: input height/width (84 for MiniImagenet, 28 for Omniglot).
        downsample: ``"maxpool"`` (default; MiniImagenet in the paper) or ``"stride"``
            (strided convolutions and a final average; Omniglot in the paper).

    Example:
        >>> import torch
        >>> net = Conv4(in_channels=3, n_classes=5, hidden=32)
        >>> net(torch.zeros(2, 3, 84, 84)).shape
        torch.Size([2, 5])
        >>> Conv4(1, 20, hidden=64, image_size=28, downsample="stride").head
        Linear(in_features=64, out_features=20, bias=True)

    Reference:
        Finn, Abbeel, Levine. Model-Agnostic Meta-Learning. ICML 2017;
        Vinyals et al. Matching Networks for One Shot Learning. NeurIPS 2016.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        hidden: int = 32,
        image_size: int = 84,
        *,
        downsample: str = "maxpool",
    ) -> None:
        super().__init__()
        for name, v in (
            ("in_channels", in_channels),
            ("n_classes", n_classes),
            ("hidden", hidden),
            ("image_size", image_size),
        ):
            check_int(name, v, 1)
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 for four 2x poolings, got {image_size}")
        if downsample not in ("maxpool", "stride"):
            raise ValueError(f'downsample must be "maxpool" or "stride", got {downsample!r}')
        self.image_size = image_size
        self.downsample = downsample
        stride = 2 if downsample == "stride" else 1
        blocks = [ConvBlock(c, hidden, stride) for c in (in_channels, hidden, hidden, hidden)]
        if stride == 2:
            # Finn et al.'s strided model averages the last feature map over its positions.
            self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(hidden, n_classes)
        else:
            self.body = nn.Sequential(*blocks, nn.Flatten())
            side = image_size // 16  # four 2x2 poolings, each rounding down
            self.head = nn.Linear(hidden * side * side, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def reset_head(self) -> None:
        """Zero the head (a common choice before meta-training with label shuffling)."""
        self.head.weight.zero_()
        self.head.bias.zero_()


class FiLMConv4(Conv4):
    """:class:`Conv4` whose feature maps after one block are modulated by a context vector.

    ``forward(x, context)``: a linear layer ``film`` maps the context ``[context_size]`` to
    per-channel ``(gamma, beta)``, and the output ``h`` of block ``film_block`` (after conv,
    BatchNorm and pooling, before the ReLU, as in the authors' code) becomes
    ``(1 + gamma) * h + beta`` (FiLM, Perez et al. 2018). This is the model
    :class:`~metalearn.CAVIA` adapts on images (it has ``takes_context = True``); the ``1 +``
    (ours; the authors' code uses ``gamma``) makes a zero context the identity up to the FiLM
    bias. ``forward(x)`` alone uses the zero context.

    Args:
        in_channels: as for :class:`Conv4`.
        n_classes: as for :class:`Conv4`.
        hidden: filters per conv layer, and the number of FiLM scales and shifts.
        image_size: as for :class:`Conv4`.
        context_size: length of the context vector (the paper uses 100 on Mini-ImageNet).
        film_block: which block (1-4) is modulated; 3 as in the paper's Mini-ImageNet model.

    Example:
        >>> import torch
        >>> net = FiLMConv4(in_channels=1, n_classes=5, hidden=8, image_size=28, context_size=4)
        >>> net(torch.zeros(2, 1, 28, 28), torch.zeros(4)).shape
        torch.Size([2, 5])

    Reference:
        Zintgraf et al. Fast Context Adaptation via Meta-Learning. ICML 2019; Perez et al.
        FiLM: Visual Reasoning with a General Conditioning Layer. AAAI 2018.
    """

    takes_context = True

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        hidden: int = 32,
        image_size: int = 84,
        *,
        context_size: int = 100,
        film_block: int = 3,
    ) -> None:
        super().__init__(in_channels, n_classes, hidden, image_size)
        self.context_size = check_int("context_size", context_size, 1)
        self.film_block = check_int("film_block", film_block, 1)
        if film_block > 4:
            raise ValueError(f"film_block must be 1, 2, 3 or 4, got {film_block}")
        self.hidden = hidden
        self.film = nn.Linear(context_size, 2 * hidden)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if context is None:
            context = x.new_zeros(self.context_size)
        if context.shape != (self.context_size,):
            raise ValueError(
                f"context must have shape ({self.context_size},), got {tuple(context.shape)}"
            )
        gamma, beta = self.film(context).split(self.hidden)
        h = x
        # Indexing, not slicing: higher's patched Sequential cannot be sliced.
        for index in range(1, 5):
            block = self.body[index - 1]
            if index == self.film_block:
                conv, norm, pool, relu = (block[i] for i in range(4))
                h = relu((1 + gamma[:, None, None]) * pool(norm(conv(h))) + beta[:, None, None])
            else:
                h = block(h)
        return self.head(h.flatten(1))
