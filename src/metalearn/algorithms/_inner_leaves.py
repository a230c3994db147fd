"""Leaves the inner loop makes, known to the per-task meta-gradient as its own.

To differentiate a tensor that does not require grad (per-task state such as CAVIA's context,
which starts every task as a constant), the inner loop differentiates a fresh leaf copy of it.
With a second-order graph the query loss then reaches that leaf, and the per-task
meta-gradient (``_meta_gradient.py``) must tell it apart from a tensor outside the learner
(a learnable loss weight), whose gradient would need the whole graph.
"""

from __future__ import annotations

import weakref

from torch import Tensor

# Keyed by id; an entry goes when its leaf does, so an id is never matched by a newer tensor.
_LEAVES: weakref.WeakValueDictionary[int, Tensor] = weakref.WeakValueDictionary()


def inner_leaf(value: Tensor) -> Tensor:
    """A detached copy of ``value`` that requires grad, remembered as the inner loop's."""
    leaf = value.detach().requires_grad_()
    _LEAVES[id(leaf)] = leaf
    return leaf


def is_inner_leaf(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a leaf made by :func:`inner_leaf` (and still alive)."""
    return _LEAVES.get(id(tensor)) is tensor
