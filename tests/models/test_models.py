import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from metalearn.models import MLP, BatchNorm, Conv4, MaxPool2x2, convert_batchnorm


def test_mlp_shapes_and_names():
    net = MLP([1, 40, 40, 1])
    assert net(torch.zeros(7, 1)).shape == (7, 1)
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "body.0.weight",
        "body.0.bias",
        "body.2.weight",
        "body.2.bias",
        "head.weight",
        "head.bias",
    ]
    assert MLP([3, 2])(torch.zeros(4, 3)).shape == (4, 2)


@pytest.mark.parametrize(
    ("sizes", "error"), [([1], ValueError), ([1, 0, 1], ValueError), ([1, 2.0], TypeError)]
)
def test_mlp_rejects_bad_sizes(sizes, error):
    # Like every integer argument (metalearn._checks.check_int): a non-int is a TypeError.
    with pytest.raises(error, match="sizes"):
        MLP(sizes)


@pytest.mark.parametrize(("channels", "size"), [(3, 84), (1, 28)])
def test_conv4_shapes(channels, size):
    net = Conv4(channels, 5, hidden=8, image_size=size)
    assert net(torch.randn(4, channels, size, size)).shape == (4, 5)


def test_conv4_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_classes"):
        Conv4(3, 0)
    with pytest.raises(ValueError, match="image_size"):
        Conv4(3, 5, image_size=8)
    with pytest.raises(ValueError, match='downsample must be "maxpool" or "stride"'):
        Conv4(1, 5, downsample="avg")


@pytest.mark.parametrize(("channels", "size"), [(3, 84), (1, 28)])
def test_strided_conv4_is_finns_omniglot_model(channels, size):
    net = Conv4(channels, 5, hidden=8, image_size=size, downsample="stride")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 4
    assert not any(isinstance(m, (torch.nn.MaxPool2d, MaxPool2x2)) for m in net.modules())
    assert net.head.in_features == 8  # the last map averaged over its positions
    x = torch.randn(4, channels, size, size)
    features = net.body[:4](x)
    assert features.shape == (4, 8, -(-size // 16), -(-size // 16))
    torch.testing.assert_close(net.body(x), features.mean((2, 3)))
    assert net(x).shape == (4, 5)


def test_strided_conv4_meta_gradient_is_exact():
    from metalearn import MAML
    from metalearn.tasks import TaskBatch
    from metalearn.testing import check_backends_agree, check_loop_matches_vmap, check_meta_gradient

    # 28x28 as on Omniglot: at 16x16 the last block normalises 3 numbers per channel, and the
    # meta-loss bends too sharply for finite differences (both backends still agree there).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 1, 28, 28, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2]).expand(2, -1)
    batch = TaskBatch.from_tensors(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])

    def make(**options):
        torch.manual_seed(0)
        net = Conv4(1, 3, hidden=3, image_size=28, downsample="stride")
        return MAML(net, F.cross_entropy, inner_lr=0.3, inner_steps=2, **options)

    check_meta_gradient(make, batch, directions=3)
    check_loop_matches_vmap(make, batch)
    check_backends_agree(make, batch)


def test_batchnorm_matches_torch_batch_statistics():
    x = torch.randn(6, 4, 5, 5)
    ours = BatchNorm(4)
    with torch.no_grad():
        ours.weight.uniform_()
        ours.bias.uniform_()
    ref = F.batch_norm(x, None, None, ours.weight, ours.bias, training=True)
    torch.testing.assert_close(ours(x), ref)
    x1 = torch.randn(6, 4)
    torch.testing.assert_close(
        ours(x1), F.batch_norm(x1, None, None, ours.weight, ours.bias, training=True)
    )
    with pytest.raises(ValueError, match="expects input"):
        ours(torch.randn(2, 3, 5, 5))


def test_models_work_under_functional_call_and_vmap():
    net = Conv4(1, 3, hidden=4, image_size=16)
    params = {k: v.detach() + 0.1 for k, v in net.named_parameters()}
    x = torch.randn(2, 5, 1, 16, 16)
    batched = vmap(lambda xi: functional_call(net, params, (xi,)))(x)
    looped = torch.stack([functional_call(net, params, (xi,)) for xi in x])
    torch.testing.assert_close(batched, looped)


def test_convert_batchnorm_replaces_layers_and_copies_affine():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    with torch.no_grad():
        model[1].weight.fill_(2.0)
    convert_batchnorm(model)
    assert isinstance(model[1], BatchNorm)
    assert torch.equal(model[1].weight, torch.full((3,), 2.0))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_mlp_forward_with_is_functional_call(float64):
    net = MLP([3, 7, 5, 2], nn.Tanh)
    params = {k: torch.randn_like(v) for k, v in net.named_parameters()}
    x = torch.randn(4, 3)
    torch.testing.assert_close(net.forward_with(params, x), functional_call(net, params, (x,)))
    xs = torch.randn(6, 4, 3)
    batched = {k: v.expand(6, *v.shape) for k, v in params.items()}
    torch.testing.assert_close(
        vmap(net.forward_with)(batched, xs),
        vmap(lambda p, x: functional_call(net, p, (x,)))(batched, xs),
    )


def test_learners_use_forward_with_only_when_it_matches_forward():
    from metalearn.algorithms.inner import functional_forward

    net = MLP([1, 4, 1])
    assert functional_forward(net) == net.forward_with

    class Scaled(MLP):
        def forward(self, x):
            return 2 * super().forward(x)

    scaled = Scaled([1, 4, 1])
    params = dict(scaled.named_parameters())
    x = torch.randn(3, 1)
    torch.testing.assert_close(functional_forward(scaled)(params, x), scaled(x))
    hooked = MLP([1, 4, 1])
    hooked.head.register_forward_hook(lambda m, i, o: o + 1)
    torch.testing.assert_close(
        functional_forward(hooked)(dict(hooked.named_parameters()), x), hooked(x)
    )
