"""Atomic checkpoint writes, weights_only loads, RNG state round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from metalearn.training import load_checkpoint, save_checkpoint
from metalearn.training.checkpoint import capture_rng_state, restore_rng_state


def test_round_trip_with_weights_only(tmp_path):
    state = {"w": torch.arange(3.0), "step": 4, "name": "x", "nested": {"a": [1, 2.5, None]}}
    path = save_checkpoint(state, tmp_path / "sub" / "ckpt.pt")
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["w"], state["w"])
    assert loaded["nested"] == {"a": [1, 2.5, None]}
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"version": 1}, tmp_path / "ckpt.pt")

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"version": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class Hostile:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_loading_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": Hostile()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt was refused") as refused:
        load_checkpoint(path)
    # torch's advice to retry with weights_only=False would run the file's code: not repeated.
    assert "weights_only" not in str(refused.value)


def test_a_truncated_checkpoint_is_named_in_one_sentence(tmp_path):
    path = save_checkpoint({"w": torch.ones(100)}, tmp_path / "ckpt.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"ckpt\.pt is not a readable metalearn checkpoint") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and "high likelihood" not in str(e.value)


def test_missing_and_non_dict_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=r"tensor\.pt holds a Tensor"):
        load_checkpoint(tmp_path / "tensor.pt")


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint({"rng": capture_rng_state(generator)}, tmp_path / "rng.pt")

    def draw():
        return (
            torch.rand(3, generator=generator).tolist(),
            torch.rand(3).tolist(),
            np.random.standard_normal(3).tolist(),
            [random.random() for _ in range(3)],
            random.gauss(0, 1),
        )

    expected = draw()
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"], generator)
    assert draw() == expected
