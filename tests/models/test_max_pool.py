"""MaxPool2x2 (the Conv-4 pooling): identical to F.max_pool2d, to second order, ties included."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from metalearn.models import MaxPool2x2


def _inputs(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    # Ties of every kind: constant blocks (as in Omniglot's flat background), equal pairs in a
    # row, in a column and across the diagonal.
    x[..., :4, :4] = 1.5
    x[..., 4, 5] = x[..., 4, 4]
    x[..., 5, 4] = x[..., 4, 4] + 10
    x[..., 5, 5] = x[..., 5, 4]
    x[..., 6, 7] = x[..., 7, 6] = 20.0
    return x


@pytest.mark.parametrize("shape", [(3, 2, 8, 8), (2, 3, 9, 11), (4, 8, 10), (1, 1, 2, 2)])
def test_values_indices_and_gradients_equal_max_pool2d_to_second_order(shape):
    small = shape[-1] < 8
    x = (torch.randn(shape, dtype=torch.float64) if small else _inputs(shape)).requires_grad_()
    ours, reference = MaxPool2x2()(x), F.max_pool2d(x, 2)
    assert torch.equal(ours, reference)
    probe = torch.randn_like(reference, requires_grad=True)
    (g_ours,) = torch.autograd.grad(ours, x, probe, create_graph=True)
    (g_ref,) = torch.autograd.grad(reference, x, probe, create_graph=True)
    assert torch.equal(g_ours, g_ref)  # every tie sends the gradient where max_pool2d does
    probe2 = torch.randn_like(g_ref)
    (gg_ours,) = torch.autograd.grad(g_ours, probe, probe2)
    (gg_ref,) = torch.autograd.grad(g_ref, probe, probe2)
    assert torch.equal(gg_ours, gg_ref)


def test_fast_path_is_not_plain_max_pool2d():
    x = _inputs((2, 3, 8, 8)).requires_grad_()
    assert MaxPool2x2()(x).grad_fn.name() != F.max_pool2d(x, 2).grad_fn.name()


def test_without_grad_and_in_float32_the_values_are_exact():
    x = _inputs((2, 3, 9, 9), torch.float32)
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2))
    assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2))  # x needs no grad either


def test_nan_propagates_like_max_pool2d():
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 1, 0] = float("nan")
    out = MaxPool2x2()(x)
    assert torch.equal(out.isnan(), F.max_pool2d(x, 2).isnan())
    assert out[0, 0, 0, 0].isnan()


def test_under_vmap_it_is_max_pool2d():
    x = torch.randn(3, 2, 4, 6, 6)
    assert torch.equal(vmap(MaxPool2x2())(x), vmap(lambda t: F.max_pool2d(t, 2))(x))


def test_too_small_input_gets_max_pool2d_error():
    with pytest.raises(RuntimeError):
        MaxPool2x2()(torch.randn(1, 1, 1, 5))


def test_backward_does_not_keep_the_input_alive():
    import weakref

    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    pre = x * 2  # an intermediate only the pooling uses
    ref = weakref.ref(pre)
    out = MaxPool2x2()(pre)
    del pre
    assert ref() is None  # max_pool2d would hold it until the backward
    (g,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(g, torch.autograd.grad(F.max_pool2d(x * 2, 2).sum(), x)[0])


def test_backward_keeps_one_byte_per_window():
    # max_pool2d keeps its input and an int64 index per window (12 bytes per window in
    # float32); the fast path keeps only a one-byte code per window.
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = MaxPool2x2()(x)
    assert [(t.dtype, t.shape) for t in saved] == [(torch.uint8, out.shape)]
