"""ImageClasses.from_labels refuses to guess the layout of a channels-first-looking array."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalearn.datasets import ImageClasses


def images(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.int64).reshape(shape).astype(np.uint8)


def test_channels_first_looking_data_must_be_named():
    data = images((4, 3, 8, 8))
    with pytest.raises(
        ValueError, match=r"\(4, 3, 8, 8\) looks channels-first.*channels_first=True"
    ):
        ImageClasses.from_labels(data, [0, 0, 1, 1])
    told = ImageClasses.from_labels(data, [0, 0, 1, 1], channels_first=True)
    assert told.image_shape == (3, 8, 8)
    assert torch.equal(told.images(1, [0])[0], torch.from_numpy(data[2]).float() / 255)
    # Said to be channels-last, it is read as such: [N, H=3, W=8, C=8].
    assert ImageClasses.from_labels(data, [0, 0, 1, 1], channels_first=False).image_shape == (
        8,
        3,
        8,
    )
    gray = ImageClasses.from_labels(images((4, 1, 5, 5)), [0, 0, 1, 1], channels_first=True)
    assert gray.image_shape == (1, 5, 5)
    with pytest.raises(ValueError, match="channels_first=True"):
        ImageClasses.from_labels(images((4, 1, 5, 5)), [0, 0, 1, 1])


@pytest.mark.parametrize("shape", [(4, 8, 8, 3), (4, 8, 8), (4, 3, 8, 3), (4, 8, 8, 1)])
def test_channels_last_and_grayscale_are_read_as_before(shape):
    data = images(shape)
    ds = ImageClasses.from_labels(data, [0, 0, 1, 1])
    channels = 1 if len(shape) == 3 else shape[3]
    assert ds.image_shape == (channels, shape[1], shape[2])
    first = torch.from_numpy(data[0] if len(shape) == 4 else data[0][..., None]).permute(2, 0, 1)
    assert torch.equal(ds.images(0, [0])[0], first.float() / 255)
