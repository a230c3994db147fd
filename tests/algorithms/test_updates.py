"""Update rules (metalearn.updates), the inner objective, per-task state and the constructor
tail shared by every learner."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from learner_cases import meta_gradient, regression_batch, relative_error, tiny_mlp
from torch import nn
from torch.func import vmap

import metalearn as ml
from metalearn import testing
from metalearn.algorithms.inner import functional_forward
from metalearn.tasks import Split


def rates_like(model, value, steps=None):
    shape = (lambda p: (steps,)) if steps else (lambda p: p.shape)
    return {n: torch.full(shape(p), value, dtype=p.dtype) for n, p in model.named_parameters()}


RULES = {
    "sgd": lambda model: ml.updates.sgd(0.3),
    "learned_sgd": lambda model: ml.updates.sgd(nn.Parameter(torch.tensor(0.3))),
    "per_parameter": lambda model: ml.updates.per_parameter(rates_like(model, 0.3)),
    "per_step": lambda model: ml.updates.per_step(rates_like(model, 0.3, steps=2)),
    "adam": lambda model: ml.updates.adam(0.05, betas=(0.5, 0.999)),
    "chain": lambda model: ml.updates.chain(
        ml.updates.scale(0.5), ml.updates.per_parameter(rates_like(model, 0.3))
    ),
}


def make(rule, **options):
    torch.manual_seed(0)
    model = tiny_mlp()
    return ml.MAML(model, F.mse_loss, 0.3, 2, update=RULES[rule](model), **options)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_agrees_across_backends_and_vmap_and_is_exact(rule):
    batch = regression_batch()
    testing.check_backends_agree(lambda **kw: make(rule, **kw), batch)
    testing.check_loop_matches_vmap(lambda **kw: make(rule, **kw), batch)
    testing.check_meta_gradient(lambda **kw: make(rule, **kw), batch)


@pytest.mark.parametrize("rule", ["learned_sgd", "per_parameter", "per_step", "chain"])
def test_learned_rates_are_learner_parameters(float64, rule):
    learner = make(rule).double()
    own = [n for n, _ in learner.named_parameters() if n.startswith("update.")]
    assert own and all(n in learner.state_dict() for n in own)
    _, grads = testing.meta_gradient(learner, regression_batch())
    assert all(grads[n].abs().sum() > 0 for n in own)


def test_sign_convention_and_composition():
    g = {"w": torch.tensor([1.0, -2.0])}
    assert torch.equal(ml.updates.sgd(0.5)(g, None, 0, g)[0]["w"], torch.tensor([-0.5, 1.0]))
    rule = ml.updates.chain(ml.updates.scale(2.0), ml.updates.sgd(0.5))
    assert torch.equal(rule(g, rule.init(g), 0, g)[0]["w"], torch.tensor([-1.0, 2.0]))
    per_step = ml.updates.per_step({"w": torch.tensor([0.1, 0.2])})
    assert torch.allclose(per_step(g, None, 5, g)[0]["w"], -0.2 * g["w"])  # last step's rate


def test_adam_state_is_pure_under_vmap():
    rule = ml.updates.adam(0.1)
    grads = torch.randn(4, 3)

    def one(g):
        state = rule.init({"w": g})
        out, state = rule({"w": g}, state, 0, {"w": g})
        out, _ = rule({"w": g}, state, 1, {"w": g})
        return out["w"]

    looped = torch.stack([one(g) for g in grads])
    torch.testing.assert_close(vmap(one)(grads), looped)


def test_bad_rules_say_what_to_pass(float64):
    model = tiny_mlp().double()
    with pytest.raises(TypeError, match="update rule"):
        ml.MAML(model, F.mse_loss, 0.1, update=lambda g: g)
    with pytest.raises(TypeError, match="finite number"):
        ml.updates.sgd("0.1")
    with pytest.raises(ValueError, match="leading step dimension"):
        ml.updates.per_step({"w": torch.tensor(0.1)})
    rule = ml.updates.per_parameter({"head.weight": torch.tensor(0.1)})
    with pytest.raises(KeyError, match="no rate for parameter 'body.0.weight'"):
        ml.MAML(model, F.mse_loss, 0.1, update=rule).adapt(regression_batch().task(0).support)
    with pytest.raises(ValueError, match="unknown update rule 'rmsprop'"):
        ml.updates.rule_from_config({"name": "rmsprop"})


def test_config_form_builds_the_same_rule():
    rule = ml.updates.rule_from_config({"name": "adam", "lr": 0.01, "betas": [0.0, 0.999]})
    g = {"w": torch.tensor([3.0])}
    expected = ml.updates.adam(0.01, betas=(0.0, 0.999))
    assert torch.equal(
        rule(g, rule.init(g), 0, g)[0]["w"], expected(g, expected.init(g), 0, g)[0]["w"]
    )
    chained = ml.updates.rule_from_config(
        {"name": "chain", "rules": [{"name": "scale", "factor": 2.0}, {"name": "sgd", "lr": 0.1}]}
    )
    assert torch.allclose(chained(g, chained.init(g), 0, g)[0]["w"], torch.tensor([-0.6]))


# -- the inner objective --------------------------------------------------------------------
def test_objective_drives_the_inner_loop_and_the_query_loss(float64):
    batch = regression_batch()
    torch.manual_seed(0)
    model = tiny_mlp()
    forward = functional_forward(model)

    def scaled(params, split):
        return 2.0 * F.mse_loss(forward(params, split.x), split.y)

    learner = ml.MAML(model, F.mse_loss, 0.15, 2, objective=scaled).double()
    torch.manual_seed(0)
    plain = ml.MAML(tiny_mlp(), F.mse_loss, 0.3, 2).double()
    # 2 * loss with half the step size adapts the same; the meta-loss doubles.
    loss, grads = meta_gradient(learner, batch)
    plain_loss, plain_grads = meta_gradient(plain, batch)
    assert loss.item() == pytest.approx(2 * plain_loss.item(), rel=1e-12)
    assert relative_error(grads, 2 * plain_grads) < 1e-12
    # Training reports the objective; evaluation reports the loss of predict.
    assert learner(batch).metrics["loss"].item() == pytest.approx(loss.item(), rel=1e-12)
    evaluated = learner.evaluate_batch(batch, [2])["loss"].mean()
    assert evaluated.item() == pytest.approx(plain_loss.item(), rel=1e-12)
    with pytest.raises(TypeError, match="objective must be callable"):
        ml.MAML(model, F.mse_loss, 0.1, objective="mse")


def test_objective_override_in_a_subclass(float64):
    class Regularised(ml.MAML):
        def objective(self, params, split):
            penalty = sum(p.pow(2).sum() for p in params.values())
            return super().objective(params, split) + 1e-2 * penalty

    make_learner = lambda **kw: Regularised(tiny_mlp(), F.mse_loss, 0.3, 2, **kw)  # noqa: E731
    testing.check_meta_gradient(make_learner, regression_batch())
    testing.check_backends_agree(make_learner, regression_batch())


# -- per-task state -------------------------------------------------------------------------
class TinyCAVIA(ml.Learner):
    """CAVIA-like: a context vector, zero for every task, adapts; the network does not."""

    def __init__(self, model, loss, inner_lr, inner_steps=1, *, context=2, **kw):
        super().__init__(model, loss, inner_lr, inner_steps, adapt=(), **kw)
        self.context = context

    def task_state(self, support):
        return {"context": support.x.new_zeros(self.context)}

    def model_forward(self, params, x):
        weights = {k: v for k, v in params.items() if k != "context"}
        context = params["context"].expand(x.shape[0], self.context)
        return super().model_forward(weights, torch.cat([x, context], dim=-1))


def cavia(**kw):
    model = ml.models.MLP([3, 6, 1], activation=nn.Tanh)
    return TinyCAVIA(model, F.mse_loss, 0.1, 2, **kw)


def test_per_task_state_adapts_but_is_not_a_parameter():
    torch.manual_seed(0)
    learner = cavia().double()
    batch = regression_batch()
    assert "context" not in dict(learner.named_parameters())
    assert "context" not in learner.state_dict()
    fast = learner.adapt(batch.task(0).support)
    assert fast["context"].abs().sum() > 0  # the context moved
    torch.testing.assert_close(fast["body.0.weight"], learner.model.body[0].weight)  # net did not
    support = batch.task(0).support
    start = {**learner.params(), "context": torch.zeros(2, dtype=torch.float64)}
    assert learner.objective(fast, support) < learner.objective(start, support)
    assert learner.evaluate_batch(batch, [0, 2])["loss"].shape == (batch.num_tasks, 2)


def test_per_task_state_meta_gradients_are_exact_and_agree():
    batch = regression_batch()
    testing.check_meta_gradient(cavia, batch)
    testing.check_loop_matches_vmap(cavia, batch)
    testing.check_backends_agree(cavia, batch)


@pytest.mark.parametrize("backend", ["func", "higher"])
def test_per_task_state_keeps_the_per_task_meta_gradient(backend):
    # The state's starting leaf is the inner loop's own, not a tensor outside the learner: no
    # fallback to the whole graph (and no warning saying memory grows with the meta-batch).
    learner = cavia(vectorize="loop", backend=backend).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner(regression_batch()).loss.backward()
    assert learner._foreign_inputs is None
    assert all(p.grad is not None for p in learner.parameters())


def test_per_task_state_names_must_not_clash():
    class Clash(TinyCAVIA):
        def task_state(self, support):
            return {"head.bias": support.x.new_zeros(1)}

    learner = Clash(ml.models.MLP([3, 4, 1]), F.mse_loss, 0.1)
    with pytest.raises(ValueError, match="also parameter names"):
        learner.adapt(Split(torch.randn(3, 1), torch.randn(3, 1)))


# -- one constructor tail --------------------------------------------------------------------
SHARED = ("first_order", "adapt", "update", "objective", "vectorize", "backend")
HEAD = ("model", "loss", "inner_lr", "inner_steps")


def learner_classes():
    return [
        getattr(ml, name)
        for name in ml.__all__
        if isinstance(getattr(ml, name), type) and issubclass(getattr(ml, name), ml.Learner)
    ]


@pytest.mark.parametrize("cls", learner_classes(), ids=lambda c: c.__name__)
def test_constructor_tail_is_keyword_only_in_one_order(cls):
    params = [p for p in inspect.signature(cls).parameters.values() if p.name != "self"]
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    assert positional == [n for n in HEAD if n in positional], positional
    assert positional == list(HEAD[: len(positional)]), f"head out of order: {positional}"
    shared = [n for n in keyword if n in SHARED]
    assert not set(SHARED) & set(positional), f"shared keywords must be keyword-only: {positional}"
    assert shared == [n for n in SHARED if n in shared], f"shared tail out of order: {shared}"
    assert keyword[: len(shared)] == shared, f"own keywords must follow the shared ones: {keyword}"
