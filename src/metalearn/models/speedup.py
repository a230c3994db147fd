"""Make a user's own model as fast as the library's, with bit-identical layers."""

from __future__ import annotations

import itertools

from torch import nn

from metalearn.models.layers import MaxPool2x2

__all__ = ["speedup"]


def _pair(value: object) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _is_plain_2x2_max_pool(module: nn.Module) -> bool:
    # Exactly torch's class (a subclass may compute something else) with the settings for
    # which MaxPool2x2 is bit-identical: window 2, stride 2, no padding or dilation, floor.
    return (
        type(module) is nn.MaxPool2d
        and _pair(module.kernel_size) == (2, 2)
        and _pair(module.stride) == (2, 2)
        and _pair(module.padding) == (0, 0)
        and _pair(module.dilation) == (1, 1)
        and not module.ceil_mode
        and not module.return_indices
    )


def speedup(model: nn.Module) -> nn.Module:
    """Swap layers of ``model`` (in place) for bit-identical faster ones; return ``model``.

    Every ``nn.MaxPool2d(2)`` (window 2, stride 2, no padding, dilation 1, floor) becomes a
    :class:`~metalearn.models.MaxPool2x2`, whose CPU path computes the same values, gradients
    and second-order gradients (ties included, tested) about twice as fast and keeps only a
    one-byte code per window for the backward (less memory in a MAML step). The module object
    stays the same (its class changes to a subclass of ``nn.MaxPool2d``), so hooks,
    ``isinstance`` checks and the ``state_dict`` are unaffected. Inside an ``nn.Sequential``, an
    ``nn.ReLU`` directly followed by such a pool is reordered to pool-then-ReLU (the same
    function and gradients, on a quarter of the elements, as in
    :class:`~metalearn.models.ConvBlock`) unless either has hooks. Modules with other
    settings, subclasses and ``F.max_pool2d`` calls inside a ``forward`` are left alone.

    Every learner calls it on the model it is given (:class:`~metalearn.Learner`), so a
    hand-written Conv-4 trains as fast as :class:`~metalearn.models.Conv4`; call it yourself
    for a model used without a learner. The other CPU setting Conv-4 relies on is
    process-wide, not a layer: :func:`metalearn.tune_cpu_allocator` (the
    :class:`~metalearn.training.Trainer` calls it).

    Args:
        model: any ``nn.Module``.

    Returns:
        ``model`` itself.

    Example:
        >>> from torch import nn
        >>> net = speedup(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2)))
        >>> [type(m).__name__ for m in net], isinstance(net[1], nn.MaxPool2d)
        (['Conv2d', 'MaxPool2x2', 'ReLU'], True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if _is_plain_2x2_max_pool(module):
            module.__class__ = MaxPool2x2
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            _pool_before_relu(module)
    return model


def _pool_before_relu(sequence: nn.Sequential) -> None:
    # ReLU then 2x2 max-pool -> the pool, then the ReLU: ReLU is monotone, so values and
    # gradients of every order are the same (both only select elements; the max of a window
    # of non-positive values passes no gradient either way), on a quarter of the elements,
    # and the full-size ReLU output is no longer kept for the backward. Modules with hooks
    # would see other shapes: left alone.
    keys = list(sequence._modules)
    for first, second in itertools.pairwise(keys):
        relu, pool = sequence._modules[first], sequence._modules[second]
        if (
            type(relu) is nn.ReLU
            and type(pool) is MaxPool2x2
            and not any(m._forward_hooks or m._forward_pre_hooks for m in (relu, pool))
            and not any(m._backward_hooks or m._backward_pre_hooks for m in (relu, pool))
        ):
            sequence._modules[first], sequence._modules[second] = pool, relu
