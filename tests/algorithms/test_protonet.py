"""ProtoNet: prototypes by hand, the metalearn.testing checks, evaluation, and a run that learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import metalearn as ml
from metalearn import testing
from metalearn.tasks import Split, TaskBatch


class Clusters:
    """N-way tasks of Gaussian clusters whose class means differ in the first ``signal`` inputs
    only; the other inputs are loud noise, which a good embedding learns to ignore."""

    def __init__(self, n_way=3, k_shot=3, k_query=4, dim=8, signal=2, noise=3.0):
        self.n_way, self.k_shot, self.k_query = n_way, k_shot, k_query
        self.dim, self.signal, self.noise = dim, signal, noise

    def sample(self, num_tasks, generator=None):
        means = torch.zeros(num_tasks, self.n_way, self.dim)
        means[..., : self.signal] = 4 * torch.randn(
            num_tasks, self.n_way, self.signal, generator=generator
        )
        scale = torch.ones(self.dim)
        scale[self.signal :] = self.noise

        def split(shots):
            y = torch.arange(self.n_way).repeat(shots).expand(num_tasks, -1).contiguous()
            noise = torch.randn(num_tasks, y.shape[1], self.dim, generator=generator) * scale
            return torch.gather(means, 1, y[..., None].expand(-1, -1, self.dim)) + noise, y

        return TaskBatch.from_tensors(*split(self.k_shot), *split(self.k_query))


def mlp_protonet(**options) -> ml.ProtoNet:
    torch.manual_seed(0)
    return ml.ProtoNet(ml.models.MLP([8, 6, 4, 3], activation=nn.Tanh), embedding="body", **options)


def batch(tasks=3, seed=0) -> TaskBatch:
    return Clusters().sample(tasks, torch.Generator().manual_seed(seed))


def test_prototypes_and_logits_by_hand(float64):
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    protonet = ml.ProtoNet(net)
    x = torch.randn(5, 3)
    y = torch.tensor([1, 0, 1, 2, 1])
    fast = protonet.adapt(Split(x, y))
    embeddings = net(x)
    expected = torch.stack(
        [embeddings[0 + 1], (embeddings[0] + embeddings[2] + embeddings[4]) / 3, embeddings[3]]
    )
    torch.testing.assert_close(fast["prototypes"], expected)
    query = torch.randn(4, 3)
    logits = protonet.predict(fast, query)
    by_hand = torch.tensor([[-((net(q) - p) ** 2).sum().item() for p in expected] for q in query])
    torch.testing.assert_close(logits, by_hand)
    assert fast["prototypes"].requires_grad  # differentiable outside no_grad
    with torch.no_grad():
        assert not protonet.adapt(Split(x, y))["prototypes"].requires_grad


def test_meta_gradient_matches_finite_differences():
    testing.check_meta_gradient(mlp_protonet, batch())


def test_loop_vmap_backends_state_and_determinism():
    testing.check_loop_matches_vmap(mlp_protonet, batch(), steps=(0, 3))
    testing.check_backends_agree(mlp_protonet, batch())
    testing.check_state_dict_round_trip(mlp_protonet, batch())
    testing.check_deterministic(mlp_protonet, batch().to(torch.float32))


def test_conv_embedding_meta_gradient():
    def make(**options):
        torch.manual_seed(0)
        model = ml.models.Conv4(in_channels=1, n_classes=3, hidden=2, image_size=16)
        return ml.ProtoNet(model, embedding="body", **options)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 1, 16, 16, generator=g)
    y = torch.arange(3).repeat(2).expand(2, 6).contiguous()
    testing.check_meta_gradient(make, TaskBatch.from_tensors(x, y, x.flip(1), y.flip(1)))


def test_evaluate_ignores_steps_and_leaves_parameters(float64):
    protonet = mlp_protonet()
    before = [p.detach().clone() for p in protonet.parameters()]
    result = ml.evaluate(protonet, Clusters(), num_tasks=6, steps=[0, 5], batch_size=4)
    assert protonet.inner_steps == 0
    assert torch.equal(result.per_task["loss"][:, 0], result.per_task["loss"][:, 1])
    assert set(result.per_task) == {"loss", "accuracy"}
    assert all(torch.equal(a, p) for a, p in zip(before, protonet.parameters(), strict=True))


def test_a_short_run_learns_to_ignore_the_noise():
    torch.manual_seed(0)
    protonet = ml.ProtoNet(ml.models.MLP([8, 16, 8, 3]), embedding="body")
    tasks = Clusters(n_way=5, k_shot=5, k_query=5)
    before = ml.evaluate(protonet, tasks, num_tasks=100, batch_size=50).summary("accuracy")[0]
    optimizer = torch.optim.Adam(protonet.parameters(), lr=1e-2)
    ml.train(protonet, tasks, optimizer, iterations=150, meta_batch_size=8, seed=1, progress=False)
    after = ml.evaluate(protonet, tasks, num_tasks=100, batch_size=50).summary("accuracy")[0]
    assert after > before + 0.15 and after > 0.8, (before, after)


def test_bad_inputs_are_named():
    protonet = mlp_protonet()
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="needs the class prototypes"):
        protonet.predict(protonet.params(), x)
    with pytest.raises(ValueError, match="no support example of class 1"):
        protonet.adapt(Split(x, torch.tensor([0, 2, 0, 2])))
    with pytest.raises(TypeError, match="integer class labels"):
        protonet.adapt(Split(x, torch.zeros(4)))
    with pytest.raises(ValueError, match="embedding='neck'.*'body', 'head'"):
        ml.ProtoNet(ml.models.MLP([8, 4, 3]), embedding="neck")
    with pytest.raises(ValueError, match="n_way"):
        ml.ProtoNet(ml.models.MLP([8, 4, 3]), n_way=0)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        ml.ProtoNet(ml.models.MLP([8, 4, 3]), n_way=2).adapt(Split(x, torch.tensor([0, 1, 2, 0])))


def test_exported():
    assert ml.ProtoNet is ml.algorithms.ProtoNet and issubclass(ml.ProtoNet, ml.Learner)
    assert "ProtoNet" in ml.__all__
