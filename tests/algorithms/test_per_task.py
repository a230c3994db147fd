"""Per-task meta-gradients on the looped path (``learner.per_task_gradients``, on by default):
each task's meta-gradient is finished before the next task, the same numbers as the whole
graph, one task's graph alive at a time, and everything that uses ``.grad`` unchanged."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from learner_cases import LEARNERS, PROBLEMS, build, meta_gradient, relative_error
from torch import nn

import metalearn as ml

ALL = sorted(LEARNERS)
CASES = [(n, "mlp", b) for n in ALL for b in ("func", "higher")]
CASES += [(n, "conv", "func") for n in ALL]


def _pair(name: str, problem: str, **kw) -> tuple[ml.Learner, ml.Learner, ml.tasks.TaskBatch]:
    per_task, batch = build(name, problem, vectorize="loop", **kw)
    whole, _ = build(name, problem, vectorize="loop", **kw)
    whole.per_task_gradients = False
    return per_task, whole, batch


def _grads(learner: ml.Learner) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in learner.parameters()]


@pytest.mark.parametrize(("name", "problem", "backend"), CASES)
def test_per_task_meta_gradient_equals_the_whole_graphs(float64, name, problem, backend):
    per_task, whole, batch = _pair(name, problem, backend=backend)
    assert per_task._wants_per_task(batch) and not whole._wants_per_task(batch)
    loss, gradient = meta_gradient(per_task, batch)
    nones = [p.grad is None for p in per_task.parameters()]
    loss_whole, gradient_whole = meta_gradient(whole, batch)
    assert loss.item() == loss_whole.item()
    # The same per-task gradients, summed in task order rather than autograd's: float64
    # rounding only.
    assert relative_error(gradient, gradient_whole) < 1e-13
    assert nones == [p.grad is None for p in whole.parameters()]
    assert per_task._foreign_inputs is None


def _live_saved_bytes(run) -> int:
    """Peak bytes of tensors autograd saved for backward and still holds, while ``run()``."""
    state = {"live": 0, "peak": 0}

    class Saved:
        def __init__(self, tensor: torch.Tensor) -> None:
            self.tensor = tensor
            self.size = tensor.numel() * tensor.element_size()
            state["live"] += self.size
            state["peak"] = max(state["peak"], state["live"])

        def __del__(self) -> None:
            state["live"] -= self.size

    with torch.autograd.graph.saved_tensors_hooks(Saved, lambda saved: saved.tensor):
        run()
    return state["peak"]


@pytest.mark.parametrize("per_task", [True, False])
def test_one_tasks_graph_is_alive_at_a_time(float64, per_task):
    peaks = []
    for tasks in (1, 4):
        learner, _ = build("MAML", "conv", vectorize="loop")
        learner.per_task_gradients = per_task
        batch = PROBLEMS["conv"][2](tasks=tasks)
        peaks.append(_live_saved_bytes(lambda: learner(batch).loss.backward()))  # noqa: B023
    if per_task:
        assert peaks[1] <= 1.05 * peaks[0]
    else:  # the whole graph: every task's saved tensors until backward()
        assert peaks[1] > 3 * peaks[0]


class _WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = ml.models.MLP([1, 5, 1], activation=nn.Tanh)
        self.unused = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_parameters_the_meta_loss_ignores_keep_grad_none(float64):
    batch = PROBLEMS["mlp"][2]()
    for per_task in (True, False):
        learner = ml.MAML(_WithUnused().double(), F.mse_loss, 0.3, 2, vectorize="loop")
        learner.per_task_gradients = per_task
        learner(batch).loss.backward()
        assert learner.model.unused.grad is None
        assert learner.model.net.head.weight.grad is not None


def test_parameter_hooks_see_the_meta_gradient_once(float64):
    per_task, whole, batch = _pair("MetaSGD", "mlp")
    seen = {True: [], False: []}
    for learner, key in ((per_task, True), (whole, False)):
        for i, p in enumerate(learner.parameters()):
            p.register_hook(lambda g, key=key, i=i: seen[key].append((i, g.clone())))
        learner(batch).loss.backward()
    assert sorted(i for i, _ in seen[True]) == list(range(len(list(per_task.parameters()))))
    for (i, a), (j, b) in zip(sorted(seen[True]), sorted(seen[False]), strict=True):
        assert i == j
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_autograd_grad_and_clipping_see_the_same_gradient(float64):
    per_task, whole, batch = _pair("MAML", "conv")
    results = []
    for learner in (per_task, whole):
        params = list(learner.parameters())
        grads = torch.autograd.grad(learner(batch).loss, params)
        assert all(p.grad is None for p in params)  # autograd.grad leaves .grad alone
        learner(batch).loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1e-3)
        results.append((grads, norm, [p.grad.clone() for p in params]))
    (g1, n1, c1), (g2, n2, c2) = results
    for a, b in zip((*g1, *c1), (*g2, *c2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    assert n1.item() == pytest.approx(n2.item(), rel=1e-12)


def test_gradients_accumulate_over_calls_and_refuse_a_second_backward(float64):
    per_task, whole, batch = _pair("MAML", "mlp")
    for learner in (per_task, whole):
        learner(batch).loss.backward()
        out = learner(batch)
        out.loss.backward()
        with pytest.raises(RuntimeError, match="second time|freed"):
            out.loss.backward()
    for a, b in zip(_grads(per_task), _grads(whole), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_double_backward_fails_clearly_and_the_switch_allows_it(float64):
    per_task, whole, batch = _pair("MAML", "mlp")
    param = next(per_task.parameters())
    with pytest.raises(RuntimeError, match="per_task_gradients = False"):
        torch.autograd.grad(per_task(batch).loss, [param], create_graph=True)
    param = next(whole.parameters())
    (g,) = torch.autograd.grad(whole(batch).loss, [param], create_graph=True)
    assert g.requires_grad  # differentiable again with the whole graph


def test_a_learnable_loss_weight_outside_the_learner_gets_its_gradient(float64):
    results = []
    for per_task in (True, False):
        weight = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

        def weighted(prediction, target, weight=weight):
            return weight * F.mse_loss(prediction, target)

        learner, batch = build("MAML", "mlp", vectorize="loop")
        learner.loss = weighted
        learner.per_task_gradients = per_task
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            learner(batch).loss.backward()
            learner(batch)  # the decision is remembered: no probe, no second warning
        assert len([w for w in caught if "not a parameter" in str(w.message)]) == int(per_task)
        assert not learner._wants_per_task(batch) if per_task else True
        results.append((weight.grad.clone(), _grads(learner)))
    (w1, g1), (w2, g2) = results
    assert w1.item() == w2.item() != 0
    for a, b in zip(g1, g2, strict=True):
        assert torch.equal(a, b)


def test_a_weight_read_through_the_learner_keeps_per_task_memory(float64):
    class Weighted(ml.MAML):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, **kw)
            self.weight = nn.Parameter(torch.tensor(0.7))

        def task_loss(self, params, support, query):
            value, metrics = super().task_loss(params, support, query)
            return self.weight * value, metrics

    grads = []
    for per_task in (True, False):
        torch.manual_seed(0)
        learner = Weighted(PROBLEMS["mlp"][0](), F.mse_loss, 0.3, 2, vectorize="loop").double()
        learner.per_task_gradients = per_task
        batch = PROBLEMS["mlp"][2]()
        learner(batch).loss.backward()
        assert learner._foreign_inputs is None
        grads.append(learner.weight.grad.item())
    assert grads[0] == pytest.approx(grads[1], rel=1e-13)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(dtype):
    per_task, whole, batch = _pair("MAML", "conv")
    per_task, whole, batch = per_task.float(), whole.float(), batch.to(torch.float32)
    grads = []
    for learner in (per_task, whole):
        with torch.autocast("cpu", dtype=dtype):
            out = learner(batch)
            # float16 needs the loss scale inside every task's backward: the whole graph.
            wanted = learner is per_task and dtype != torch.float16
            assert learner._wants_per_task(batch) == wanted
        out.loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in learner.parameters()]))
    assert relative_error(grads[0], grads[1]) < 1e-2


@pytest.mark.parametrize("name", ALL)
def test_vmap_keeps_the_whole_graph_with_the_looped_paths_gradient(float64, name):
    # Under vmap the batch is one computation: the whole graph (differentiable again), and the
    # meta-gradient of the per-task looped path.
    vmapped, batch = build(name, "mlp", vectorize="vmap")
    looped, _ = build(name, "mlp", vectorize="loop")
    assert vmapped.use_vmap(batch) and not vmapped._wants_per_task(batch)
    assert looped._wants_per_task(batch)
    loss, gradient = meta_gradient(vmapped, batch)
    loss_looped, gradient_looped = meta_gradient(looped, batch)
    assert loss.item() == pytest.approx(loss_looped.item(), rel=1e-13)
    assert relative_error(gradient, gradient_looped) < 1e-12
    params = [p for p in vmapped.parameters() if p.requires_grad]
    grads = torch.autograd.grad(vmapped(batch).loss, params, create_graph=True, allow_unused=True)
    assert any(g is not None and g.requires_grad for g in grads)


@pytest.mark.parametrize("vectorize", ["vmap", "loop"])
def test_small_problems_run_forward_and_backward_on_one_thread(vectorize):
    learner, batch = build("MAML", "mlp", vectorize=vectorize)
    conv, conv_batch = build("MAML", "conv")
    assert learner._meta_gradient_threads(batch) == 1
    assert conv._meta_gradient_threads(conv_batch) is None  # convolutions: torch's setting
    forward, backward = [], []
    learner.loss = lambda p, y: (forward.append(torch.get_num_threads()), F.mse_loss(p, y))[1]
    hook = learner.model.head.weight.register_hook(
        lambda g: backward.append(torch.get_num_threads())
    )
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = learner(batch)
        assert torch.get_num_threads() == 2 and set(forward) == {1}
        out.loss.backward()
        # The parameter's hook runs in backward() on the looped path too (per-task gradients
        # reach the parameters there through one node), on one thread under vmap.
        assert torch.get_num_threads() == 2 and len(backward) == 1
        if vectorize == "vmap":
            assert backward == [1]
            torch.autograd.grad(learner(batch).loss, list(learner.parameters()))
            assert torch.get_num_threads() == 2 and backward == [1, 1]
        learner.cpu_threads = 2
        assert learner._meta_gradient_threads(batch) == 2
        learner.cpu_threads = 0
        with pytest.raises(ValueError, match="cpu_threads"):
            learner(batch)
    finally:
        hook.remove()
        torch.set_num_threads(old)


def test_a_backward_that_raises_leaves_the_threads_to_the_next_meta_loss():
    learner, batch = build("MAML", "mlp", vectorize="vmap")
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def fail(grad: torch.Tensor) -> None:
            raise RuntimeError("hook failed")

        hook = learner.model.head.weight.register_hook(fail)
        with pytest.raises(RuntimeError, match="hook failed"):
            learner(batch).loss.backward()
        hook.remove()
        assert torch.get_num_threads() == 1  # the engine skipped the restoring callback
        learner(batch).loss.backward()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def test_not_used_without_gradients_or_when_switched_off():
    learner, batch = build("MAML", "mlp", vectorize="loop")
    assert learner._wants_per_task(batch)
    with torch.no_grad():
        assert not learner._wants_per_task(batch)
        assert not learner(batch).loss.requires_grad
    learner.per_task_gradients = False
    assert not learner._wants_per_task(batch)
    assert "per_task_gradients=False" in repr(learner)


def test_copies_keep_the_switch(float64):
    learner, batch = build("MAML", "mlp", vectorize="loop")
    learner.per_task_gradients = False
    for clone in (copy.deepcopy(learner), pickle.loads(pickle.dumps(learner))):
        assert clone.per_task_gradients is False
    learner.per_task_gradients = True
    clone = pickle.loads(pickle.dumps(learner))
    assert meta_gradient(clone, batch)[0].item() == meta_gradient(learner, batch)[0].item()


def test_training_steps_match(float64):
    per_task, whole, batch = _pair("MAMLPlusPlus", "conv")
    for learner in (per_task, whole):
        # (SGD: Adam would scale up the rounding noise of gradients that are zero in exact
        # arithmetic, such as a conv bias before BatchNorm's.)
        optimizer = torch.optim.SGD(learner.parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            learner.set_epoch(step)
            optimizer.zero_grad()
            learner(batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(learner.parameters(), 0.5)
            optimizer.step()
    for a, b in zip(per_task.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
