"""Multi-layer perceptron."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from metalearn._checks import check_int

__all__ = ["MLP"]


class MLP(nn.Module):
    """A fully connected network: ``sizes[0] -> ... -> sizes[-1]`` with an activation between.

    The last layer is ``self.head`` (what ANIL adapts); the others live in ``self.body``.
    Finn et al. (2017) use ``MLP([1, 40, 40, 1])`` with ReLU for sine regression.

    Args:
        sizes: layer widths, input first, output last; at least two entries.
        activation: module factory placed after every hidden layer.

    Example:
        >>> import torch
        >>> net = MLP([1, 40, 40, 1])
        >>> net(torch.zeros(10, 1)).shape
        torch.Size([10, 1])
    """

    def __init__(self, sizes: Sequence[int], activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and an output width, got {sizes}")
        for i, size in enumerate(sizes):
            check_int(f"sizes[{i}]", size, 1)
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes[:-1]):
            layers += [nn.Linear(fan_in, fan_out), activation()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-2], sizes[-1])
        # (parameter-name prefix, layer) in order: the plan of forward_with.
        self._plan = [(f"body.{i}", layer) for i, layer in enumerate(self.body)]
        self._plan.append(("head", self.head))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def forward_with(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The network as a pure function of ``params`` (name -> tensor, every parameter).

        Computes what ``functional_call(self, params, (x,))`` computes, without swapping the
        module's parameters in and out: inside ``vmap`` and ``grad`` that machinery costs about
        a tenth of a sine MAML step. Learners use it automatically (see
        :func:`metalearn.algorithms.inner.functional_forward`).
        """
        for prefix, layer in self._plan:
            if isinstance(layer, nn.Linear):
                x = x @ params[prefix + ".weight"].mT + params[prefix + ".bias"]
            else:
                x = layer(x)
        return x
