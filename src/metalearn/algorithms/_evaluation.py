"""The evaluation contract of a learner's ``inner``, checked where evaluation consumes it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from metalearn.algorithms.inner import Params
from metalearn.tasks.batch import Split

if TYPE_CHECKING:
    from metalearn.algorithms.base import Learner


def inner_trajectory(learner: Learner, params: Params, support: Split, steps: int) -> list[Params]:
    """``learner.inner(params, support, steps, True, trajectory=True)``, checked.

    :meth:`Learner.evaluate_batch` reads ``path[s]`` for every evaluated step count ``s``; an
    ``inner`` override that does not pass ``trajectory`` on to :func:`inner_loop` used to end in
    a bare ``KeyError: 0`` there. This names the method and the fix instead.
    """
    name = f"{type(learner).__name__}.inner"
    fix = (
        "accept **kw and pass it on to inner_loop(..., **kw) (see docs/new_algorithm.md, "
        "'What evaluation calls'), or override evaluate_batch"
    )
    try:
        path = learner.inner(params, support, steps, True, trajectory=True)
    except TypeError as error:
        if "trajectory" not in str(error):
            raise
        raise TypeError(f"evaluation calls {name}(..., trajectory=True): {error}; {fix}") from None
    if not isinstance(path, Sequence) or len(path) != steps + 1:
        got = f"a sequence of {len(path)}" if isinstance(path, Sequence) else type(path).__name__
        raise TypeError(
            f"evaluation calls {name}(params, support, {steps}, True, trajectory=True) and "
            f"needs the list of {steps + 1} parameter dicts after 0..{steps} steps, but it "
            f"returned {got}; {fix}"
        )
    return list(path)
