"""The fast paths of the looped inner loop give exactly the torch.func path's numbers.

Outside ``torch.func`` transforms, :func:`support_gradients` uses ``torch.autograd.grad``,
:class:`BatchNorm` the fused ``F.batch_norm``, and :class:`ConvBlock` pools before its ReLU;
inside ``vmap`` the original torch.func code runs. Each is checked against the other in float64.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

import metalearn as ml
from metalearn._functorch import under_functorch_transform
from metalearn.algorithms.inner import functional_forward, inner_loop, support_gradients
from metalearn.models import BatchNorm, Conv4
from metalearn.tasks import Split, TaskBatch


def conv_batch(tasks=2, ways=3, shots=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tasks, 2 * ways * shots, 3, size, size, generator=g)
    y = torch.arange(ways).repeat(2 * shots).expand(tasks, -1).contiguous()
    n = ways * shots
    return TaskBatch.from_tensors(x[:, :n], y[:, :n], x[:, n:], y[:, n:])


def meta_gradient(learner, batch):
    learner.zero_grad()
    learner(batch).loss.backward()
    return {n: p.grad.clone() for n, p in learner.named_parameters()}


def test_transform_detection():
    assert not under_functorch_transform()
    seen = []
    vmap(lambda x: seen.append(under_functorch_transform()) or x)(torch.zeros(2))
    grad(lambda x: seen.append(under_functorch_transform()) or x.sum())(torch.zeros(2))
    assert seen == [True, True]


@pytest.mark.parametrize("first_order", [False, True])
def test_autograd_and_func_gradients_agree_to_second_order(float64, first_order):
    torch.manual_seed(0)
    net = ml.models.MLP([1, 6, 6, 1])
    params = dict(net.named_parameters())
    forward = functional_forward(net)
    x, y = torch.randn(7, 1), torch.randn(7, 1)

    def loss(p):
        return F.mse_loss(forward(p, x), y)

    fast = support_gradients(loss, params, first_order)
    # The same call inside a (trivial) vmap takes the torch.func path.
    func = vmap(lambda _: support_gradients(loss, params, first_order))(torch.zeros(1))
    for name in params:
        torch.testing.assert_close(fast[name], func[name][0], rtol=0, atol=1e-12)
    # Second order: the gradients are differentiable in the parameters (first order: constants).
    total = sum((g**2).sum() for g in fast.values())
    assert total.requires_grad is not first_order


def test_loop_and_vmap_agree_on_conv4_second_order(float64):
    torch.manual_seed(1)
    model = Conv4(3, 3, hidden=4, image_size=16)
    batch = conv_batch()
    loop = meta_gradient(ml.MAML(model, F.cross_entropy, 0.4, 2, vectorize="loop"), batch)
    vec = meta_gradient(ml.MAML(model, F.cross_entropy, 0.4, 2, vectorize="vmap"), batch)
    for name in loop:
        torch.testing.assert_close(loop[name], vec[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("learner", ["fomaml", "anil"])
def test_first_order_and_partial_adaptation_loop_equals_vmap(float64, learner):
    torch.manual_seed(2)
    model = Conv4(3, 3, hidden=4, image_size=16)
    batch = conv_batch()
    if learner == "fomaml":

        def make(v):
            return ml.FOMAML(model, F.cross_entropy, 0.4, 2, vectorize=v)
    else:

        def make(v):
            return ml.MAML(model, F.cross_entropy, 0.4, 2, adapt="head", vectorize=v)

    loop, vec = meta_gradient(make("loop"), batch), meta_gradient(make("vmap"), batch)
    for name in loop:
        torch.testing.assert_close(loop[name], vec[name], rtol=1e-9, atol=1e-12)


def test_evaluation_under_no_grad_still_adapts_in_the_loop(float64):
    torch.manual_seed(3)
    model = Conv4(3, 3, hidden=4, image_size=16)
    batch = conv_batch()
    loop = ml.MAML(model, F.cross_entropy, 0.4, 1, vectorize="loop").evaluate_batch(batch, [0, 3])
    vec = ml.MAML(model, F.cross_entropy, 0.4, 1, vectorize="vmap").evaluate_batch(batch, [0, 3])
    torch.testing.assert_close(loop["loss"], vec["loss"], rtol=1e-9, atol=1e-12)
    assert (loop["loss"][:, 1] - loop["loss"][:, 0]).abs().min() > 1e-3  # the steps adapted
    assert not loop["loss"].requires_grad


def test_inner_loop_under_no_grad_gives_constants(float64):
    net = ml.models.MLP([1, 4, 1])
    params = dict(net.named_parameters())
    support = Split(torch.randn(5, 1), torch.randn(5, 1))
    forward = functional_forward(net)

    def objective(p, split):
        return F.mse_loss(forward(p, split.x), split.y)

    sgd = ml.updates.sgd(0.1)
    with torch.no_grad():
        fast = inner_loop(objective, params, support, steps=2, update=sgd)
    assert not any(v.requires_grad for v in fast.values())
    moved = inner_loop(objective, params, support, steps=2, update=sgd)
    for name in fast:
        torch.testing.assert_close(fast[name], moved[name].detach(), rtol=0, atol=1e-12)


def test_unused_parameters_get_zero_gradients_as_in_torch_func(float64):
    net = nn.ModuleDict({"used": nn.Linear(2, 1), "unused": nn.Linear(2, 1)})
    params = dict(net.named_parameters())

    def loss(p):
        return (torch.ones(3, 2) @ p["used.weight"].T + p["used.bias"]).pow(2).mean()

    grads = support_gradients(loss, params, first_order=False)
    assert torch.equal(grads["unused.weight"], torch.zeros(1, 2))


def test_fused_batchnorm_equals_the_composite_to_second_order(float64):
    torch.manual_seed(4)
    bn = BatchNorm(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    x = (torch.randn(4, 3, 5, 5) * 3 + 1).requires_grad_()
    probe = torch.randn(4, 3, 5, 5)

    def second_order(run):
        out = run(x)
        (gx,) = torch.autograd.grad((out * probe).sum(), x, create_graph=True)
        (ggw,) = torch.autograd.grad((gx**2).sum(), bn.weight)
        return out, gx, ggw

    fused = second_order(bn)
    composite = second_order(lambda t: vmap(bn)(t.unsqueeze(0))[0])  # vmap -> composite path
    for a, b in zip(fused, composite, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_conv_block_pools_before_relu_with_the_same_values_and_gradients(float64):
    torch.manual_seed(5)
    block = ml.models.ConvBlock(3, 4)
    conv, bn, pool, relu = block
    assert isinstance(pool, nn.MaxPool2d) and isinstance(relu, nn.ReLU)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    reference = pool(relu(bn(conv(x))))  # Finn et al.'s order
    ours = block(x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    (g_ref,) = torch.autograd.grad(reference.sum(), x)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)


def test_parameter_hooks_see_only_the_meta_gradient_in_loop_and_vmap(float64):
    batch = ml.tasks.Sine(5, 5, dtype=torch.float64).sample(2, torch.Generator().manual_seed(0))
    calls = {}
    grads = {}
    for vectorize in ("loop", "vmap"):
        torch.manual_seed(7)
        maml = ml.MAML(ml.models.MLP([1, 8, 1]), F.mse_loss, 0.1, 2, vectorize=vectorize)
        first = next(maml.parameters())
        calls[vectorize] = 0

        def hook(g, vectorize=vectorize):
            calls[vectorize] += 1
            return 2 * g

        first.register_hook(hook)
        grads[vectorize] = meta_gradient(maml, batch)
    assert calls == {"loop": 1, "vmap": 1}
    for name in grads["loop"]:
        torch.testing.assert_close(grads["loop"][name], grads["vmap"][name], rtol=1e-10, atol=0)
