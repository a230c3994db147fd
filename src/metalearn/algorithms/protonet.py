"""Prototypical networks (Snell et al. 2017)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn._functorch import under_functorch_transform
from metalearn.algorithms.base import Learner, MetaOutput
from metalearn.algorithms.inner import Params, checked_loss, functional_forward
from metalearn.tasks.batch import Split, TaskBatch

__all__ = ["ProtoNet"]

# The key under which adapt() returns a task's prototypes alongside the model's parameters.
PROTOTYPES = "prototypes"


class TaskClasses(Learner):
    """A learner whose tasks are N-way classification with labels ``0..n_way-1``: each entry
    point reads ``n_way`` from the support labels (outside ``vmap``, where a label-dependent
    count cannot be read) into ``self._task_classes`` before the usual work."""

    n_way: int | None = None
    _task_classes: int | None = None

    # -- the public surface: each entry point reads the number of classes first ------------
    def forward(self, batch: TaskBatch) -> MetaOutput:
        """Meta-loss of a task batch: query cross-entropy, averaged over its tasks."""
        if not isinstance(batch, TaskBatch):
            raise TypeError(f"expected a TaskBatch, got {type(batch).__name__}")
        with self._classes_of(batch.support.y):
            return super().forward(batch)

    def adapt(self, support: Split, steps: int | None = None) -> Params:
        """One task's fast weights (:meth:`Learner.adapt`), the class count read first."""
        with self._classes_of(support.y):
            return super().adapt(support, steps)

    def evaluate_batch(self, batch: TaskBatch, steps: list[int]) -> dict[str, Tensor]:
        """Query metrics of every task (:meth:`Learner.evaluate_batch`), the class count read
        first."""
        with self._classes_of(batch.support.y):
            return super().evaluate_batch(batch, steps)

    @contextlib.contextmanager
    def _classes_of(self, labels: Tensor) -> Iterator[None]:
        previous = self._task_classes
        if previous is not None and (torch.compiler.is_compiling() or under_functorch_transform()):
            # Inside the compiled meta-gradient's trace: the eager call outside read the count.
            yield
            return
        self._task_classes = self._check_labels(labels)
        try:
            yield
        finally:
            self._task_classes = previous

    def _check_labels(self, labels: Tensor) -> int:
        # Outside vmap, once per call: under vmap a label-dependent class count cannot be read.
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(
                f"{type(self).__name__} needs integer class labels 0..n_way-1, got dtype "
                f"{labels.dtype}"
            )
        n_way = self.n_way if self.n_way is not None else int(labels.max()) + 1
        self._check_n_way(n_way)
        if labels.min() < 0 or labels.max() >= n_way:
            raise ValueError(f"support labels must lie in 0..{n_way - 1} (n_way={n_way})")
        counts = (
            labels.reshape(-1, labels.shape[-1])[..., None]
            == torch.arange(n_way, device=labels.device)
        ).sum(-2)
        if (counts == 0).any():
            task, label = (counts == 0).nonzero()[0].tolist()
            raise ValueError(
                f"task {task} has no support example of class {label}: every class "
                f"0..{n_way - 1} needs one to have a prototype"
            )
        return n_way

    def _check_n_way(self, n_way: int) -> None:
        """Hook: refuse a class count the learner cannot serve (default: any)."""


def class_prototypes(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """The mean embedding of each class ``0..n_way-1``: ``[n_way, embedding_dim]``."""
    classes = torch.arange(n_way, device=labels.device)
    # One-hot by comparison: vmap-safe, unlike data-dependent indexing.
    members = (labels[:, None] == classes).to(embeddings.dtype)  # [examples, n_way]
    return (members.T @ embeddings) / members.sum(0)[:, None]


class ProtoNet(TaskClasses):
    """Classify a query by its distance to each class's mean support embedding; no inner loop.

    For each task, the prototype of class ``c`` is the mean embedding of its support examples,
    ``p_c = mean_{y_i = c} f(x_i)``, and a query ``x`` gets the logits
    ``-||f(x) - p_c||^2`` (squared Euclidean distance). The meta-loss is the cross-entropy of
    the query labels, averaged over the tasks; its gradient reaches the embedding ``f``
    through the query and the support embeddings alike.

    It fits the learner interface with the prototypes as the "fast weights":
    :meth:`adapt` returns the model's parameters plus a ``"prototypes"`` entry
    (``[n_way, embedding_dim]``), and :meth:`predict` reads it. There is no inner loop, so
    ``inner_steps`` is 0 and a step count given to :meth:`adapt`, :meth:`evaluate_batch` or
    :func:`metalearn.evaluate` is ignored: every step count gives the same result.

    Tasks are classification tasks with integer labels ``0..n_way-1`` (as
    :class:`~metalearn.tasks.FewShot` makes them) and at least one support example of every
    class.

    Args:
        model: the embedding network ``f``, or a network with an embedding submodule.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"`` over the tasks of a batch.
        backend: ``"func"`` (default) or ``"higher"``; with no inner loop they compute the same.
        embedding: name of the submodule that embeds (e.g. ``"body"`` for
            :class:`~metalearn.models.MLP` and :class:`~metalearn.models.Conv4`, dropping the
            classification head); ``None`` (default) embeds with the whole model. The
            embedding is flattened to ``[examples, embedding_dim]``.
        n_way: the number of classes per task; ``None`` (default) reads it from each batch's
            support labels (``max + 1``).

    Example:
        >>> import torch, metalearn as ml
        >>> net = ml.models.MLP([2, 16, 16, 3])
        >>> protonet = ml.ProtoNet(net, embedding="body")
        >>> x = torch.randn(4, 6, 2); y = torch.arange(3).repeat(2).expand(4, 6)
        >>> batch = ml.tasks.TaskBatch.from_tensors(x, y, x, y)
        >>> protonet(batch).loss.backward()
        >>> fast = protonet.adapt(batch.task(0).support)
        >>> fast["prototypes"].shape, protonet.predict(fast, x[0]).shape
        (torch.Size([3, 16]), torch.Size([6, 3]))

    Reference:
        Snell, Swersky, Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017.
        https://arxiv.org/abs/1703.05175
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        vectorize: str = "auto",
        backend: str = "func",
        embedding: str | None = None,
        n_way: int | None = None,
    ) -> None:
        super().__init__(model, F.cross_entropy, 0.0, 0, vectorize=vectorize, backend=backend)
        if embedding is None:
            self._embedding_prefix = ""
            self._embed = self._forward
        else:
            try:
                submodule = self.model.get_submodule(embedding)
            except AttributeError:
                children = [name for name, _ in self.model.named_children()]
                raise ValueError(
                    f"embedding={embedding!r} names no submodule of the model; it has {children}"
                ) from None
            self._embedding_prefix = embedding + "."
            self._embed = functional_forward(submodule, backend)
        if n_way is not None and (
            isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 1
        ):
            raise ValueError(f"n_way must be an int >= 1 or None, got {n_way!r}")
        if PROTOTYPES in self.params():
            raise ValueError(f"the model has a parameter named {PROTOTYPES!r}; rename it")
        self.embedding = embedding
        self.n_way = n_way
        self._task_classes: int | None = None

    # -- the pieces: embed, prototypes (the "inner loop"), distances (the prediction) -------
    def embed(self, params: Params, x: Tensor) -> Tensor:
        """Embeddings ``[examples, embedding_dim]`` of ``x`` under ``params``."""
        prefix = self._embedding_prefix
        own = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        own.pop(PROTOTYPES, None)
        return self._embed(own, x).flatten(1)

    def inner(self, params: Params, support: Split, steps: int, first_order: bool, **kw) -> object:
        """``params`` plus the task's class prototypes (``steps`` and ``first_order`` unused).

        With ``trajectory=True``, the same dict ``steps + 1`` times (the evaluation contract).
        """
        trajectory = kw.pop("trajectory", False)
        if kw:
            raise TypeError(f"ProtoNet.inner got unexpected arguments {sorted(kw)}")
        if self._task_classes is None:
            raise RuntimeError(
                "ProtoNet needs the number of classes: call the learner, adapt or "
                "evaluate_batch (they read it from the support labels), or pass n_way"
            )
        prototypes = class_prototypes(self.embed(params, support.x), support.y, self._task_classes)
        fast = {**params, PROTOTYPES: prototypes}
        return [fast] * (steps + 1) if trajectory else fast

    def predict(self, params: Params, x: Tensor, steps: int | None = None) -> Tensor:
        """Logits ``[examples, n_way]``: minus the squared distances to ``params["prototypes"]``."""
        if PROTOTYPES not in params:
            raise ValueError(
                "ProtoNet.predict needs the class prototypes: pass the dict that "
                "adapt(support) returns, not the model's parameters"
            )
        embeddings = self.embed(params, x)
        return -(embeddings[:, None, :] - params[PROTOTYPES][None]).pow(2).sum(-1)

    _loss_of_predict = True

    def objective(self, params: Params, split: Split) -> Tensor:
        """Cross-entropy of the prototype logits (:meth:`predict`) on ``split``."""
        return checked_loss(self.loss, self.predict(params, split.x), split.y)

    def extra_repr(self) -> str:
        return f"embedding={self.embedding!r}, n_way={self.n_way}, vectorize={self.vectorize!r}"
