"""Proto-MAML: MAML whose linear head starts from the class prototypes (Triantafillou et al.)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from metalearn.algorithms.base import AdaptSelector
from metalearn.algorithms.inner import LossFn, Objective, Params, functional_forward
from metalearn.algorithms.protonet import TaskClasses, class_prototypes
from metalearn.algorithms.updates import UpdateRule
from metalearn.tasks.batch import Split

__all__ = ["ProtoMAML"]


class ProtoMAML(TaskClasses):
    """MAML on ``head(embedding(x))`` whose head is set per task from the support prototypes.

    For each task, with ``c_k`` the mean embedding of the support examples of class ``k``
    (labels ``0..n_way-1``, ``n_way`` read from the support), the linear head becomes
    ``W_k = 2 c_k``, ``b_k = -||c_k||^2``: its logits ``2 c_k.f - ||c_k||^2`` are the
    prototypical network's ``-||f - c_k||^2`` up to ``||f||^2``, the same for every class, so
    before any step it classifies as a ProtoNet. Then the usual inner loop (``inner_steps``
    steps of the update rule on the support loss, on the parameters ``adapt`` selects plus the
    head), and the meta-loss is the query loss. The prototypes are computed from the body's
    parameters without stopping gradients, so the meta-gradient reaches the body through the
    head's initialisation too (also with ``first_order=True``, as in the paper's fo-Proto-MAML).
    Evaluation starts from the same prototype head (``path[0]`` of the trajectory has it).

    The model is an embedding submodule followed by a linear head (as
    :class:`~metalearn.models.MLP` and :class:`~metalearn.models.Conv4` are: ``"body"``,
    ``"head"``); the logits are ``F.linear(embedding(x).flatten(1), W, b)``. The head's own
    values are never used (each task overwrites them, so they get no meta-gradient); its
    ``out_features`` bounds the number of classes per task. The fast weights hold a head of
    ``n_way`` rows.

    Args:
        model: ``embedding`` then ``head``; no other parameters.
        loss: a classification loss on logits, e.g. ``F.cross_entropy``.
        inner_lr: inner step size alpha.
        inner_steps: inner steps during meta-training.
        first_order: drop second-order terms (the prototype path stays differentiable).
        adapt: which of the model's parameters adapt besides the head (default all, as MAML);
            ``"head"`` adapts the head only.
        update: the inner update rule (:mod:`metalearn.updates`); default ``sgd(inner_lr)``.
        objective: ``objective(params, split) -> scalar``; default the loss of the forward.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"`` over the tasks of a batch.
        backend: ``"func"`` (default) or ``"higher"``; same meta-gradients.
        embedding: the submodule that embeds (default ``"body"``).
        head: the final ``nn.Linear`` (default ``"head"``).

    Raises:
        ValueError: when ``head`` is not an ``nn.Linear`` with a bias, ``embedding`` names no
            submodule, the model has parameters outside both, or a task has more classes than
            the head's ``out_features``.

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> net = ml.models.MLP([2, 16, 16, 3])
        >>> learner = ml.ProtoMAML(net, F.cross_entropy, inner_lr=0.1, inner_steps=1)
        >>> x = torch.randn(4, 6, 2); y = torch.arange(3).repeat(2).expand(4, 6)
        >>> batch = ml.tasks.TaskBatch.from_tensors(x, y, x, y)
        >>> learner(batch).loss.backward()
        >>> learner.adapt(batch.task(0).support, steps=0)["head.weight"].shape
        torch.Size([3, 16])

    Reference:
        Triantafillou et al. Meta-Dataset: A Dataset of Datasets for Learning to Learn from
        Few Examples. ICLR 2020, section 3 (Proto-MAML). https://arxiv.org/abs/1903.03096
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
        embedding: str = "body",
        head: str = "head",
    ) -> None:
        super().__init__(
            model, loss, inner_lr, inner_steps, first_order=first_order, adapt=adapt,
            update=update, objective=objective, vectorize=vectorize, backend=backend,
        )  # fmt: skip
        modules = dict(self.model.named_modules())
        layer = modules.get(head)
        if not isinstance(layer, nn.Linear) or layer.bias is None:
            raise ValueError(f"head={head!r} must name an nn.Linear with a bias; got {layer!r}")
        if embedding not in modules or embedding in ("", head):
            raise ValueError(
                f"embedding={embedding!r} must name a submodule other than the head; the model "
                f"has {[n for n, _ in self.model.named_children()]}"
            )
        others = [n for n in self.params() if not n.startswith((embedding + ".", head + "."))]
        if others:
            raise ValueError(
                f"ProtoMAML computes head(embedding(x)), which would ignore parameters {others}"
            )
        self.embedding, self.head = embedding, head
        self.weight, self.bias = head + ".weight", head + ".bias"
        adapted = {*self.adapt_names, self.weight, self.bias}
        self.adapt_names = [n for n in self.params() if n in adapted]  # the model's order
        self.max_classes = layer.out_features
        self._embed = functional_forward(modules[embedding], backend)

    def _check_n_way(self, n_way: int) -> None:
        if n_way > self.max_classes:
            raise ValueError(
                f"a task has {n_way} classes but head={self.head!r} has out_features="
                f"{self.max_classes}; build the model with at least {n_way} outputs"
            )

    def embed(self, params: Params, x: Tensor) -> Tensor:
        """Embeddings ``[examples, embedding_dim]`` of ``x`` under ``params``."""
        prefix = self.embedding + "."
        own = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        return self._embed(own, x).flatten(1)

    def model_forward(self, params: Params, x: Tensor) -> Tensor:
        """Logits ``F.linear(embed(params, x), params[head.weight], params[head.bias])``."""
        return F.linear(self.embed(params, x), params[self.weight], params[self.bias])

    def prototype_head(self, params: Params, support: Split) -> Params:
        """``{head.weight: 2 c, head.bias: -||c||^2}`` from the support prototypes ``c``."""
        if self._task_classes is None:
            raise RuntimeError(
                "ProtoMAML needs the number of classes: call the learner, adapt or "
                "evaluate_batch (they read it from the support labels)"
            )
        prototypes = class_prototypes(self.embed(params, support.x), support.y, self._task_classes)
        return {self.weight: 2 * prototypes, self.bias: -prototypes.pow(2).sum(-1)}

    def inner(self, params: Params, support: Split, steps: int, first_order: bool, **kw) -> object:
        """The inner loop of :class:`Learner` from ``params`` with the prototype head."""
        start = {**params, **self.prototype_head(params, support)}
        return super().inner(start, support, steps, first_order, **kw)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, embedding={self.embedding!r}, head={self.head!r}"
