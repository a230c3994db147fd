from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from fewshot_fakes import OMNI_PER_CHAR, omniglot_image, write_omniglot_minimal

from metalearn.datasets import Omniglot, prepare
from metalearn.datasets.omniglot import NUM_CHARACTERS, SPLIT_CHARACTERS, character_split

TINY = {"check_classes": False}


def names(ds: Omniglot) -> list[str]:
    return ds.base_names


def test_vinyals_split_membership(omniglot_root):
    train = Omniglot(omniglot_root, "train", **TINY)
    val = Omniglot(omniglot_root, "val", **TINY)
    test = Omniglot(omniglot_root, "test", **TINY)
    assert names(train) == [
        "background/Latin/character01",
        "background/Latin/character02",
        "evaluation/Gurmukhi/character41",
    ]
    assert names(val) == ["background/Armenian/character01", "background/Armenian/character02"]
    assert names(test) == ["evaluation/Gurmukhi/character42", "evaluation/Kannada/character01"]
    trainval = Omniglot(omniglot_root, "trainval", **TINY)
    assert set(names(trainval)) == set(names(train)) | set(names(val))


def test_images_are_resized_inverted_and_rotated(omniglot_root):
    ds = Omniglot(omniglot_root, "val", **TINY)
    assert ds.num_classes == 2 * 4 and ds.image_shape == (1, 28, 28)
    assert ds.class_names[:4] == [
        f"background/Armenian/character01/rot{r:03d}" for r in (0, 90, 180, 270)
    ]
    x = ds.images(0)
    assert x.shape == (OMNI_PER_CHAR, 1, 28, 28) and x.dtype == torch.float32
    # The first Armenian drawing is image seed 0*10+1 of the generator (see fewshot_fakes).
    strokes = ~omniglot_image(1)
    from PIL import Image

    expected = np.array(
        Image.fromarray(strokes.astype(np.uint8) * 255).resize((28, 28), Image.Resampling.LANCZOS)
    )
    assert torch.allclose(x[0, 0], torch.from_numpy(expected).float() / 255, atol=2 / 255)
    assert x[0].max() > 0.9 and x[0].mean() < 0.5  # strokes are 1 on a 0 background
    for k in range(1, 4):
        assert torch.equal(ds.images(k), torch.rot90(x, k, dims=(-2, -1)))
    assert Omniglot(omniglot_root, "val", rotations=(0,), **TINY).num_classes == 2
    mirrored = Omniglot(omniglot_root, "val", mirror=True, **TINY)
    assert mirrored.num_classes == 2 * 8 and mirrored.alphabets == ds.alphabets
    assert mirrored.class_names[5] == "background/Armenian/character01/mirror/rot090"
    assert torch.equal(mirrored.images(5), torch.rot90(x.flip(-1), 1, dims=(-2, -1)))


def test_zips_and_folders_agree(omniglot_root, omniglot_zip_root):
    for split in ("train", "test"):
        a = Omniglot(omniglot_root, split, **TINY)
        b = Omniglot(omniglot_zip_root, split, **TINY)
        assert a.class_names == b.class_names
        for c in range(a.num_classes):
            assert torch.equal(a.images(c), b.images(c))


def test_maml_split_is_deterministic_disjoint_and_complete(omniglot_root):
    train = names(Omniglot(omniglot_root, "train", "maml", **TINY))
    test = names(Omniglot(omniglot_root, "test", "maml", **TINY))
    assert names(Omniglot(omniglot_root, "train", "maml", **TINY)) == train
    # 7 characters: round(7 * 1100 / 1623) = 5 train, round(7 * 100 / 1623) = 0 val, 2 test.
    assert len(train) == 5 and len(test) == 2 and not set(train) & set(test)
    with pytest.raises(ValueError, match="no characters"):
        Omniglot(omniglot_root, "val", "maml", **TINY)


def full_names() -> list[str]:
    """The 1623 character names of the real dataset (alphabet sizes from Lake et al.)."""
    background = {
        "Armenian": 41, "Bengali": 46, "Early_Aramaic": 22, "Hebrew": 22,
        "Mkhedruli_(Georgian)": 41, "Other_Background": 964 - 172,
    }  # fmt: skip
    evaluation = {
        "Angelic": 20, "Atemayar_Qelisayer": 26, "Atlantean": 26, "Aurek-Besh": 26,
        "Avesta": 26, "Ge_ez": 26, "Glagolitic": 45, "Gurmukhi": 45, "Kannada": 41,
        "Keble": 26, "Malayalam": 47, "Manipuri": 40, "Mongolian": 30,
        "Old_Church_Slavonic_(Cyrillic)": 45, "Oriya": 46, "Sylheti": 28, "Syriac_(Serto)": 23,
        "Tengwar": 25, "Tibetan": 42, "ULOG": 26,
    }  # fmt: skip
    out = []
    for part, alphabets in (("background", background), ("evaluation", evaluation)):
        for a in sorted(alphabets):
            out += [f"{part}/{a}/character{i:02d}" for i in range(1, alphabets[a] + 1)]
    return out


@pytest.mark.parametrize("mode", ["vinyals", "maml"])
def test_split_sizes_on_the_full_character_list(mode):
    all_names = full_names()
    assert len(all_names) == NUM_CHARACTERS
    parts = {s: character_split(all_names, s, mode) for s in ("train", "val", "test")}
    for s, chosen in parts.items():
        assert len(chosen) == SPLIT_CHARACTERS[mode][s]
    assert len(set().union(*parts.values())) == NUM_CHARACTERS
    assert len(character_split(all_names, "trainval", mode)) == 1200
    if mode == "vinyals":  # the test split is the last 423 characters in canonical order
        assert parts["test"] == all_names[-423:]
    else:
        assert character_split(all_names, "train", mode, seed=1) != parts["train"]


def test_bad_arguments_and_missing_parts(omniglot_root, tmp_path):
    with pytest.raises(ValueError, match=r"1028"):
        Omniglot(omniglot_root, "train")
    with pytest.raises(ValueError, match="split_mode"):
        Omniglot(omniglot_root, "train", "lake", **TINY)
    with pytest.raises(ValueError, match="split"):
        Omniglot(omniglot_root, "everything", **TINY)
    with pytest.raises(FileNotFoundError, match="images_background_small1"):
        Omniglot(tmp_path, "train", **TINY)
    # One part alone is read (the other one is simply absent).
    shutil.copytree(omniglot_root / "images_background", tmp_path / "images_background")
    assert Omniglot(tmp_path, "val", **TINY).num_classes == 2 * 4
    (tmp_path / "images_evaluation").write_text("a file, not the part")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        Omniglot(tmp_path, "train", **TINY)


def test_corrupt_png_and_zip_are_named(omniglot_root, omniglot_zip_root, tmp_path):
    root = tmp_path / "folders"
    shutil.copytree(omniglot_root, root)
    victim = sorted((root / "images_background" / "Latin").rglob("*.png"))[0]
    victim.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=victim.name):
        Omniglot(root, "train", **TINY)
    zroot = tmp_path / "zips"
    shutil.copytree(omniglot_zip_root, zroot)
    (zroot / "images_background.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"images_background\.zip"):
        Omniglot(zroot, "train", **TINY)


def test_prepared_cache_round_trip_is_memory_mapped(omniglot_zip_root, tmp_path):
    root = tmp_path / "omni"
    shutil.copytree(omniglot_zip_root, root)
    source = Omniglot(root, "train", **TINY)
    out = prepare("omniglot", root)
    assert (out / "all-28.npy").is_file() and (out / "all-28.json").is_file()
    cached = Omniglot(root, "train", **TINY)
    assert cached.format == "cache" and cached.is_memmap and not source.is_memmap
    assert cached.class_names == source.class_names
    for c in range(cached.num_classes):
        assert torch.equal(cached.images(c), source.images(c))
    # Another image size is not cached: it is read from the files.
    assert Omniglot(root, "train", image_size=32, **TINY).format == "files"
    with pytest.raises(FileNotFoundError, match="all-32"):
        Omniglot(root, "train", image_size=32, format="cache", **TINY)


@pytest.mark.parametrize("zipped", [True, False])
def test_minimal_sets_keep_each_character_once(tmp_path, zipped):
    drawings = write_omniglot_minimal(tmp_path, zipped=zipped)
    train = Omniglot(tmp_path, "train", "minimal", rotations=(0,), check_classes=False)
    test = Omniglot(tmp_path, "test", "minimal", rotations=(0,), check_classes=False)
    # Greek is in both sets: read once, from small1.
    assert names(train) == [
        "background_small1/Greek/character01",
        "background_small1/Greek/character02",
        "background_small1/Korean/character01",
        "background_small1/Korean/character02",
        "background_small1/Korean/character03",
    ]
    assert [n.split("/", 1)[1] for n in names(test)] == [
        "Sanskrit/character01", "Sanskrit/character02", "Sanskrit/character03",
        "Tagalog/character01", "Tagalog/character02",
    ]  # fmt: skip
    assert test.class_groups == ["Sanskrit"] * 3 + ["Tagalog"] * 2
    assert test.alphabets == ["Sanskrit", "Tagalog"]
    # Pixels are the right character's drawing (inverted: strokes are 1).
    first = test.images(0)[0, 0]
    expected = ~drawings["Sanskrit/character01"]
    from PIL import Image

    resized = Image.fromarray(expected.astype(np.uint8) * 255).resize((28, 28), Image.LANCZOS)
    assert torch.allclose(first, torch.from_numpy(np.array(resized)).float() / 255, atol=2 / 255)
    picked = Omniglot(tmp_path, alphabets=["Greek", "Tagalog"], rotations=(0,))
    assert picked.alphabets == ["Greek", "Tagalog"] and picked.num_classes == 4
    with pytest.raises(ValueError, match="Latin"):
        Omniglot(tmp_path, alphabets=["Latin"])
    with pytest.raises(ValueError, match="split_mode='minimal'"):
        Omniglot(tmp_path, "train")
    with pytest.raises(ValueError, match="expected 136"):
        Omniglot(tmp_path, "train", "minimal")
    with pytest.raises(ValueError, match="split must be one of"):
        Omniglot(tmp_path, "val", "minimal", check_classes=False)


def test_minimal_copies_that_disagree_are_refused(tmp_path):
    write_omniglot_minimal(tmp_path, zipped=False)
    greek = tmp_path / "images_background_small2" / "Greek" / "character01"
    first = sorted(greek.glob("*.png"))[0]
    first.rename(greek / "9999_99.png")
    with pytest.raises(ValueError, match="Greek/character01.*different drawings"):
        Omniglot(tmp_path, "train", "minimal", check_classes=False)


def test_minimal_split_sizes_on_the_real_alphabets():
    sizes = {
        "Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Korean": 40, "Latin": 26,
        "Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17,
    }  # fmt: skip
    small1 = ("Balinese", "Early_Aramaic", "Korean", "Greek", "Latin")
    all_names = [
        f"background_small{1 if a in small1 else 2}/{a}/character{i:02d}"
        for a, n in sizes.items()
        for i in range(1, n + 1)
    ]
    assert len(character_split(all_names, "train", "minimal")) == 136
    assert len(character_split(all_names, "test", "minimal")) == 106
