from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest

from metalearn.datasets import UnsafePickleError, load_pickle


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_round_trips(tmp_path, protocol):
    obj = {
        "image_data": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "floats": np.linspace(0, 1, 5),
        "scalar": np.float32(1.5),
        "labels": [1, 2, 3],
        "names": ("a", "b"),
        "ordered": collections.OrderedDict(a=1),
        "blob": b"\x00\xff",
        "set": {1, 2},
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    out = load_pickle(path)
    assert out.keys() == obj.keys()
    np.testing.assert_array_equal(out["image_data"], obj["image_data"])
    np.testing.assert_array_equal(out["floats"], obj["floats"])
    assert out["scalar"] == obj["scalar"] and out["labels"] == [1, 2, 3]
    assert out["blob"] == b"\x00\xff" and out["set"] == {1, 2}


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_pickle_that_runs_a_command_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"data": [RunsACommand(marker)]}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*system") as err:
        load_pickle(path)
    assert isinstance(err.value, ValueError)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
        b"csubprocess\nPopen\n(S'ls'\ntR.",
    ],
)
def test_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "g.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError):
        load_pickle(path)


def test_truncated_and_garbage_files_are_named(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(100)})[:40])
    with pytest.raises(ValueError, match=r"cut\.pkl.*truncated"):
        load_pickle(path)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x89PNG not a pickle")
    with pytest.raises(ValueError, match=r"junk\.pkl"):
        load_pickle(junk)


class Python2Pickler(pickle._Pickler):
    """Writes bytes the way Python 2 wrote str: BINSTRING, decoded as latin1 on load."""

    dispatch = dict(pickle._Pickler.dispatch)  # noqa: RUF012 - pickle's own protocol

    def save_py2_str(self, obj):
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def test_python2_latin1_pickle(tmp_path):
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every byte value survives latin1
    path = tmp_path / "miniImageNet_category_split_val.pickle"
    with path.open("wb") as f:
        Python2Pickler(f, protocol=2).dump({"data": arr, "labels": [64, 65]})
    assert b"_codecs" not in path.read_bytes()
    out = load_pickle(path, encoding="latin1")
    np.testing.assert_array_equal(out["data"], arr)
    assert out["labels"] == [64, 65]
