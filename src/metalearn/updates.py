"""Update rules of the inner loop (optax-style); see :mod:`metalearn.algorithms.updates`.

``theta <- theta + updates``: ``sgd(lr)``, ``per_parameter(rates)`` (Meta-SGD),
``per_step(rates)`` (MAML++), ``scale_by_adam``/``adam`` (Reptile), ``scale``, ``chain``.
"""

from metalearn.algorithms.updates import (
    SGD,
    Chain,
    PerParameter,
    PerStep,
    Rule,
    Scale,
    ScaleByAdam,
    UpdateRule,
    adam,
    chain,
    per_parameter,
    per_step,
    rule_from_config,
    scale,
    scale_by_adam,
    sgd,
)

__all__ = [
    "SGD",
    "Chain",
    "PerParameter",
    "PerStep",
    "Rule",
    "Scale",
    "ScaleByAdam",
    "UpdateRule",
    "adam",
    "chain",
    "per_parameter",
    "per_step",
    "rule_from_config",
    "scale",
    "scale_by_adam",
    "sgd",
]
