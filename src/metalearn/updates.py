"""Update rules of the inner loop (optax-style); see :mod:`metalearn.algorithms.updates`.

``theta <- theta + updates``: ``sgd(lr)``, ``per_parameter(rates)`` (Meta-SGD),
``per_step(rates)`` (MAML++), ``scale_by_adam``/``adam`` (Reptile), ``scale``, ``chain``.
"""

from metalearn.algorithms import updates as _updates
from metalearn.algorithms.updates import *  # noqa: F403 (the public names, listed below)

# Everything the implementation exports but its two helpers for learners' internals.
__all__ = [n for n in _updates.__all__ if n not in ("check_rule", "parameter_key")]
