"""``Learner.compile``: the whole meta-gradient as one ``torch.compile``'d function.

``torch.compile`` cannot serve second-order MAML the usual way: the gradient that comes out of
a compiled function is not differentiable again (AOTAutograd has no double backward). So the
meta-gradient is computed *forward*, inside the compiled function: ``torch.func.grad`` of the
learner's meta-loss with respect to its parameters, whose inner loop is ``torch.func.grad``
again (second order by nesting). The compiled function returns the loss, the metrics and the
meta-gradients; :class:`~metalearn.algorithms._meta_gradient.PrecomputedGradient` (the node the
eager per-task path uses too) hands those gradients to the parameters when the caller runs
``loss.backward()``, so the training loop every learner fits is unchanged.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo.config
from torch import Tensor, nn
from torch.func import functional_call, grad

from metalearn.algorithms._meta_gradient import PrecomputedGradient

__all__ = ["CompiledMetaGradient"]

# Compile modes that replay CUDA graphs, whose outputs live in memory the next replay reuses.
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# Versions one learner may compile (a new batch shape, MAML++'s annealing, which changes the
# meta-loss during its first msl_epochs epochs and again at first_order_epochs); torch's
# default of 8 is shared by every function with the same code (cache_size_limit before 2.6).
_RECOMPILE_LIMIT = 64
_CONFIG = torch._dynamo.config
_LIMIT_NAME = "recompile_limit" if hasattr(_CONFIG, "recompile_limit") else "cache_size_limit"


class CompiledMetaGradient:
    """Callable ``(learner, batch) -> (loss, metrics)``; ``loss.backward()`` hands the
    parameters the meta-gradient that the compiled function computed.

    Args:
        learner: the learner whose eager forward (run under ``torch.func.grad``) defines the
            meta-loss.
        options: keyword arguments for ``torch.compile``.
    """

    def __init__(self, learner: nn.Module, options: dict[str, Any]) -> None:
        def loss_and_aux(params: dict[str, Tensor], batch: Any) -> tuple[Tensor, Any]:
            out = functional_call(learner, params, (batch,))
            return out.loss, (out.loss.detach(), out.metrics)

        def meta_gradient(params: dict[str, Tensor], batch: Any) -> Any:
            return grad(loss_and_aux, has_aux=True)(params, batch)

        # torch.compile keeps compiled versions per code object: a private copy of the code
        # gives each learner its own versions (and limit), so learners never evict each other.
        private = types.FunctionType(
            meta_gradient.__code__.replace(),
            globals(),
            "meta_gradient",
            None,
            meta_gradient.__closure__,
        )
        self.cuda_graphs = options.get("mode") in _CUDA_GRAPH_MODES
        self.function: Callable = torch.compile(private, **options)
        self.connectivity: tuple[Any, tuple[bool, ...]] | None = None

    def connected(self, learner: Any, batch: Any, named: list[tuple[str, Tensor]]) -> tuple:
        """Which parameters the meta-loss depends on (the others get ``None``, not zeros).

        ``torch.func.grad`` gives zeros for a parameter the loss does not depend on (MAML++'s
        first BatchNorm set in its first-order phase), where ``backward()`` leaves ``None``
        and optimizers skip the parameter. One eager forward and backward on one task tells
        which (every task uses the same parameters; one task keeps the probe's memory small);
        it is repeated only when the learner's structure or the batch's shapes change.
        """
        shapes = [(t.shape, t.dtype, t.device) for t in (*batch.support, *batch.query)]
        key = (learner._connectivity_key(), shapes, [n for n, _ in named])
        if self.connectivity is None or self.connectivity[0] != key:
            with torch.enable_grad():
                loss = learner._meta_loss(batch.chunk(1)[0]).loss
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            self.connectivity = (key, tuple(g is not None for g in grads))
        return self.connectivity[1]

    def __call__(self, learner: Any, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        named = [(n, p) for n, p in learner.named_parameters() if p.requires_grad]
        connected = self.connected(learner, batch, named)
        params = {n: p.detach() for n, p in named}
        # A learner that loops over tasks gets one task's meta-gradient compiled and reused
        # for every task (the meta-loss is their mean): the same kernels from a trace a
        # meta-batch smaller, so a 4-task Conv-4 batch compiles about 4x faster.
        parts = [batch] if learner.use_vmap(batch) else batch.chunk(1)
        results = [self.run(params, part) for part in parts]
        if len(results) == 1:
            grads, loss, metrics = results[0]
        else:
            grads = {n: torch.stack([r[0][n] for r in results]).mean(0) for n in params}
            loss = torch.stack([r[1] for r in results]).mean()
            metrics = {k: torch.stack([r[2][k] for r in results]).mean() for k in results[0][2]}
        grads = tuple(grads[n] if c else None for (n, _), c in zip(named, connected, strict=True))
        # Differentiating this loss again yields constants (tested), as before.
        loss = PrecomputedGradient.apply(loss, grads, False, *(p for _, p in named))
        return loss, metrics

    def run(self, params: dict[str, Tensor], batch: Any) -> tuple[dict, Tensor, dict]:
        """The compiled function on one batch: (meta-gradients, loss, metrics)."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        # Raised for this call only (set by hand: config.patch costs 10% of a sine step).
        limit = getattr(_CONFIG, _LIMIT_NAME)
        setattr(_CONFIG, _LIMIT_NAME, max(limit, _RECOMPILE_LIMIT))
        try:
            grads, (loss, metrics) = self.function(params, batch)
        except torch._dynamo.exc.TorchDynamoException as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise RuntimeError(
                f"torch.compile failed on this learner's meta-gradient ({type(error).__name__}: "
                f"{first_line}). If the learner runs without learner.compile(), its model or "
                "loss does something torch.compile cannot trace as one graph: train without "
                "compile(), or call learner.compile(fullgraph=False) to allow graph breaks "
                "(slower)"
            ) from error
        finally:
            setattr(_CONFIG, _LIMIT_NAME, limit)
        if self.cuda_graphs:
            # A later replay overwrites the graph's outputs; keep our own copies.
            grads = {n: g.clone() for n, g in grads.items()}
            loss = loss.clone()
            metrics = {k: v.clone() for k, v in metrics.items()}
        return grads, loss, metrics
