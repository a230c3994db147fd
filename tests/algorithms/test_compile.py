"""Learner.compile: the compiled meta-gradient equals the eager one for every learner.

Most checks compile with torch's ``aot_eager`` backend (the same tracing, without generating
C++), which keeps them fast; one check runs the default inductor backend end to end.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from learner_cases import (
    LEARNERS,
    build,
    classification_batch,
    meta_gradient,
    relative_error,
)

import metalearn as ml

# Every learner on the MLP; the conv net (BatchNorm, max-pooling, a per-task loop) runs in
# test_parameters_the_meta_loss_ignores_get_no_gradient with MAML++'s per-step BatchNorm.
CASES = [(n, "mlp") for n in sorted(LEARNERS)]


def compiled_copy(learner: ml.Learner, **options) -> ml.Learner:
    twin = copy.deepcopy(learner)
    twin.compile(backend="aot_eager", **options)
    return twin


def without_gradient(learner: ml.Learner) -> list[str]:
    return [n for n, p in learner.named_parameters() if p.grad is None]


def assert_same_meta_gradient(eager: ml.Learner, compiled: ml.Learner, batch) -> None:
    loss, gradient = meta_gradient(eager, batch)
    loss_c, gradient_c = meta_gradient(compiled, batch)
    assert compiled._compiled is not None, "the compiled path did not run"
    # Parameters the meta-loss does not depend on keep .grad None, as optimizers expect.
    assert without_gradient(compiled) == without_gradient(eager)
    assert loss_c.item() == pytest.approx(loss.item(), rel=1e-12)
    assert relative_error(gradient_c, gradient) < 1e-10


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_compiled_meta_gradient_equals_eager(float64, name, problem):
    eager, batch = build(name, problem)
    compiled = compiled_copy(eager)
    assert_same_meta_gradient(eager, compiled, batch)
    metrics, metrics_c = eager(batch).metrics, compiled(batch).metrics
    assert metrics.keys() == metrics_c.keys()
    for key in metrics:
        torch.testing.assert_close(metrics_c[key], metrics[key])


def test_compiled_training_follows_the_eager_trajectory(float64):
    eager, batch = build("MAML", "mlp")
    compiled = compiled_copy(eager)
    for learner in (eager, compiled):
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
        for seed in range(3):
            batch = ml.tasks.Sine(5, 6, dtype=torch.float64).sample(
                3, generator=torch.Generator().manual_seed(seed)
            )
            learner(batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    for p, q in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-12)


def test_settings_changed_after_compiling_are_honoured(float64):
    # Annealing (MAML++'s epoch), a new step size and a new batch shape must all reach the
    # compiled function (recompiling), never serve a stale trace.
    eager, batch = build("MAMLPlusPlus", "mlp")
    compiled = compiled_copy(eager)
    assert_same_meta_gradient(eager, compiled, batch)
    for learner in (eager, compiled):
        learner.set_epoch(5)  # past msl_epochs: the multi-step loss is off
        learner.inner_lr = 0.1
    assert_same_meta_gradient(eager, compiled, batch)
    bigger = ml.tasks.Sine(5, 6, dtype=torch.float64).sample(
        5, generator=torch.Generator().manual_seed(3)
    )
    assert_same_meta_gradient(eager, compiled, bigger)


def test_parameters_the_meta_loss_ignores_get_no_gradient(float64):
    # MAML++ in its first-order phase without the multi-step loss: the first BatchNorm set
    # only shapes the (constant) first inner gradient. Eagerly its .grad stays None, and
    # optimizers skip it; the compiled path must not hand it zeros (Adam would count a step).
    torch.manual_seed(0)
    model = ml.models.Conv4(in_channels=1, n_classes=3, hidden=2, image_size=16)
    eager = ml.MAMLPlusPlus(
        model, F.cross_entropy, 0.3, 3, multi_step_loss=False, first_order_epochs=2
    ).double()
    batch = classification_batch(tasks=2)  # looped: one task compiled, used for both
    compiled = compiled_copy(eager)
    assert_same_meta_gradient(eager, compiled, batch)
    assert "model.body.0.1.weight" in without_gradient(compiled)
    for learner in (eager, compiled):
        learner.set_epoch(2)  # second order from now on: every parameter has a gradient
    assert_same_meta_gradient(eager, compiled, batch)
    assert without_gradient(compiled) == []


def test_inductor_compiled_maml_matches_eager_and_is_deterministic():
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        learner = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01)
        batch = ml.tasks.Sine(10, 10).sample(25, generator=torch.Generator().manual_seed(0))
        _, eager = meta_gradient(learner, batch)
        learner.compile()
        return eager, meta_gradient(learner, batch)[1]

    eager, compiled = run()
    assert relative_error(compiled, eager) < 1e-5  # float32, differently fused sums
    assert torch.equal(run()[1], compiled)


def test_compiled_learner_runs_eagerly_where_nothing_is_compiled(float64):
    learner, batch = build("MAML", "mlp")
    learner.compile(backend="aot_eager")
    with torch.no_grad():
        out = learner(batch)
    assert not out.loss.requires_grad and learner._compiled is None
    fast = learner.adapt(batch.task(0).support)  # adaptation is never compiled
    assert fast.keys() == dict(learner.model.named_parameters()).keys()
    assert learner._compiled is None
    assert "compiled=True" in repr(learner)


def test_compiled_loss_refuses_double_backward(float64):
    learner, batch = build("MAML", "mlp")
    learner.compile(backend="aot_eager")
    loss = learner(batch).loss
    (g,) = torch.autograd.grad(loss, [next(learner.parameters())], create_graph=True)
    assert not g.requires_grad  # a constant: differentiating it again fails loudly
    with pytest.raises(RuntimeError, match="does not require grad"):
        g.sum().backward()


def test_a_model_torch_compile_cannot_trace_is_named(float64):
    class Untraceable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(1, 1)

        def forward(self, x):
            if self.linear(x).sum().item() > 1e9:  # data-dependent Python control flow
                return x
            return self.linear(x)

    learner = ml.MAML(Untraceable().double(), F.mse_loss, inner_lr=0.1, vectorize="loop")
    batch = build("MAML", "mlp")[1]
    learner(batch).loss.backward()  # fine eagerly
    learner.compile(backend="aot_eager")
    with pytest.raises(RuntimeError, match="torch.compile failed on this learner") as info:
        learner(batch)
    assert "fullgraph=False" in str(info.value)


def test_only_the_func_backend_compiles(float64):
    learner, _ = build("MAML", "mlp", backend="higher")
    with pytest.raises(ValueError, match="backend='func'"):
        learner.compile()


def test_compiled_learner_refuses_autocast():
    learner, batch = build("MAML", "mlp")
    learner.float().compile(backend="aot_eager")
    batch = batch.to(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError, match="AMP"):
        learner(batch)


def test_copies_and_pickles_build_their_own_compiled_function(float64):
    learner, batch = build("MAML", "mlp")
    learner.compile(backend="aot_eager")
    meta_gradient(learner, batch)
    for twin in (copy.deepcopy(learner), pickle.loads(pickle.dumps(learner))):
        assert twin._compiled is None and twin._compile_options == learner._compile_options
        assert_same_meta_gradient(learner, twin, batch)
        assert twin._compiled is not learner._compiled
    assert learner.state_dict().keys() == build("MAML", "mlp")[0].state_dict().keys()


@pytest.mark.cuda
def test_cuda_graph_compiled_maml_matches_eager_over_steps():
    # mode="reduce-overhead" replays CUDA graphs whose outputs the next replay overwrites: the
    # gradients of two batches taken before either backward must both stay right.
    device = torch.device("cuda")
    torch.manual_seed(0)
    eager = ml.MAML(ml.models.MLP([1, 40, 40, 1]), F.mse_loss, inner_lr=0.01).to(device)
    compiled = copy.deepcopy(eager)
    compiled.compile(mode="reduce-overhead")
    sine = ml.tasks.Sine(10, 10)
    batches = [sine.sample(25, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    batches = [b.to(device) for b in batches]
    for batch in batches[:2]:  # warm-up and capture
        meta_gradient(compiled, batch)
    for learner in (eager, compiled):
        learner.zero_grad(set_to_none=True)
        first, second = learner(batches[2]).loss, learner(batches[3]).loss
        (first + second).backward()
    for p, q in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)


def test_one_learner_may_compile_more_versions_than_torchs_default():
    # MAML++ anneals its meta-loss over msl_epochs (15 by default): one version per epoch.
    learner = ml.MAML(ml.models.MLP([1, 1]), F.mse_loss, inner_lr=0.1)  # quick to trace
    batch = ml.tasks.Sine(2, 2).sample(1)
    learner.compile(backend="aot_eager")
    limit = getattr(torch._dynamo.config, "recompile_limit", 8)
    for k in range(limit + 2):
        learner.inner_lr = 0.1 + 0.01 * k
        meta_gradient(learner, batch)
    assert getattr(torch._dynamo.config, "recompile_limit", 8) == limit  # restored
