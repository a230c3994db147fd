"""UNICORN-MAML: MAML whose head starts every task from one shared row (Ye & Chao 2022)."""

from __future__ import annotations

from torch import nn

from metalearn.algorithms.base import AdaptSelector, Learner
from metalearn.algorithms.inner import LossFn, Objective, Params
from metalearn.algorithms.updates import UpdateRule
from metalearn.tasks.batch import Split

__all__ = ["UnicornMAML"]

HEAD_INITS = ("learned", "zero")


class UnicornMAML(Learner):
    """MAML whose linear head starts each task with every class's row equal.

    MAML meta-learns one initial row of the head per output unit, so the starting point of a
    task depends on which class its sampler happened to label 0, 1, ...: the labels are a
    random permutation, and the learned rows must serve all of them. UNICORN-MAML meta-learns
    a single row ``w`` (and bias ``b``) instead and starts every task's head from ``w`` (``b``)
    repeated for each of the head's ``out_features`` units; the inner loop then adapts the
    head (and whatever ``adapt`` selects) as MAML does, and the meta-gradient of ``w`` is the
    sum of the meta-gradients of the rows it was copied to. The start is the same under any
    permutation of the labels. With ``head_init="zero"`` the row is fixed at zero and not
    learned: the "zeroing trick" of Kao et al. (2022).

    With all rows equal the logits at the start are equal, so the first inner step moves the
    head only (the body's gradient ``W^T (p - y)`` is zero when every row of ``W`` is the same
    and the softmax is uniform): after one step of rate ``alpha``, class ``k``'s row is ``w``
    plus ``alpha/n`` times the sum of its support embeddings minus ``1/N`` times the sum of all
    (a prototype classifier on dot products); the body adapts from the second step on.

    Under softmax cross-entropy the shared row itself gets no meta-gradient (up to rounding):
    it adds the same ``w . h`` to every logit at every inner step, since the rows' differences
    and the body's updates do not depend on it, and the softmax ignores a common shift (tested).
    What sets UNICORN-MAML apart from MAML there is the equal start, not the value of ``w``;
    under a loss that a common shift of the logits changes, ``w`` does train. The authors' code
    (github.com/Han-Jia/UNICORN-MAML, ``model/models/MAMLUnicorn.py``) gives its row the same
    zero: its adapted head is the repeated row minus the accumulated, detached inner gradients,
    so the row reaches the query loss only through the repeat, whose gradient is the sum of the
    rows' gradients, ``sum_c (p_c - y_c) h = 0``. Its inner loop is first order throughout
    (``first_order=True`` here); this learner differentiates through it by default.

    The model is a network whose head is an ``nn.Linear`` (``head``; :class:`~metalearn.models.MLP`
    and :class:`~metalearn.models.Conv4` name it ``"head"``). The head's own parameters are
    never used (every task starts from the shared row; they get no meta-gradient). The learned
    row is the learner's parameter ``head_weight`` (``[in_features]``) and ``head_bias``
    (``[]``, absent when the head has no bias), both starting at zero.

    Args:
        model: the network; its parameters outside the head are meta-learned as in MAML.
        loss: a classification loss on logits, e.g. ``F.cross_entropy``.
        inner_lr: inner step size alpha.
        inner_steps: inner steps during meta-training; at least 2 for the body to adapt in
            training (the first step moves the head only).
        first_order: drop second-order terms of the meta-gradient.
        adapt: which parameters adapt besides the head, which always adapts (default all).
        update: the inner update rule (:mod:`metalearn.updates`); default ``sgd(inner_lr)``.
        objective: ``objective(params, split) -> scalar``; default the loss of the forward.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"`` over the tasks of a batch.
        backend: ``"func"`` (default) or ``"higher"``; same meta-gradients.
        head: the final ``nn.Linear`` (default ``"head"``).
        head_init: ``"learned"`` (the shared row is meta-learned, UNICORN-MAML) or ``"zero"``
            (fixed at zero: the zeroing trick).

    Raises:
        ValueError: when ``head`` does not name an ``nn.Linear`` or ``head_init`` is unknown.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> net = ml.models.MLP([2, 16, 16, 3])
        >>> learner = ml.UnicornMAML(net, F.cross_entropy, inner_lr=0.1, inner_steps=2)
        >>> x = torch.randn(4, 6, 2); y = torch.arange(3).repeat(2).expand(4, 6)
        >>> batch = ml.tasks.TaskBatch.from_tensors(x, y, x, y)
        >>> learner(batch).loss.backward()
        >>> learner.head_weight.grad.shape
        torch.Size([16])

    References:
        Ye, Chao. How to Train Your MAML to Excel in Few-Shot Classification. ICLR 2022,
        section 5 (UNICORN-MAML). https://arxiv.org/abs/2106.16245

        Kao, Chiu, Chen. MAML is a Noisy Contrastive Learner in Classification. ICLR 2022
        (the zeroing trick). https://arxiv.org/abs/2106.15367
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 1,
        *,
        first_order: bool = False,
        adapt: AdaptSelector = None,
        update: UpdateRule | None = None,
        objective: Objective | None = None,
        vectorize: str = "auto",
        backend: str = "func",
        head: str = "head",
        head_init: str = "learned",
    ) -> None:
        super().__init__(
            model, loss, inner_lr, inner_steps, first_order=first_order, adapt=adapt,
            update=update, objective=objective, vectorize=vectorize, backend=backend,
        )  # fmt: skip
        layer = dict(self.model.named_modules()).get(head)
        if not isinstance(layer, nn.Linear):
            raise ValueError(
                f"head={head!r} must name the model's final nn.Linear; the model has "
                f"{[n for n, _ in self.model.named_children()]}"
            )
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        self.head, self.head_init = head, head_init
        self.weight = head + ".weight"
        self.bias = None if layer.bias is None else head + ".bias"
        adapted = {*self.adapt_names, self.weight, self.bias}
        self.adapt_names = [n for n in self.params() if n in adapted]  # the model's order
        self.out_features = layer.out_features
        row = layer.weight.new_zeros(layer.in_features)
        bias = None if layer.bias is None else layer.bias.new_zeros(())
        if head_init == "learned":
            self.head_weight = nn.Parameter(row)
            self.head_bias = None if bias is None else nn.Parameter(bias)
        else:  # the zeroing trick: a constant start, saved with the learner, never trained
            self.register_buffer("head_weight", row)
            self.register_buffer("head_bias", bias)

    def shared_head(self) -> Params:
        """The head every task starts from: the shared row repeated ``out_features`` times."""
        start = {self.weight: self.head_weight.expand(self.out_features, -1)}
        if self.bias is not None:
            start[self.bias] = self.head_bias.expand(self.out_features)
        return start

    def inner(self, params: Params, support: Split, steps: int, first_order: bool, **kw) -> object:
        """The inner loop of :class:`Learner` from ``params`` with the shared head."""
        return super().inner({**params, **self.shared_head()}, support, steps, first_order, **kw)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, head={self.head!r}, head_init={self.head_init!r}"
