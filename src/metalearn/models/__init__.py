"""Models that work as plain ``nn.Module``s and under ``torch.func.functional_call``/``vmap``."""

from metalearn.models.conv import Conv4, ConvBlock, FiLMConv4
from metalearn.models.layers import BatchNorm, MaxPool2x2, convert_batchnorm
from metalearn.models.mlp import MLP
from metalearn.models.speedup import speedup

__all__ = [
    "MLP",
    "BatchNorm",
    "Conv4",
    "ConvBlock",
    "FiLMConv4",
    "MaxPool2x2",
    "convert_batchnorm",
    "speedup",
]
