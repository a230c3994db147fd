"""IMAML against the exact implicit gradient, finite differences, and the training loop."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metalearn as ml
from metalearn import testing
from metalearn.algorithms import conjugate_gradient
from metalearn.algorithms.inner import support_gradients

LAM = 2.0
INNER_LR = 0.19
# Enough steps of INNER_LR for the proximal problem below to converge to float64 rounding.
CONVERGED = 80


def linear_tasks(tasks: int = 3, dim: int = 3, seed: int = 0) -> ml.tasks.TaskBatch:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(tasks, dim, 1, generator=g, dtype=torch.float64)
    sx = torch.randn(tasks, 8, dim, generator=g, dtype=torch.float64)
    qx = torch.randn(tasks, 6, dim, generator=g, dtype=torch.float64)
    sy = sx @ w + 0.1 * torch.randn(tasks, 8, 1, generator=g, dtype=torch.float64)
    return ml.tasks.TaskBatch.from_tensors(sx, sy, qx, qx @ w)


def linear_model(dim: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(dim, 1).double()


def exact_implicit_gradient(model: nn.Module, batch: ml.tasks.TaskBatch, lam: float):
    """Per task, in float64 with explicit matrices: theta* = argmin L_s + lam/2 ||theta - phi||^2
    (a linear solve), then g = (I + H / lam)^{-1} grad L_q(theta*); the mean over tasks, and the
    inner solutions. Parameters are stacked as [weight..., bias]."""
    phi = torch.cat([model.weight.detach().flatten(), model.bias.detach()])
    grads, solutions = [], []
    for task in batch:
        (xs, ys), (xq, yq) = task.support, task.query
        a_s = torch.cat([xs, torch.ones(len(xs), 1)], 1)  # theta -> predictions
        a_q = torch.cat([xq, torch.ones(len(xq), 1)], 1)
        hessian = 2 * a_s.T @ a_s / len(xs)  # of mean((a_s theta - y)^2)
        eye = torch.eye(len(phi))
        theta = torch.linalg.solve(hessian + lam * eye, lam * phi + 2 * a_s.T @ ys[:, 0] / len(xs))
        query_grad = 2 * a_q.T @ (a_q @ theta - yq[:, 0]) / len(xq)
        grads.append(torch.linalg.solve(eye + hessian / lam, query_grad))
        solutions.append(theta)
    return torch.stack(grads).mean(0), solutions


def flat_grad(learner: ml.Learner) -> torch.Tensor:
    return torch.cat([learner.model.weight.grad.flatten(), learner.model.bias.grad])


def make_imaml(model: nn.Module, **kwargs) -> ml.IMAML:
    options = {"inner_steps": CONVERGED, "lam": LAM, "cg_steps": 10, "cg_tol": 1e-14, **kwargs}
    return ml.IMAML(model, F.mse_loss, INNER_LR, **options)


@pytest.mark.parametrize("per_task", [True, False])
def test_matches_the_exact_implicit_gradient(per_task):
    batch = linear_tasks()
    learner = make_imaml(linear_model())
    learner.per_task_gradients = per_task
    expected, solutions = exact_implicit_gradient(learner.model, batch, LAM)
    out = learner(batch)
    out.loss.backward()
    torch.testing.assert_close(flat_grad(learner), expected, rtol=1e-10, atol=1e-12)
    # The inner loop reaches the analytic fixed point of the proximal problem.
    fast = learner.adapt(batch.task(0).support)
    torch.testing.assert_close(
        torch.cat([fast["weight"].flatten(), fast["bias"]]), solutions[0], rtol=1e-12, atol=1e-12
    )
    # The test can tell: the plain query gradient at theta* (first order) differs.
    fomaml = ml.FOMAML(linear_model(), F.mse_loss, INNER_LR, 1)
    fomaml(batch).loss.backward()
    assert not torch.allclose(flat_grad(fomaml), expected, rtol=1e-3)


def test_few_cg_steps_approximate_the_solve():
    batch = linear_tasks()
    expected, _ = exact_implicit_gradient(linear_model(), batch, LAM)
    errors = []
    for cg_steps in (1, 2, 4):
        learner = make_imaml(linear_model(), cg_steps=cg_steps)
        learner(batch).loss.backward()
        errors.append((flat_grad(learner) - expected).norm().item())
    # 4 parameters: CG is exact after 4 iterations, and gets better on the way.
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-10


def test_matches_finite_differences_of_the_converged_query_loss():
    # The meta-loss is the query loss at the (converged) inner solution, so its finite
    # differences are the true meta-gradient that the implicit one must reproduce.
    batch = linear_tasks()

    def make(**options):  # IMAML always loops over tasks: options (vectorize=) do not apply
        return make_imaml(linear_model())

    testing.check_meta_gradient(make, batch, directions=2, rtol=1e-6, atol=1e-9)


def test_matches_finite_differences_on_a_small_network():
    # Non-convex, but strongly convex near phi with a large lam: the inner loop converges.
    torch.manual_seed(0)
    batch = ml.tasks.Sine(4, 5, dtype=torch.float64).sample(2, torch.Generator().manual_seed(0))

    def make(**options):
        torch.manual_seed(1)
        model = ml.models.MLP([1, 5, 1], activation=nn.Tanh)
        return ml.IMAML(model, F.mse_loss, 0.05, 60, lam=10.0, cg_steps=20, cg_tol=1e-14)

    testing.check_meta_gradient(make, batch, directions=3, rtol=1e-5, atol=1e-8)


def test_gradient_reaches_parameters_through_backward_and_autograd_grad():
    batch = ml.tasks.Sine(5, 5).sample(3, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    learner = ml.IMAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.02, 5, lam=1.0)
    params = list(learner.parameters())
    out = learner(batch)
    assert out.loss.requires_grad and set(out.metrics) == {"loss"}
    by_grad = torch.autograd.grad(out.loss, params)
    out = learner(batch)
    out.loss.backward()
    for p, g in zip(params, by_grad, strict=True):
        assert p.grad is not None and p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, g)
    # Gradient clipping sees an ordinary .grad.
    norm = torch.nn.utils.clip_grad_norm_(params, 1e-3)
    assert norm > 1e-3
    clipped = torch.sqrt(sum((p.grad**2).sum() for p in params))
    assert clipped == pytest.approx(1e-3, rel=1e-4)
    for per_task in (True, False):  # the gradient is a constant on either path
        learner.per_task_gradients = per_task
        with pytest.raises(RuntimeError, match="differentiated .*twice"):
            torch.autograd.grad(learner(batch).loss, params, create_graph=True)


def test_memory_graph_is_not_kept_through_the_inner_loop():
    # The adapted weights carry no graph, whatever the number of inner steps.
    torch.manual_seed(0)
    learner = ml.IMAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.02, 20, lam=1.0)
    support = ml.tasks.Sine(5, 5).sample(1).task(0).support
    fast = learner.inner(learner.params(), support, 20, False)
    assert all(t.grad_fn is None and not t.requires_grad for t in fast.values())


def test_inner_steps_are_freed_as_the_loop_goes(monkeypatch):
    # Memory flat in inner steps: when step k runs, no earlier step's weights are alive.
    import metalearn.algorithms.inner as inner_module

    refs, alive = [], []

    def recording(loss, fast, first_order, *args):
        alive.append(sum(r() is not None for r in refs[1:]))  # refs[0]: phi, held throughout
        refs.append(weakref.ref(fast["head.weight"]))
        return support_gradients(loss, fast, first_order, *args)

    monkeypatch.setattr(inner_module, "support_gradients", recording)
    torch.manual_seed(0)
    learner = ml.IMAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.02, 10, lam=1.0)
    learner(ml.tasks.Sine(5, 5).sample(1)).loss.backward()
    assert len(alive) == 10 and max(alive) == 0, alive
    path = learner.inner(learner.params(), ml.tasks.Sine(5, 5).sample(1).task(0).support, 3,
                         True, trajectory=True)  # fmt: skip
    assert len(path) == 4  # the trajectory is kept when asked for


def test_evaluate_on_sine():
    torch.manual_seed(0)
    learner = ml.IMAML(ml.models.MLP([1, 16, 1]), F.mse_loss, 0.02, 5, lam=1.0)
    tasks = ml.tasks.Sine(5, 10)
    result = ml.evaluate(learner, tasks, num_tasks=2, steps=[0, 5], batch_size=2)
    assert "loss" in str(result)
    metrics = learner.evaluate_batch(tasks.sample(2), [0, 3, 5])
    assert metrics["loss"].shape == (2, 3) and metrics["loss"].isfinite().all()
    # Step 0 is the model at phi; later steps have adapted.
    assert not torch.equal(metrics["loss"][:, 0], metrics["loss"][:, 2])


def test_a_short_sine_run_lowers_the_post_adaptation_loss():
    torch.manual_seed(0)
    learner = ml.IMAML(ml.models.MLP([1, 16, 16, 1]), F.mse_loss, 0.05, 2, lam=1.0, cg_steps=2)
    # Amplitudes 1..2: predicting zero scores mean(A^2) / 2 = 7/6, so a loss well below the
    # start is meta-learning, not merely learning to predict zero.
    tasks = ml.tasks.Sine(5, 5, amplitude=(1.0, 2.0))
    test = tasks.sample(20, torch.Generator().manual_seed(123))

    def post_adaptation_loss() -> float:
        return learner.evaluate_batch(test, [2])["loss"].mean().item()

    before = post_adaptation_loss()
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    ml.train(learner, tasks, optimizer, iterations=100, meta_batch_size=2, progress=False)
    after = post_adaptation_loss()
    assert after < 0.75 * before and after < 7 / 6, (before, after)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lam": 0.0}, ValueError, "lam must be > 0"),
        ({"lam": -1.0}, ValueError, "lam"),
        ({"lam": float("nan")}, ValueError, "lam"),
        ({"lam": "1"}, TypeError, "lam"),
        ({"cg_steps": 0}, ValueError, "cg_steps"),
        ({"cg_steps": 2.5}, TypeError, "cg_steps"),
        ({"cg_tol": -1e-3}, ValueError, "cg_tol"),
        ({"inner_steps": -1}, ValueError, "inner_steps"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ml.IMAML(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.01, **kwargs)


def test_compile_is_refused_and_repr_names_the_settings():
    learner = ml.IMAML(ml.models.MLP([1, 4, 1]), F.mse_loss, 0.01, 3, lam=0.5, cg_steps=4)
    with pytest.raises(ValueError, match="does not compile"):
        learner.compile()
    assert "lam=0.5" in repr(learner) and "cg_steps=4" in repr(learner)
    assert ml.algorithms.IMAML is ml.IMAML


def test_conjugate_gradient_can_stop_at_negative_curvature(float64):
    b = {"x": torch.tensor([1.0, 1.0])}
    indefinite = torch.tensor([[2.0, 0.0], [0.0, -1.0]])

    def matvec(v):
        return {"x": indefinite @ v["x"]}

    # The first direction b has curvature 2 - 1 > 0; a later one is negative: keep the iterate.
    x = conjugate_gradient(matvec, b, negative_curvature="stop")
    torch.testing.assert_close(x["x"], torch.tensor([2.0, 2.0]))  # alpha = b.b / b.Ab = 2
    # Negative at once: b itself (the first-order answer).
    flipped = conjugate_gradient(lambda v: {"x": -v["x"]}, b, negative_curvature="stop")
    torch.testing.assert_close(flipped["x"], b["x"])
    with pytest.raises(ValueError, match="not positive definite"):
        conjugate_gradient(matvec, b)
    with pytest.raises(ValueError, match="negative_curvature"):
        conjugate_gradient(matvec, b, negative_curvature="ignore")
