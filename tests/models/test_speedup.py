"""models.speedup: a user's plain nn.Module gets the library's faster layers, bit-identically."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metalearn as ml
from metalearn.models import MaxPool2x2, speedup


def _users_conv4(hidden: int = 3, side: int = 16) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(4):
        layers += [
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = hidden
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(hidden * (side // 16) ** 2, 3))


def test_only_exact_2x2_pools_are_swapped():
    class MyPool(nn.MaxPool2d):
        pass

    keep = [
        nn.MaxPool2d(3),
        nn.MaxPool2d(2, stride=1),
        nn.MaxPool2d(2, padding=1),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.MaxPool2d(2, return_indices=True),
        nn.MaxPool2d(2, dilation=2),
        MyPool(2),
    ]
    swap = [nn.MaxPool2d(2), nn.MaxPool2d((2, 2)), nn.MaxPool2d(2, stride=2)]
    net = speedup(nn.ModuleList(keep + swap))
    assert [type(m) for m in net[: len(keep)]] == [type(m) for m in keep]
    assert all(type(m) is MaxPool2x2 for m in net[len(keep) :])
    with pytest.raises(TypeError, match="nn.Module"):
        speedup("conv4")


def test_same_values_and_meta_gradients_hooks_and_state_dict(float64):
    torch.manual_seed(0)
    plain = _users_conv4().double()
    calls = []
    plain[3].register_forward_hook(lambda *_: calls.append(1))
    reference = copy.deepcopy(plain)
    fast = speedup(copy.deepcopy(plain))
    # The hooked pool stays in place; the other blocks pool before their ReLU.
    assert type(fast[3]) is MaxPool2x2 and isinstance(fast[3], nn.MaxPool2d)
    assert type(fast[6]) is MaxPool2x2 and type(fast[7]) is nn.ReLU
    assert fast.state_dict().keys() == plain.state_dict().keys()
    g = torch.Generator().manual_seed(1)
    sx, qx = (torch.randn(2, 3, 1, 16, 16, generator=g, dtype=torch.float64) for _ in range(2))
    y = torch.arange(3).expand(2, 3).contiguous()
    batch = ml.tasks.TaskBatch.from_tensors(sx, y, qx, y)
    grads = []
    for model in (plain, fast):
        learner = ml.MAML(model, F.cross_entropy, 0.3, 2)  # (speeds the model up)
        if model is plain:  # undo: compare against torch's own pooling
            for m in model.modules():
                if type(m) is MaxPool2x2:
                    m.__class__ = nn.MaxPool2d
            model._modules.update(copy.deepcopy(reference)._modules)  # ReLU before pool again
            assert type(model[3]) is nn.MaxPool2d and type(model[6]) is nn.ReLU
        out = learner(batch)
        out.loss.backward()
        grads.append((out.loss.detach(), [p.grad for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.equal(a, b)
    assert len(calls) > 0 and len(calls) % 2 == 0  # the hook survived the swap


def test_learners_speed_up_the_model_they_are_given():
    model = _users_conv4()
    learner = ml.MAML(model, F.cross_entropy, 0.1)
    assert learner.model is model
    assert all(type(m) is MaxPool2x2 for m in model if isinstance(m, nn.MaxPool2d))
