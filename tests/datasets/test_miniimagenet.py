from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from fewshot_fakes import (
    METAOPTNET_FILES,
    PER_CLASS,
    SPLIT_WNIDS,
    mini_reference,
    write_learn2learn,
)

from metalearn.datasets import MiniImagenet, UnsafePickleError, prepare
from metalearn.datasets.miniimagenet import detect_format

EXACT = ("learn2learn", "torchmeta", "metaoptnet")
JPEG = ("folders", "ravi")


def reference_tensor(split: str) -> torch.Tensor:
    ref = mini_reference(split)
    stacked = np.stack([ref[w] for w in sorted(ref)])  # [classes, PER_CLASS, 84, 84, 3]
    return torch.from_numpy(stacked).permute(0, 1, 4, 2, 3).float() / 255


def all_images(ds: MiniImagenet) -> torch.Tensor:
    return torch.stack([ds.images(c) for c in range(ds.num_classes)])


@pytest.mark.parametrize("fmt", EXACT + JPEG)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_format_loads_the_same_classes_and_images(mini_roots, fmt, split):
    ds = MiniImagenet(mini_roots[fmt], split, check_classes=False)
    assert ds.format == fmt  # detected
    assert ds.class_names == sorted(SPLIT_WNIDS[split])
    assert ds.class_sizes.tolist() == [PER_CLASS] * 3
    assert ds.image_shape == (3, 84, 84)
    x = all_images(ds)
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    ref = reference_tensor(split)
    if fmt in EXACT:
        assert torch.equal(x, ref)
    else:  # JPEG is lossy (and the CSV layout is resized back from 126x100)
        assert (x - ref).abs().mean() < 0.03
        assert (x - ref).abs().max() < 0.5


def test_formats_can_be_forced_and_aliases_work(mini_roots):
    a = MiniImagenet(mini_roots["ravi"], "train", format="csv", check_classes=False)
    b = MiniImagenet(mini_roots["folders"], "train", format="maml", check_classes=False)
    assert a.format == "ravi" and b.format == "folders"
    with pytest.raises(ValueError, match="format"):
        MiniImagenet(mini_roots["ravi"], "train", format="tfrecord")
    with pytest.raises(FileNotFoundError, match="torchmeta"):
        MiniImagenet(mini_roots["ravi"], "train", format="torchmeta", check_classes=False)


def test_validation_alias_and_val_suffixed_learn2learn_file(tmp_path):
    write_learn2learn(tmp_path, val_name="val")
    ds = MiniImagenet(tmp_path, "validation", check_classes=False)
    assert ds.split == "val" and ds.class_names == sorted(SPLIT_WNIDS["val"])
    with pytest.raises(ValueError, match="split"):
        MiniImagenet(tmp_path, "training")


def test_splits_are_class_disjoint(mini_roots):
    names = [
        set(MiniImagenet(mini_roots["learn2learn"], s, check_classes=False).class_names)
        for s in ("train", "val", "test")
    ]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])


def test_standard_class_count_is_checked(mini_roots):
    with pytest.raises(ValueError, match=r"3 classes.*64.*check_classes=False"):
        MiniImagenet(mini_roots["learn2learn"], "train")


def test_nothing_found_lists_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        MiniImagenet(tmp_path, "train")
    msg = str(err.value)
    for expected in (
        "mini-imagenet-cache-train.pkl",
        "train_data.hdf5",
        METAOPTNET_FILES["train"],
        "train.csv",
        str(tmp_path / "train"),
        "metalearn-cache",
    ):
        assert expected in msg


def test_missing_csv_is_named(mini_roots, tmp_path):
    root = tmp_path / "ravi"
    shutil.copytree(mini_roots["ravi"], root)
    (root / "val.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.csv"):
        MiniImagenet(root, "val", format="ravi", check_classes=False)
    with pytest.raises(FileNotFoundError, match=r"val\.csv"):
        MiniImagenet(root, "val", check_classes=False)


def test_csv_naming_a_missing_image_is_named(mini_roots, tmp_path):
    root = tmp_path / "ravi"
    shutil.copytree(mini_roots["ravi"], root)
    victim = sorted((root / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        MiniImagenet(root, "train", check_classes=False)


def test_bad_csv_header_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "train.csv").write_text("path,class\nx.jpg,n1\n")
    with pytest.raises(ValueError, match=r"train.csv.*filename,label"):
        MiniImagenet(tmp_path, "train", check_classes=False)


@pytest.mark.parametrize("fmt", JPEG)
def test_corrupt_jpeg_is_named(mini_roots, tmp_path, fmt):
    root = tmp_path / fmt
    shutil.copytree(mini_roots[fmt], root)
    victim = sorted(root.rglob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    split = victim.parent.parent.name if fmt == "folders" else "train"
    with pytest.raises(ValueError, match=victim.name):
        MiniImagenet(root, split, check_classes=False)


@pytest.mark.parametrize("fmt", ["learn2learn", "metaoptnet"])
def test_truncated_pickle_is_named(mini_roots, tmp_path, fmt):
    root = tmp_path / fmt
    shutil.copytree(mini_roots[fmt], root)
    name = "mini-imagenet-cache-train.pkl" if fmt == "learn2learn" else METAOPTNET_FILES["train"]
    data = (root / name).read_bytes()
    (root / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=name):
        MiniImagenet(root, "train", check_classes=False)


def test_hostile_learn2learn_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    import pickle

    (tmp_path / "mini-imagenet-cache-train.pkl").write_bytes(
        pickle.dumps({"image_data": Exploit(), "class_dict": {}})
    )
    with pytest.raises(UnsafePickleError, match="system"):
        MiniImagenet(tmp_path, "train", check_classes=False)
    assert not marker.exists()


def test_torchmeta_labels_must_match_the_arrays(mini_roots, tmp_path):
    root = tmp_path / "tm"
    shutil.copytree(mini_roots["torchmeta"], root)
    (root / "miniimagenet" / "train_labels.json").write_text('["n0"]')
    with pytest.raises(ValueError, match=r"train_labels\.json"):
        MiniImagenet(root, "train", check_classes=False)


@pytest.mark.parametrize("fmt", ["learn2learn", "ravi"])
def test_prepared_cache_round_trip_is_memory_mapped(mini_roots, tmp_path, fmt):
    root = tmp_path / fmt
    shutil.copytree(mini_roots[fmt], root)
    source = {s: MiniImagenet(root, s, check_classes=False) for s in ("train", "val", "test")}
    out = prepare("miniimagenet", root)
    assert out == root / "metalearn-cache" / "miniimagenet"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}.{ext}" for s in ("train", "val", "test") for ext in ("json", "npy")
    )
    for split, src in source.items():
        cached = MiniImagenet(root, split, check_classes=False)
        assert cached.format == "cache" and cached.is_memmap
        assert not src.is_memmap
        assert cached.class_names == src.class_names
        assert torch.equal(all_images(cached), all_images(src))
    assert detect_format(root, "train")[0] == "cache"
    assert detect_format(root, "train", include_cache=False)[0] == fmt
    # A second prepare keeps the cache; a damaged cache is named.
    assert prepare("miniimagenet", root) == out
    (out / "train.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"train\.npy"):
        MiniImagenet(root, "train", check_classes=False)


def test_prepare_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="name"):
        prepare("cifar", tmp_path)
    with pytest.raises(FileNotFoundError, match="mini-imagenet-cache"):
        prepare("miniimagenet", tmp_path)
