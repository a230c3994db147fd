"""Update rules of the inner loop that compose like optax's gradient transformations.

An update rule turns the support gradients of one inner step into *updates*, and the inner
loop applies them as ``theta <- theta + updates`` (optax's sign convention: plain gradient
descent is ``sgd(lr)``, whose updates are ``-lr * grad``). A rule has two methods:

* ``init(params) -> state``: the per-task state (Adam's moments; ``None`` for stateless rules),
  built from the adapted parameters at the start of every inner loop;
* ``rule(grads, state, step, params) -> (updates, state)``: pure, with no in-place state, so it
  runs per task in a loop or under ``torch.func.vmap`` alike. ``step`` counts inner steps from
  0; ``params`` are the adapted parameters before the step.

Rules are ``nn.Module`` s: a rule with learned rates (Meta-SGD's :func:`per_parameter`, MAML++'s
:func:`per_step`, :func:`sgd` given an ``nn.Parameter``) handed to a learner as ``update=``
becomes its submodule ``learner.update``, so its rates are learner parameters that the
optimizer, ``state_dict()``, ``.to()``, :meth:`~metalearn.Learner.compile` and the per-task
meta-gradients see. Any object with ``init`` and ``__call__`` as above also works
(:class:`UpdateRule`).

Example:
    >>> import torch, metalearn as ml
    >>> rule = ml.updates.chain(ml.updates.scale_by_adam(betas=(0.0, 0.999)), ml.updates.sgd(0.1))
    >>> params = {"w": torch.ones(2)}
    >>> state = rule.init(params)
    >>> updates, state = rule({"w": torch.tensor([1.0, -2.0])}, state, 0, params)
    >>> updates["w"]          # -0.1 * the Adam direction (+-1 on the first step)
    tensor([-0.1000,  0.1000])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

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
    "check_rule",
    "parameter_key",
    "per_parameter",
    "per_step",
    "rule_from_config",
    "scale",
    "scale_by_adam",
    "sgd",
]

Params = dict[str, Tensor]


@runtime_checkable
class UpdateRule(Protocol):
    """What the inner loop needs of an update rule (see the module docstring)."""

    def init(self, params: Params) -> Any: ...

    def __call__(
        self, grads: Params, state: Any, step: int, params: Params
    ) -> tuple[Params, Any]: ...


def check_rule(update: object) -> UpdateRule:
    """``update`` if it is an update rule, else a ``TypeError`` that says what to pass."""
    if isinstance(update, str):
        raise TypeError(
            f"update must be an update rule, not the string {update!r}: write e.g. "
            "update=metalearn.updates.adam(lr, betas=(0.0, 0.999)) or "
            "update=metalearn.updates.sgd(lr)"
        )
    if not callable(update) or not callable(getattr(update, "init", None)):
        raise TypeError(
            f"update must be an update rule with init(params) and "
            f"__call__(grads, state, step, params), e.g. metalearn.updates.sgd(lr); "
            f"got {type(update).__name__}"
        )
    return update  # type: ignore[return-value]


def parameter_key(name: str) -> str:
    """A ``ParameterDict`` key for a parameter name (``'.'`` is not allowed in keys)."""
    return name.replace(".", "__")


class Rule(nn.Module):
    """Base of the built-in rules: stateless unless :meth:`init` says otherwise.

    Subclasses implement :meth:`forward` (same arguments as ``__call__``); calling a rule
    skips ``nn.Module``'s hook machinery, since the inner loop calls it once per step.
    """

    def init(self, params: Params) -> Any:
        """The per-task state for ``params`` (``None``: stateless)."""
        return None

    def __call__(  # type: ignore[override]
        self, grads: Params, state: Any, step: int, params: Params
    ) -> tuple[Params, Any]:
        return self.forward(grads, state, step, params)


def _scalar(name: str, value: float | Tensor) -> float | Tensor:
    if isinstance(value, Tensor):
        if value.dim() != 0:
            raise ValueError(f"{name} must be a number or a scalar tensor, got {value.shape}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number or a scalar tensor, got {value!r}")
    return float(value)


class SGD(Rule):
    """Updates ``-lr * grad``; see :func:`sgd`."""

    def __init__(self, lr: float | Tensor) -> None:
        super().__init__()
        lr = _scalar("lr", lr)
        if isinstance(lr, nn.Parameter):
            self.lr = lr
        elif isinstance(lr, Tensor):
            self.register_buffer("lr", lr, persistent=False)
        else:
            self.lr = lr

    def forward(self, grads: Params, state: Any, step: int, params: Params) -> tuple[Params, Any]:
        lr = self.lr
        return {k: -lr * g for k, g in grads.items()}, state

    def extra_repr(self) -> str:
        lr = self.lr
        return f"lr={lr.item() if isinstance(lr, Tensor) else lr}"


def sgd(lr: float | Tensor) -> SGD:
    """Gradient descent: updates ``-lr * grad`` (the inner step of MAML).

    Args:
        lr: the step size: a number, or a scalar tensor (an ``nn.Parameter`` is meta-learned
            once the rule is a learner's ``update``).

    Example:
        >>> import torch
        >>> sgd(0.5)({"w": torch.tensor([2.0])}, None, 0, {})[0]
        {'w': tensor([-1.])}
    """
    return SGD(lr)


class Scale(Rule):
    """Updates ``factor * grad``; see :func:`scale`."""

    def __init__(self, factor: float | Tensor) -> None:
        super().__init__()
        self.factor = _scalar("factor", factor)

    def forward(self, grads: Params, state: Any, step: int, params: Params) -> tuple[Params, Any]:
        return {k: self.factor * g for k, g in grads.items()}, state

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def scale(factor: float | Tensor) -> Scale:
    """Multiply the incoming updates by ``factor`` (no sign change: ``scale(-lr)`` is SGD).

    Example:
        >>> import torch
        >>> scale(3.0)({"w": torch.tensor([2.0])}, None, 0, {})[0]
        {'w': tensor([6.])}
    """
    return Scale(factor)


class ScaleByAdam(Rule):
    """Adam's direction ``m_hat / (sqrt(v_hat) + eps)``; see :func:`scale_by_adam`."""

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__()
        try:
            beta1, beta2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair of numbers, got {betas!r}") from None
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.betas = (beta1, beta2)
        self.eps = float(eps)

    def init(self, params: Params) -> dict[str, tuple[Tensor, Tensor]]:
        return {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}

    def forward(self, grads: Params, state: Any, step: int, params: Params) -> tuple[Params, Any]:
        beta1, beta2 = self.betas
        t = step + 1
        correction1 = 1.0 - beta1**t
        root_correction2 = math.sqrt(1.0 - beta2**t)
        directions, new_state = {}, {}
        for k, g in grads.items():
            m, v = state[k]
            m = beta1 * m + (1.0 - beta1) * g
            v = beta2 * v + (1.0 - beta2) * g * g
            directions[k] = (m / correction1) / (v.sqrt() / root_correction2 + self.eps)
            new_state[k] = (m, v)
        return directions, new_state

    def extra_repr(self) -> str:
        return f"betas={self.betas}, eps={self.eps}"


def scale_by_adam(betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> ScaleByAdam:
    """Adam's direction ``m_hat / (sqrt(v_hat) + eps)``, moments fresh for every task.

    The same arithmetic as ``torch.optim.Adam``; follow it with a step size, e.g.
    ``chain(scale_by_adam(), sgd(lr))`` (which is :func:`adam`).

    Args:
        betas: decay rates of the first and second moments.
        eps: added to the root of the second moment.
    """
    return ScaleByAdam(betas, eps)


def adam(lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Chain:
    """Adam with step size ``lr``: ``chain(scale_by_adam(betas, eps), sgd(lr))``.

    Reptile's few-shot experiments use ``betas=(0.0, 0.999)`` (Nichol et al. 2018).

    Example:
        >>> import torch.nn.functional as F, metalearn as ml
        >>> reptile = ml.Reptile(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.001, 5,
        ...                      update=ml.updates.adam(0.001, betas=(0.0, 0.999)))

    Reference:
        Kingma, Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
    """
    return Chain(ScaleByAdam(betas, eps), SGD(lr))


def _rates_dict(rates: Mapping[str, Tensor | float], what: str) -> nn.ParameterDict:
    if not isinstance(rates, Mapping) or not rates:
        raise TypeError(f"{what} needs a non-empty dict parameter name -> rate, got {rates!r}")
    keys = [parameter_key(n) for n in rates]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"{what}: parameter names {list(rates)} collide once '.' is replaced by '__'; "
            "rename the modules so that no name contains '__'"
        )
    return nn.ParameterDict(
        {
            parameter_key(n): nn.Parameter(torch.as_tensor(r, dtype=torch.get_default_dtype()))
            if not isinstance(r, Tensor)
            else (r if isinstance(r, nn.Parameter) else nn.Parameter(r.detach().clone()))
            for n, r in rates.items()
        }
    )


class _LearnedRates(Rule):
    def __init__(self, rates: Mapping[str, Tensor | float], what: str) -> None:
        super().__init__()
        self.names = list(rates)
        self.rates = _rates_dict(rates, what)

    def named_rates(self) -> dict[str, Tensor]:
        """The learned rates by parameter name (``'.'`` restored)."""
        return {n: self.rates[parameter_key(n)] for n in self.names}

    def _rate(self, name: str) -> Tensor:
        key = parameter_key(name)
        if key not in self.rates:
            raise KeyError(
                f"{type(self).__name__} has no rate for parameter {name!r} (it has rates for "
                f"{self.names}); give one for every adapted parameter"
            )
        return self.rates[key]

    def extra_repr(self) -> str:
        return f"names={self.names}"


class PerParameter(_LearnedRates):
    """Updates ``-rate[name] * grad`` with learned rates; see :func:`per_parameter`."""

    def forward(self, grads: Params, state: Any, step: int, params: Params) -> tuple[Params, Any]:
        return {k: -self._rate(k) * g for k, g in grads.items()}, state


def per_parameter(rates: Mapping[str, Tensor | float]) -> PerParameter:
    """Learned step sizes per parameter: updates ``-rates[name] * grad`` (Meta-SGD).

    Each rate broadcasts against its parameter: a tensor of the parameter's shape is Meta-SGD's
    rate per entry, a scalar one rate per tensor (per layer). The rates are ``nn.Parameter`` s
    (meta-learned once the rule is a learner's ``update``), stored in ``rule.rates`` under the
    parameter name with ``'.'`` replaced by ``'__'``; :meth:`PerParameter.named_rates` gives
    them by name.

    Args:
        rates: parameter name -> initial rate (tensor or number); every adapted parameter needs
            one.

    Example:
        >>> import torch, metalearn as ml
        >>> net = ml.models.MLP([1, 8, 1])
        >>> rule = per_parameter({n: torch.full_like(p, 0.01) for n, p in net.named_parameters()})
        >>> rule.named_rates()["head.weight"].shape
        torch.Size([1, 8])

    Reference:
        Li, Zhou, Chen, Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning. 2017.
    """
    return PerParameter(rates, "per_parameter")


class PerStep(_LearnedRates):
    """Updates ``-rates[name][step] * grad`` with learned rates; see :func:`per_step`."""

    def __init__(self, rates: Mapping[str, Tensor | float]) -> None:
        super().__init__(rates, "per_step")
        for name, r in self.named_rates().items():
            if r.dim() < 1 or r.shape[0] < 1:
                raise ValueError(
                    f"per_step: the rates of {name!r} need a leading step dimension, got shape "
                    f"{tuple(r.shape)}; e.g. torch.full((inner_steps,), lr)"
                )

    def forward(self, grads: Params, state: Any, step: int, params: Params) -> tuple[Params, Any]:
        updates = {}
        for k, g in grads.items():
            rates = self._rate(k)
            updates[k] = -rates[min(step, rates.shape[0] - 1)] * g
        return updates, state


def per_step(rates: Mapping[str, Tensor | float]) -> PerStep:
    """Learned step sizes per parameter and step: ``-rates[name][step] * grad`` (MAML++'s LSLR).

    ``rates[name]`` has a leading step dimension (``[steps]`` for one rate per layer and step,
    as MAML++; ``[steps, *shape]`` per entry). Steps beyond the last reuse the last step's
    rates (evaluation with more steps than training). Stored and learned as in
    :func:`per_parameter`.

    Example:
        >>> import torch, metalearn as ml
        >>> net = ml.models.MLP([1, 8, 1])
        >>> rule = per_step({n: torch.full((5,), 0.1) for n, _ in net.named_parameters()})
        >>> rule.named_rates()["head.bias"].shape
        torch.Size([5])

    Reference:
        Antoniou, Edwards, Storkey. How to train your MAML. ICLR 2019 (LSLR).
    """
    return PerStep(rates)


class Chain(Rule):
    """Rules applied one after the other; see :func:`chain`."""

    def __init__(self, *rules: UpdateRule) -> None:
        super().__init__()
        if not rules:
            raise ValueError("chain needs at least one update rule")
        checked = [check_rule(r) for r in rules]
        # Module rules are registered (their learned rates are parameters); others are kept.
        self.rules = nn.ModuleList([r for r in checked if isinstance(r, nn.Module)])
        self._order = [r if not isinstance(r, nn.Module) else None for r in checked]

    def _each(self) -> list[UpdateRule]:
        modules = iter(self.rules)
        return [next(modules) if r is None else r for r in self._order]

    def init(self, params: Params) -> tuple:
        return tuple(r.init(params) for r in self._each())

    def forward(self, grads: Params, state: Any, step: int, params: Params) -> tuple[Params, Any]:
        states = []
        for rule, s in zip(self._each(), state, strict=True):
            grads, s = rule(grads, s, step, params)
            states.append(s)
        return grads, tuple(states)


def chain(*rules: UpdateRule) -> Chain:
    """Compose rules: each one transforms the updates of the one before (optax's ``chain``).

    Example:
        >>> rule = chain(scale_by_adam(), sgd(0.01))   # Adam with step size 0.01
    """
    return Chain(*rules)


_FROM_CONFIG = {"sgd": sgd, "adam": adam, "scale_by_adam": scale_by_adam, "scale": scale}


def rule_from_config(spec: Mapping[str, Any]) -> UpdateRule:
    """An update rule from its config form (a YAML mapping under ``learner.update``).

    ``{name: sgd, lr: 0.01}``, ``{name: adam, lr: 0.001, betas: [0.0, 0.999], eps: 1e-8}``,
    ``{name: scale_by_adam, ...}``, ``{name: scale, factor: 0.5}`` or
    ``{name: chain, rules: [<rule>, ...]}``. Learned-rate rules (``per_parameter``,
    ``per_step``) need the model's parameter names: choose ``MetaSGD`` or ``MAMLPlusPlus``.

    Raises:
        ValueError: for an unknown name or bad arguments, naming the valid ones.

    Example:
        >>> rule_from_config({"name": "adam", "lr": 0.001, "betas": [0.0, 0.999]})
        Chain(
          (rules): ModuleList(
            (0): ScaleByAdam(betas=(0.0, 0.999), eps=1e-08)
            (1): SGD(lr=0.001)
          )
        )
    """
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(
            f"an update rule is a mapping with a name, e.g. {{name: sgd, lr: 0.01}}; got {spec!r}"
        )
    options = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    if name == "chain":
        if set(options) != {"rules"} or not isinstance(options["rules"], list):
            raise ValueError("a chain rule is {name: chain, rules: [<rule>, ...]}")
        return chain(*(rule_from_config(r) for r in options["rules"]))
    if name not in _FROM_CONFIG:
        valid = ", ".join([*_FROM_CONFIG, "chain"])
        raise ValueError(f"unknown update rule {name!r}; the config names {valid}")
    if "betas" in options and isinstance(options["betas"], list):
        options["betas"] = tuple(options["betas"])
    try:
        return _FROM_CONFIG[name](**options)
    except TypeError as error:
        raise ValueError(f"update rule {name}: {error}") from None
