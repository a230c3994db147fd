"""Meta-gradients finished before ``backward()``: one task at a time, handed over by one node.

A learner that loops over tasks keeps, on the ordinary autograd path, every task's
second-order graph alive until ``loss.backward()``: memory grows with the meta-batch. Here
each task's meta-gradient is taken (``torch.autograd.grad``) as soon as its loss exists, which
frees that task's graph before the next task starts; the per-task gradients are summed, and
:class:`PrecomputedGradient` hands the sum to the parameters when the caller runs
``out.loss.backward()``. The compiled path (:mod:`metalearn.algorithms._compiled`) hands its
gradients over through the same node.

The per-task gradients are taken with respect to detached stand-ins of the learner's
parameters, swapped in for the duration of the forward (as ``torch.func.functional_call``
does), so a task's backward never reaches the real parameters: their hooks, DDP's reducer and
``.grad`` see exactly one gradient, the meta-gradient, in ``backward()``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.utils.stateless import _reparametrize_module

from metalearn.algorithms._inner_leaves import is_inner_leaf

__all__ = [
    "PrecomputedGradient",
    "backward_on_threads",
    "intra_op_threads",
    "per_task_meta_loss",
]

_TWICE = (
    "this meta-loss was differentiated per task in the forward (the learner's per-task "
    "meta-gradients, on by default for learners that loop over tasks), so its gradient is a "
    "constant and cannot be differentiated again (create_graph=True); set "
    "learner.per_task_gradients = False to keep the whole graph and differentiate it twice"
)


class PrecomputedGradient(torch.autograd.Function):
    """The meta-loss as a node whose backward returns gradients computed in the forward.

    ``apply(loss, grads, refuse_twice, *inputs)``: ``loss`` is the (detached) meta-loss,
    ``grads`` one gradient (or ``None``) per tensor of ``inputs``; the output is a copy of
    ``loss`` whose backward hands ``grad_output * grads[i]`` to ``inputs[i]``. With
    ``refuse_twice`` a backward with ``create_graph=True`` raises (the gradients are constants:
    a gradient penalty on them would silently lose its second-order term); otherwise it
    returns the constants (``torch.autograd.function.once_differentiable``).
    """

    @staticmethod
    def forward(
        ctx: Any, loss: Tensor, grads: tuple[Tensor | None, ...], refuse_twice: bool, *inputs
    ) -> Tensor:
        # Saved (not kept as attributes) so a backward without retain_graph frees them and a
        # second backward fails as on any autograd graph.
        ctx.save_for_backward(*grads)
        ctx.refuse_twice = refuse_twice
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.refuse_twice and torch.is_grad_enabled():
            raise RuntimeError(_TWICE)
        return _scaled(ctx, grad_output)


@once_differentiable  # the gradients are constants here
def _scaled(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
    grads = ctx.saved_tensors
    return (None, None, None, *(None if g is None else grad_output * g for g in grads))


def per_task_meta_loss(learner: Any, batch: Any) -> tuple[Tensor, dict[str, Tensor]] | None:
    """The learner's meta-loss (mean over tasks) with its meta-gradient finished in the forward.

    Each task's meta-gradient is taken before the next task runs, so only one task's graph is
    alive at a time. Returns ``(loss, metrics)`` as ``Learner._meta_loss`` does, the same
    numbers (gradients to float rounding: the tasks' gradients are summed in task order rather
    than in autograd's). Returns ``None`` when the meta-loss also depends on a tensor that
    requires grad but is not one of the learner's parameters (a learnable loss weight captured
    by the loss function, or a tensor computed from the parameters before the call): its
    gradient can only come from the whole graph, which the caller then builds as before.
    """
    named = [(n, p) for n, p in learner.named_parameters() if p.requires_grad]
    stand_ins = {n: p.detach().requires_grad_() for n, p in named}
    inputs = list(stand_ins.values())
    own = {id(t) for t in inputs}
    total: list[Tensor | None] = [None] * len(inputs)
    losses: list[Tensor] = []
    rows: list[dict[str, Tensor]] = []
    with _reparametrize_module(learner, stand_ins):
        params = learner.params()
        for objective, seed, loss, metrics in _parts(learner, params, batch):
            if objective.requires_grad:
                if _reaches_foreign_leaf(objective, own):
                    return None
                grads = torch.autograd.grad(objective, inputs, seed, allow_unused=True)
                total = [
                    g if t is None else t if g is None else t + g
                    for t, g in zip(total, grads, strict=True)
                ]
            losses.append(loss)
            rows.append(metrics)
    metrics = {k: torch.cat([r[k] for r in rows]).mean() for k in rows[0]}
    mean = torch.cat(losses).mean()
    # Only parameters the meta-loss reaches become inputs of the node: the others keep
    # .grad None (optimizers skip them) and DDP's unused-parameter search sees the truth.
    connected = [(p, g) for (_, p), g in zip(named, total, strict=True) if g is not None]
    if not connected:
        return mean, metrics
    loss = PrecomputedGradient.apply(
        mean, tuple(g for _, g in connected), True, *(p for p, _ in connected)
    )
    return loss, metrics


def _parts(learner: Any, params: dict, batch: Any) -> Iterator[tuple]:
    """``(objective, seed, detached loss [1], metrics {name: [1]})`` per task of the batch;
    ``seed`` is d(mean)/d(objective), what the mean's backward would hand the objective."""
    for task in batch:
        loss, metrics = learner.task_loss(params, task.support, task.query)
        seed = torch.ones_like(loss) / batch.num_tasks
        yield loss, seed, loss.detach().reshape(1), _detached(metrics)


def _detached(metrics: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().reshape(-1) for k, v in metrics.items()}


def _reaches_foreign_leaf(loss: Tensor, own: set[int]) -> bool:
    """Whether ``loss``'s graph reaches a leaf that requires grad other than those in ``own``
    and those the inner loop made (the starting point of per-task state)."""
    if loss.grad_fn is None:
        return id(loss) not in own
    stack, seen = [loss.grad_fn], {loss.grad_fn}
    while stack:
        node = stack.pop()
        variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if variable is not None:
            if id(variable) not in own and not is_inner_leaf(variable):
                return True
            continue
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                stack.append(child)
    return False


def warn_foreign(learner: Any) -> None:
    """Say once per learner why its memory grows with the meta-batch."""
    if getattr(learner, "_warned_foreign", False):
        return
    learner._warned_foreign = True
    warnings.warn(
        "the meta-loss depends on a tensor that requires grad but is not a parameter of the "
        "learner (e.g. a learnable weight captured by the loss function); its gradient needs "
        "the whole meta-batch's graph, so this learner keeps it until backward() (memory grows "
        "with the meta-batch). For per-task memory, make it a parameter of the learner and read "
        "it through the learner (e.g. in a task_loss override); set "
        "learner.per_task_gradients = False to silence this",
        stacklevel=4,
    )


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block on ``count`` torch intra-op threads (``None``: unchanged), then restore."""
    if count is None:
        yield
        return
    restore_interrupted_threads()
    old = torch.get_num_threads()
    if count == old:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# Thread counts to restore, pushed when a backward switches and popped when it ends; left
# here by a backward that raised (the engine then skips its queued callbacks).
_switched: list[int] = []


def backward_on_threads(loss: Tensor, count: int) -> None:
    """Make every backward through ``loss`` run on ``count`` intra-op threads, then restore.

    A pre-hook on ``loss``'s node switches the thread count when the engine reaches it (for
    ``loss.backward()``, first) and queues an engine callback that restores the caller's count
    when that backward ends, however it was started (``backward()``, ``torch.autograd.grad``,
    ``retain_graph`` and again). A backward that raises ends without its callbacks; the next
    :func:`intra_op_threads` (every meta-loss) restores the count then.
    """

    def switch(grad_outputs: tuple[Tensor | None, ...]) -> None:
        old = torch.get_num_threads()
        if old == count:
            return
        torch.set_num_threads(count)
        _switched.append(old)
        torch.autograd.Variable._execution_engine.queue_callback(_restore_one)

    if loss.grad_fn is not None:
        loss.grad_fn.register_prehook(switch)


def _restore_one() -> None:
    if _switched:
        torch.set_num_threads(_switched.pop())


def restore_interrupted_threads() -> None:
    """Restore the thread count an interrupted :func:`backward_on_threads` left switched."""
    if _switched:
        torch.set_num_threads(_switched[0])
        _switched.clear()
