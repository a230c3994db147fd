"""MAML++ (Antoniou, Edwards, Storkey 2019): the fixes of "How to train your MAML"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from metalearn._checks import check_int
from metalearn.algorithms.base import AdaptSelector, Learner, _check_steps
from metalearn.algorithms.inner import LossFn, Objective, Params
from metalearn.algorithms.updates import parameter_key, per_step
from metalearn.models.layers import BatchNorm
from metalearn.tasks.batch import Split

__all__ = ["MAMLPlusPlus", "multi_step_loss_weights"]


def multi_step_loss_weights(steps: int, epoch: int, msl_epochs: int) -> list[float]:
    """MAML++'s annealed importance of the query loss after each inner step (MSL).

    Every step starts at weight ``1/steps``; each epoch moves ``1/(steps*msl_epochs)`` from
    every earlier step (down to a floor of ``0.03/steps``) to the last one (up to
    ``1 - (steps-1)*0.03/steps``), so by ``msl_epochs`` the loss is almost the final step's.
    This is the schedule of the authors' code (``get_per_step_loss_importance_vector``).

    Example:
        >>> multi_step_loss_weights(5, 0, 10)
        [0.2, 0.2, 0.2, 0.2, 0.2]
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    decay = epoch / (steps * msl_epochs)
    floor = 0.03 / steps
    weights = [max(1.0 / steps - decay, floor) for _ in range(steps - 1)]
    weights.append(min(1.0 / steps + (steps - 1) * decay, 1.0 - (steps - 1) * floor))
    return weights


class MAMLPlusPlus(Learner):
    """MAML with the five fixes of Antoniou et al. (2019); each can be switched off.

    * **LSLR** (``learn_step_sizes``): a learned inner learning rate per adapted parameter
      tensor (per layer) and per step: the update rule :func:`metalearn.updates.per_step`,
      ``self.update.rates[key][step]``, initialised to ``inner_lr`` (checkpoints that stored
      them as ``step_lrs.*`` still load). Without LSLR the rule is ``sgd(inner_lr)``.
    * **MSL** (``multi_step_loss``): while ``epoch < msl_epochs`` the meta-loss is a weighted sum
      of the query losses after every inner step (:func:`multi_step_loss_weights`); afterwards
      the query loss after the last step only.
    * **BNWB** (``per_step_bn``): every :class:`~metalearn.models.BatchNorm` layer gets its own
      weight and bias per inner step. Step 0 uses the model's own; steps ``1..inner_steps-1``
      use ``self.bn_per_step`` (initialised from the model's). Step ``s``'s support loss uses
      set ``s``; the query after ``k`` steps uses set ``k-1`` (the last set beyond
      ``inner_steps``). These parameters are meta-learned and do not adapt in the inner loop.
      Our BatchNorm always normalises with batch statistics, so the paper's per-step *running*
      statistics do not arise.
    * **DA** (``first_order_epochs``): first-order meta-gradients while
      ``epoch < first_order_epochs``, second order afterwards (unless ``first_order=True``).
    * **CA** (``cosine_annealing``): :meth:`scheduler` returns a cosine-annealing schedule of
      the meta learning rate (a constant one when switched off).

    Training progress comes from :meth:`set_epoch`; call it at the start of every epoch
    (``learner.set_epoch(epoch)``) and step the scheduler at the end of it. The epoch is saved
    in ``state_dict()``. :class:`~metalearn.training.Trainer` (and so ``metalearn.train`` and
    the CLI) does this for you through :meth:`on_iteration`: an epoch is
    ``iterations_per_epoch`` meta-updates (500 in the authors' code).

    Args:
        model: the network (convert ``torch.nn.BatchNorm`` with
            :func:`~metalearn.models.convert_batchnorm`).
        loss: ``loss(prediction, target) -> scalar``.
        inner_lr: the inner learning rate (the initial value of the learned ones with LSLR).
        inner_steps: inner steps during meta-training (the paper uses 5).
        first_order: always first order (overrides DA).
        adapt: which parameters adapt (default all but the BatchNorm parameters with BNWB).
        objective: ``objective(params, split) -> scalar``; default the loss of the forward.
        vectorize: ``"auto"``, ``"vmap"`` or ``"loop"``.
        backend: ``"func"`` (default) or ``"higher"``.
        learn_step_sizes: LSLR.
        multi_step_loss: MSL.
        msl_epochs: epochs over which MSL anneals (default 15, the authors' code's default).
        per_step_bn: BNWB; needs at least one :class:`~metalearn.models.BatchNorm` layer.
        first_order_epochs: DA: first order for this many epochs (the paper: 50; 0 = second
            order throughout).
        iterations_per_epoch: meta-updates per epoch when the trainer drives the epoch.
        cosine_annealing: CA (see :meth:`scheduler`).

    Example:
        >>> import torch, torch.nn.functional as F, metalearn as ml
        >>> net = ml.models.Conv4(in_channels=1, n_classes=5, hidden=8, image_size=28)
        >>> mamlpp = ml.MAMLPlusPlus(net, F.cross_entropy, inner_lr=0.1, inner_steps=5)
        >>> opt = torch.optim.Adam(mamlpp.parameters(), lr=1e-3)
        >>> schedule = mamlpp.scheduler(opt, total_epochs=100)
        >>> mamlpp.set_epoch(0)  # each epoch; then per batch:
        >>> opt.step()  # ... after each batch's backward
        >>> schedule.step()  # at the end of each epoch

    Reference:
        Antoniou, Edwards, Storkey. How to train your MAML. ICLR 2019.
        https://arxiv.org/abs/1810.09502
    """

    _renamed_state: ClassVar[dict[str, str]] = {"step_lrs.": "update.rates."}
    _loss_of_predict = True  # predict and query_loss use the same BatchNorm set

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        inner_lr: float,
        inner_steps: int = 5,
        *,
        first_order: bool = False,
        adapt: AdaptSelector = None,
        objective: Objective | None = None,
        vectorize: str = "auto",
        backend: str = "func",
        learn_step_sizes: bool = True,
        multi_step_loss: bool = True,
        msl_epochs: int = 15,
        per_step_bn: bool = True,
        first_order_epochs: int = 50,
        iterations_per_epoch: int = 500,
        cosine_annealing: bool = True,
    ) -> None:
        super().__init__(
            model,
            loss,
            inner_lr,
            inner_steps,
            first_order=first_order,
            adapt=adapt,
            objective=objective,
            vectorize=vectorize,
            backend=backend,
        )
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1 for MAML++, got {inner_steps}")
        self.msl_epochs = _check_steps("msl_epochs", msl_epochs)
        if multi_step_loss and self.msl_epochs < 1:
            raise ValueError("msl_epochs must be >= 1 with multi_step_loss=True")
        self.first_order_epochs = _check_steps("first_order_epochs", first_order_epochs)
        self.iterations_per_epoch = check_int("iterations_per_epoch", iterations_per_epoch, 1)
        self.learn_step_sizes = bool(learn_step_sizes)
        self.multi_step_loss = bool(multi_step_loss)
        self.per_step_bn = bool(per_step_bn)
        self.cosine_annealing = bool(cosine_annealing)
        self._epoch = 0

        self.bn_names: list[str] = []
        if self.per_step_bn:
            self._setup_per_step_bn(model, adapt)
        if self.learn_step_sizes:
            adapted = set(self.adapt_names)
            # Registered after bn_per_step, where step_lrs was: optimizer states still line up.
            del self.update
            self.update = per_step(
                {
                    n: torch.full(
                        (self.inner_steps,), self.inner_lr, dtype=p.dtype, device=p.device
                    )
                    for n, p in model.named_parameters()
                    if n in adapted
                }
            )

    def _setup_per_step_bn(self, model: nn.Module, adapt: AdaptSelector) -> None:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ValueError(
                "per_step_bn=True needs metalearn.models.BatchNorm layers, found torch.nn "
                "BatchNorm; convert them with metalearn.models.convert_batchnorm(model)"
            )
        self.bn_names = [
            f"{prefix}.{kind}" if prefix else kind
            for prefix, m in model.named_modules()
            if isinstance(m, BatchNorm) and m.weight is not None
            for kind in ("weight", "bias")
        ]
        if not self.bn_names:
            raise ValueError(
                "per_step_bn=True but the model has no affine metalearn.models.BatchNorm "
                "layer; pass per_step_bn=False"
            )
        chosen = set(self.bn_names) & set(self.adapt_names)
        if adapt is not None and chosen:
            raise ValueError(
                f"adapt selects BatchNorm parameters {sorted(chosen)}, which per_step_bn=True "
                "meta-learns per step instead of adapting; exclude them or pass per_step_bn=False"
            )
        self.adapt_names = [n for n in self.adapt_names if n not in chosen]
        if not self.adapt_names:
            raise ValueError("with per_step_bn=True no parameter is left to adapt")
        keys = [parameter_key(n) for n in self.bn_names]
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"MAMLPlusPlus: parameter names {self.bn_names} collide once '.' is replaced by "
                "'__'; rename the modules so that no name contains '__'"
            )
        named = dict(model.named_parameters())
        self.bn_per_step = nn.ParameterDict(
            {
                parameter_key(n): nn.Parameter(
                    named[n].detach().clone().unsqueeze(0).repeat(self.inner_steps - 1, 1)
                )
                for n in self.bn_names
            }
        )

    # -- training progress -----------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The training progress last given to :meth:`set_epoch`."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the training progress that MSL and DA anneal with (call once per epoch)."""
        self._epoch = _check_steps("epoch", epoch)

    def on_iteration(self, iteration: int) -> None:
        """Trainer hook: ``iteration`` meta-updates are done; set the epoch they amount to."""
        self.set_epoch(iteration // self.iterations_per_epoch)

    def get_extra_state(self) -> dict[str, int]:
        return {"epoch": self._epoch}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self._epoch = int(state["epoch"])

    def _connectivity_key(self) -> tuple:
        return (*super()._connectivity_key(), self.uses_first_order(), self.loss_weights() is None)

    def uses_first_order(self) -> bool:
        """Whether the current epoch's meta-gradient is first order (DA)."""
        return self.first_order or self._epoch < self.first_order_epochs

    def loss_weights(self) -> list[float] | None:
        """MSL weights of the query loss after each step, or ``None`` (last step only)."""
        if not self.multi_step_loss or self._epoch >= self.msl_epochs:
            return None
        return multi_step_loss_weights(self.inner_steps, self._epoch, self.msl_epochs)

    def scheduler(
        self, optimizer: torch.optim.Optimizer, total_epochs: int, min_lr: float = 1e-5
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The meta learning-rate schedule; call its ``step()`` once per epoch.

        With ``cosine_annealing=True`` it is
        ``CosineAnnealingLR(optimizer, T_max=total_epochs, eta_min=min_lr)`` as in the paper's
        code; otherwise a schedule that keeps the learning rate constant.
        """
        check_int("total_epochs", total_epochs, 1)
        if self.cosine_annealing:
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=total_epochs, eta_min=min_lr
            )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    # -- the per-step pieces ----------------------------------------------------------------
    def bn_table(self, index: int) -> Params:
        """BatchNorm parameter set ``index`` (clamped to the last) by parameter name; set 0 (or
        no BNWB) is the model's own, so the table is empty."""
        index = min(index, self.inner_steps - 1)
        if not self.per_step_bn or index == 0:
            return {}
        return {n: self.bn_per_step[parameter_key(n)][index - 1] for n in self.bn_names}

    def inner_objective(self, params: Params, steps: int) -> Objective | Sequence[Objective]:
        """One objective per step: :meth:`objective` with step ``s``'s BatchNorm set (BNWB)."""
        if not self.per_step_bn:
            return self.objective
        return [self._objective_with_set(s) for s in range(steps)]

    def _objective_with_set(self, index: int) -> Objective:
        def objective(params: Params, split: Split) -> Tensor:
            return self.objective({**params, **self.bn_table(index)}, split)

        return objective

    def predict(self, params: Params, x: Tensor, steps: int | None = None) -> Tensor:
        """The model with the BatchNorm set of the last of ``steps`` inner steps (BNWB)."""
        steps = self.inner_steps if steps is None else steps
        return self.model_forward({**params, **self.bn_table(max(steps - 1, 0))}, x)

    def query_loss(
        self, params: Params, query: Split, steps: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`Learner.query_loss` with the BatchNorm set of the last of ``steps`` steps."""
        steps = self.inner_steps if steps is None else steps
        return super().query_loss({**params, **self.bn_table(max(steps - 1, 0))}, query, steps)

    def task_loss(self, params: Params, support: Split, query: Split) -> tuple[Tensor, dict]:
        first_order = self.uses_first_order()
        weights = self.loss_weights()
        if weights is None:
            fast = self.inner(params, support, self.inner_steps, first_order)
            return self.query_loss(fast, query, self.inner_steps)
        path = self.inner(params, support, self.inner_steps, first_order, trajectory=True)
        terms = []
        for k, weight in enumerate(weights, start=1):
            step_loss, metrics = self.query_loss(path[k], query, k)
            terms.append(weight * step_loss)
        # Metrics are those of the final step (what evaluation reports).
        return torch.stack(terms).sum(), metrics

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, learn_step_sizes={self.learn_step_sizes}, "
            f"multi_step_loss={self.multi_step_loss}, msl_epochs={self.msl_epochs}, "
            f"per_step_bn={self.per_step_bn}, first_order_epochs={self.first_order_epochs}, "
            f"cosine_annealing={self.cosine_annealing}, epoch={self._epoch}"
        )
