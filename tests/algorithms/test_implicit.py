"""hvp and conjugate_gradient against explicit Hessians and torch.linalg.solve."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import metalearn as ml
from metalearn.algorithms import conjugate_gradient, hvp


def flat(d: dict) -> torch.Tensor:
    return torch.cat([v.flatten() for v in d.values()])


def unflat(vector: torch.Tensor, like: dict) -> dict:
    sizes = [v.numel() for v in like.values()]
    return {k: c.view_as(v) for (k, v), c in zip(like.items(), vector.split(sizes), strict=True)}


def explicit_hessian(loss_fn, params: dict) -> torch.Tensor:
    return torch.autograd.functional.hessian(lambda v: loss_fn(unflat(v, params)), flat(params))


def random_like(params: dict, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


def test_hvp_of_a_quadratic_is_the_matrix(float64):
    g = torch.Generator().manual_seed(0)
    m = torch.randn(7, 7, generator=g)
    a = m + m.T
    c = torch.randn(7, generator=g)
    params = {"vector": torch.randn(3, generator=g), "matrix": torch.randn(2, 2, generator=g)}

    def loss(p):
        z = flat(p)
        return 0.5 * z @ a @ z + c @ z

    v = random_like(params)
    torch.testing.assert_close(flat(hvp(loss, params, v)), a @ flat(v))


@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_hvp_matches_the_explicit_hessian_of_a_network(float64, loss_name):
    torch.manual_seed(0)
    if loss_name == "mse":
        net = ml.models.MLP([2, 4, 1], activation=nn.Tanh)
        x, y, loss = torch.randn(6, 2), torch.randn(6, 1), F.mse_loss
    else:
        net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3))
        x, y, loss = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2]), F.cross_entropy
    params = {k: v.detach() for k, v in net.named_parameters()}

    def support_loss(p):
        return loss(functional_call(net, p, (x,)), y)

    v = random_like(params)
    product = hvp(support_loss, params, v)
    assert list(product) == list(params)
    assert not any(t.requires_grad for t in product.values())
    torch.testing.assert_close(flat(product), explicit_hessian(support_loss, params) @ flat(v))


def test_hvp_keeps_grads_and_graph_as_asked(float64):
    torch.manual_seed(0)
    net = ml.models.MLP([2, 3, 1], activation=nn.Tanh)
    params = dict(net.named_parameters())
    x, y = torch.randn(5, 2), torch.randn(5, 1)

    def support_loss(p):
        return F.mse_loss(net.forward_with(p, x), y) + 0.0 * p["unused"].sum()

    params["unused"] = torch.ones(2, requires_grad=True)
    v = random_like(params)
    with torch.no_grad():  # works inside evaluation code too
        product = hvp(support_loss, params, v)
    assert torch.equal(product["unused"], torch.zeros(2))
    assert all(p.grad is None for p in net.parameters())
    differentiable = hvp(support_loss, params, v, create_graph=True)
    assert differentiable["head.weight"].requires_grad
    torch.testing.assert_close(differentiable["head.weight"].detach(), product["head.weight"])
    linear = hvp(lambda p: p["a"].sum(), {"a": torch.ones(3)}, {"a": torch.ones(3)})
    assert torch.equal(linear["a"], torch.zeros(3))
    with pytest.raises(ValueError, match="names of params"):
        hvp(support_loss, params, {"head.weight": v["head.weight"]})


def test_conjugate_gradient_solves_an_spd_system(float64):
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g)
    a = m @ m.T + 0.5 * torch.eye(6)
    b = {"first": torch.randn(2, 2, generator=g), "second": torch.randn(2, generator=g)}
    calls = []

    def matvec(v):
        calls.append(1)
        return unflat(a @ flat(v), v)

    x = conjugate_gradient(matvec, b, max_iter=50, tol=1e-12)
    torch.testing.assert_close(flat(x), torch.linalg.solve(a, flat(b)))
    assert len(calls) <= 7  # n = 6 in exact arithmetic, one more for rounding
    calls.clear()
    identity = conjugate_gradient(lambda v: dict(v), b, max_iter=10)
    assert len(calls) == 0 and torch.allclose(flat(identity), flat(b))
    zero = conjugate_gradient(matvec, {k: torch.zeros_like(v) for k, v in b.items()})
    assert torch.equal(flat(zero), torch.zeros(6)) and not calls


def test_conjugate_gradient_refuses_indefinite_and_bad_arguments(float64):
    b = {"x": torch.tensor([1.0, 1.0])}
    with pytest.raises(ValueError, match="not positive definite"):
        conjugate_gradient(lambda v: {"x": torch.tensor([-1.0, -2.0]) * v["x"]}, b)
    with pytest.raises(ValueError, match="max_iter"):
        conjugate_gradient(lambda v: v, b, max_iter=0)


def test_implicit_maml_linear_system(float64):
    # (I + H / lam) x = g solved with hvp + CG equals the explicit solve (iMAML's meta-gradient).
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randn(10, 2)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def support_loss(p):
        return F.mse_loss(functional_call(net, p, (x,)), y)

    lam = 2.0
    rhs = random_like(params)

    def matvec(v):
        hv = hvp(support_loss, params, v)
        return {k: v[k] + hv[k] / lam for k in v}

    solution = conjugate_gradient(matvec, rhs, max_iter=20, tol=1e-12)
    a = torch.eye(8) + explicit_hessian(support_loss, params) / lam
    torch.testing.assert_close(flat(solution), torch.linalg.solve(a, flat(rhs)))


def test_exported():
    assert ml.hvp is hvp and ml.conjugate_gradient is conjugate_gradient
