"""The learners and tiny problems shared by the algorithm tests (imported by the test modules)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import metalearn as ml
from metalearn.tasks import TaskBatch

# name -> (factory(model, loss, **overrides), exact): "exact" learners differentiate their own
# meta-loss (checked against finite differences); the others are first-order approximations.
Factory = Callable[..., ml.Learner]


def _mamlpp(model: nn.Module, loss, **kw) -> ml.Learner:
    has_bn = any(isinstance(m, ml.models.BatchNorm) for m in model.modules())
    kw.setdefault("per_step_bn", has_bn)
    kw.setdefault("first_order_epochs", 0)
    return ml.MAMLPlusPlus(model, loss, 0.3, 2, msl_epochs=3, **kw)


LEARNERS: dict[str, tuple[Factory, bool]] = {
    "MAML": (lambda model, loss, **kw: ml.MAML(model, loss, 0.3, 2, **kw), True),
    "FOMAML": (lambda model, loss, **kw: ml.FOMAML(model, loss, 0.3, 2, **kw), False),
    "ANIL": (lambda model, loss, **kw: ml.ANIL(model, loss, 0.3, 2, head="head", **kw), True),
    "MetaSGD": (lambda model, loss, **kw: ml.MetaSGD(model, loss, 0.3, 2, **kw), True),
    "Reptile": (lambda model, loss, **kw: ml.Reptile(model, loss, 0.3, 3, **kw), False),
    "ReptileAdam": (
        lambda model, loss, **kw: ml.Reptile(
            model, loss, 0.05, 3, update=ml.updates.adam(0.05, betas=(0.0, 0.999)), **kw
        ),
        False,
    ),
    "MAMLPlusPlus": (_mamlpp, True),
    "Pretrain": (lambda model, loss, **kw: ml.Pretrain(model, loss, 0.3, 2, **kw), True),
    "CAVIA": (lambda model, loss, **kw: ml.CAVIA(model, loss, 0.3, 2, context_size=2, **kw), True),
    "ProtoMAML": (lambda model, loss, **kw: ml.ProtoMAML(model, loss, 0.1, 2, **kw), True),
    "UnicornMAML": (lambda model, loss, **kw: ml.UnicornMAML(model, loss, 0.3, 2, **kw), True),
}


def tiny_mlp() -> nn.Module:
    return ml.models.MLP([1, 5, 5, 1], activation=nn.Tanh)


def tiny_conv() -> nn.Module:
    # Four conv blocks with metalearn BatchNorm on 16x16 images -> 1x1, then a 3-way head.
    return ml.models.Conv4(in_channels=1, n_classes=3, hidden=2, image_size=16)


def regression_batch(tasks: int = 3, seed: int = 0, dtype=torch.float64) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    return ml.tasks.Sine(5, 6, dtype=dtype).sample(tasks, generator=g)


def classification_batch(tasks: int = 2, seed: int = 0, dtype=torch.float64) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(tasks, 3, 1, 16, 16, generator=g, dtype=dtype)
    qx = torch.randn(tasks, 3, 1, 16, 16, generator=g, dtype=dtype)
    labels = torch.arange(3).expand(tasks, 3).contiguous()
    return TaskBatch.from_tensors(sx, labels, qx, labels.clone())


def mlp_classification_batch(tasks: int = 3, seed: int = 0, dtype=torch.float64) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(tasks, 6, 4, generator=g, dtype=dtype)
    qx = torch.randn(tasks, 6, 4, generator=g, dtype=dtype)
    labels = torch.arange(3).repeat(2).expand(tasks, 6).contiguous()
    return TaskBatch.from_tensors(sx, labels, qx, labels.clone())


PROBLEMS = {
    "mlp": (tiny_mlp, F.mse_loss, regression_batch),
    "conv": (tiny_conv, F.cross_entropy, classification_batch),
}
# Learners that need another model (or task) for a problem: CAVIA's context enters the MLP's
# input and the conv net's feature maps (FiLM); ProtoMAML classifies, so its "mlp" problem is
# a 3-way classification with an MLP (as UnicornMAML's, whose head rows start equal).
_MLP_CLASSIFICATION = (
    lambda: ml.models.MLP([4, 5, 5, 3], activation=nn.Tanh),
    F.cross_entropy,
    mlp_classification_batch,
)
OWN_PROBLEMS = {
    ("CAVIA", "mlp"): (
        lambda: ml.models.MLP([1 + 2, 5, 5, 1], activation=nn.Tanh),
        F.mse_loss,
        regression_batch,
    ),
    ("CAVIA", "conv"): (
        lambda: ml.models.FiLMConv4(1, 3, hidden=2, image_size=16, context_size=2),
        F.cross_entropy,
        classification_batch,
    ),
    ("ProtoMAML", "mlp"): _MLP_CLASSIFICATION,
    ("UnicornMAML", "mlp"): _MLP_CLASSIFICATION,
}


def problem_of(name: str, problem: str) -> tuple:
    """(make_model, loss, make_batch) of ``problem`` for learner ``name``."""
    return OWN_PROBLEMS.get((name, problem), PROBLEMS[problem])


def build(name: str, problem: str, seed: int = 0, **kw) -> tuple[ml.Learner, TaskBatch]:
    """A float64 learner ``name`` on ``problem`` ("mlp" or "conv") and a batch for it."""
    make_model, loss, make_batch = problem_of(name, problem)
    torch.manual_seed(seed)
    learner = LEARNERS[name][0](make_model(), loss, **kw).double()
    return learner, make_batch()


def factory(name: str, problem: str, seed: int = 0) -> Factory:
    """``make_learner(**options)`` for :mod:`metalearn.testing`: :func:`build`'s learner."""
    return lambda **options: build(name, problem, seed, **options)[0]


def meta_gradient(learner: ml.Learner, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(meta-loss, flat meta-gradient over ``learner.parameters()``)."""
    learner.zero_grad(set_to_none=True)
    out = learner(batch)
    out.loss.backward()
    flat = [
        torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
        for p in learner.parameters()
    ]
    return out.loss.detach(), torch.cat(flat)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
