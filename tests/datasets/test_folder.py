"""ImageFolder: a class is a folder of images (folders or a zip), grouped by parent folder."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import metalearn as ml
from metalearn.datasets import ImageFolder, prepare


def write_tree(root, zipped=False):
    """cells/<line>/<treatment>/*.png with a constant colour per class; returns the colours."""
    colours = {}
    for i, name in enumerate(["lineA/control", "lineA/drug", "lineB/control"]):
        colour = np.array([40 * i + 10, 200 - 30 * i, 7 * i], dtype=np.uint8)
        colours[name] = colour
        for j in range(3 + i):
            path = root / "cells" / name / f"img{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.broadcast_to(colour, (10, 12, 3)).copy()).save(path)
    (root / "cells" / "README.txt").write_text("not an image")
    if zipped:
        with zipfile.ZipFile(root / "cells.zip", "w") as z:
            for f in sorted((root / "cells").rglob("*")):
                z.write(f, f.relative_to(root).as_posix())
        shutil.rmtree(root / "cells")
        return root / "cells.zip", colours
    return root / "cells", colours


@pytest.mark.parametrize("zipped", [False, True])
def test_classes_groups_sizes_and_pixels(tmp_path, zipped):
    source, colours = write_tree(tmp_path, zipped)
    ds = ImageFolder(source, image_size=8)
    assert ds.class_names == ["lineA/control", "lineA/drug", "lineB/control"]
    assert ds.class_groups == ["lineA", "lineA", "lineB"]
    assert ds.class_sizes.tolist() == [3, 4, 5]
    assert ds.image_shape == (3, 8, 8)
    for c, name in enumerate(ds.class_names):
        expected = torch.from_numpy(colours[name]).float() / 255
        assert torch.allclose(ds.images(c), expected[None, :, None, None].expand(-1, 3, 8, 8))
    gray = ImageFolder(source, image_size=8, mode="L", invert=True)
    assert gray.image_shape == (1, 8, 8)
    r, g, b = (float(v) for v in colours["lineA/control"])
    luminance = round(r * 299 / 1000 + g * 587 / 1000 + b * 114 / 1000)
    assert abs(gray.images(0)[0, 0, 0, 0].item() * 255 - (255 - luminance)) <= 1


def test_fewshot_within_group_on_a_folder(tmp_path):
    source, _ = write_tree(tmp_path)
    ds = ImageFolder(source, image_size=8, rotations=(0, 90))
    assert ds.class_groups == ["lineA/rot000", "lineA/rot090", "lineA/rot000", "lineA/rot090",
                               "lineB/rot000", "lineB/rot090"]  # fmt: skip
    with pytest.warns(UserWarning, match="lineB"):
        tasks = ml.tasks.FewShot(ds, n_way=2, k_shot=1, k_query=1, groups=ds.class_groups)
    batch = tasks.sample(20, generator=torch.Generator().manual_seed(0))
    groups = ds.class_groups
    for row in batch.info["classes"].tolist():
        assert len({groups[c] for c in row}) == 1 and groups[row[0]].startswith("lineA")
    mirrored = ImageFolder(source, image_size=8, mirror=True)
    assert mirrored.class_groups[:2] == ["lineA", "lineA/mirror"]
    assert torch.equal(mirrored.images(1), mirrored.images(0).flip(-1))


def test_prepare_caches_a_folder_and_a_zip(tmp_path):
    for zipped in (False, True):
        base = tmp_path / str(zipped)
        base.mkdir()
        source, _ = write_tree(base, zipped)
        files = ImageFolder(source, image_size=8, mode="L")
        prepare("folder", source, image_size=8, mode="L")
        cached = ImageFolder(source, image_size=8, mode="L")
        assert cached.format == "cache" and cached.is_memmap and files.format == "files"
        assert cached.class_names == files.class_names
        assert cached.class_groups == files.class_groups
        for c in range(files.num_classes):
            assert torch.equal(cached.images(c), files.images(c))
        assert ImageFolder(source, image_size=8, mode="RGB").format == "files"
        with pytest.raises(FileNotFoundError, match="prepare"):
            ImageFolder(source, image_size=16, format="cache")


def test_bad_layouts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolder(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    (mixed / "a" / "b").mkdir(parents=True)
    Image.new("L", (4, 4)).save(mixed / "a" / "x.png")
    Image.new("L", (4, 4)).save(mixed / "a" / "b" / "y.png")
    with pytest.raises(ValueError, match="holds images and also"):
        ImageFolder(mixed)
    broken = tmp_path / "broken" / "cls"
    broken.mkdir(parents=True)
    (broken / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        ImageFolder(tmp_path / "broken")
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="fake.zip"):
        ImageFolder(tmp_path / "fake.zip")
    with pytest.raises(ValueError, match="mode"):
        ImageFolder(mixed, mode="CMYK")
