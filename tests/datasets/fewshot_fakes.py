"""Writers of tiny datasets in each real on-disk layout (generated; no binaries shipped)."""

from __future__ import annotations

import csv
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# Three classes per split, four images each: enough for every check, small enough to be fast.
SPLIT_WNIDS = {
    "train": ["n01532829", "n01558993", "n01704323"],
    "val": ["n01855672", "n02091244", "n02114548"],
    "test": ["n01930112", "n01981276", "n02099601"],
}
PER_CLASS = 4


def smooth_images(seed: int, n: int, size: int = 84) -> np.ndarray:
    """Low-frequency colour images: JPEG and resizing change them only slightly."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 226, size=(n, 4, 4, 3)).astype(np.uint8)
    return np.stack(
        [
            np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BICUBIC))
            for c in coarse
        ]
    )


def mini_reference(split: str) -> dict[str, np.ndarray]:
    """wnid -> uint8 [PER_CLASS, 84, 84, 3], the pixels every layout stores."""
    offset = {"train": 0, "val": 100, "test": 200}[split]
    return {w: smooth_images(offset + i, PER_CLASS) for i, w in enumerate(SPLIT_WNIDS[split])}


def _stacked(split: str) -> tuple[np.ndarray, list[str]]:
    ref = mini_reference(split)
    # Interleave classes so that a loader that forgot to group by class would be caught.
    data, labels = [], []
    for j in range(PER_CLASS):
        for w in reversed(SPLIT_WNIDS[split]):
            data.append(ref[w][j])
            labels.append(w)
    return np.stack(data), labels


def write_learn2learn(root: Path, val_name: str = "validation") -> None:
    for split in SPLIT_WNIDS:
        data, labels = _stacked(split)
        class_dict: dict[str, list[int]] = {}
        for i, w in enumerate(labels):
            class_dict.setdefault(w, []).append(i)
        name = val_name if split == "val" else split
        with (root / f"mini-imagenet-cache-{name}.pkl").open("wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f)


def write_torchmeta(root: Path) -> None:
    import h5py

    folder = root / "miniimagenet"
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLIT_WNIDS:
        ref = mini_reference(split)
        with h5py.File(folder / f"{split}_data.hdf5", "w") as f:
            group = f.create_group("datasets")
            for w in reversed(SPLIT_WNIDS[split]):
                group.create_dataset(w, data=ref[w])
        (folder / f"{split}_labels.json").write_text(json.dumps(SPLIT_WNIDS[split]))


METAOPTNET_FILES = {
    "train": "miniImageNet_category_split_train_phase_train.pickle",
    "val": "miniImageNet_category_split_val.pickle",
    "test": "miniImageNet_category_split_test.pickle",
}


def write_metaoptnet(root: Path) -> None:
    first_label = 0
    for split in ("train", "val", "test"):
        data, names = _stacked(split)
        wnids = SPLIT_WNIDS[split]
        # Labels continue after the previous split's, as in the MetaOptNet files.
        catname2label = {w: first_label + i for i, w in enumerate(wnids)}
        first_label += len(wnids)
        obj = {
            "data": data,
            "labels": [catname2label[w] for w in names],
            "catname2label": catname2label,
        }
        with (root / METAOPTNET_FILES[split]).open("wb") as f:
            pickle.dump(obj, f, protocol=2)


def write_folders(root: Path) -> None:
    for split in SPLIT_WNIDS:
        for w, images in mini_reference(split).items():
            d = root / split / w
            d.mkdir(parents=True)
            for j, im in enumerate(images):
                Image.fromarray(im).save(d / f"{w}{j:08d}.jpg", quality=95)


def write_ravi(root: Path) -> None:
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    for split in SPLIT_WNIDS:
        rows = []
        for w, images in mini_reference(split).items():
            for j, im in enumerate(images):
                name = f"{w}{j:08d}.jpg"
                # The original JPEGs are not square; the loader must resize them to 84x84.
                big = Image.fromarray(im).resize((126, 100), Image.Resampling.BICUBIC)
                big.save(images_dir / name, quality=95)
                rows.append((name, w))
        with (root / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            writer.writerows(rows)


MINI_WRITERS = {
    "learn2learn": write_learn2learn,
    "torchmeta": write_torchmeta,
    "metaoptnet": write_metaoptnet,
    "folders": write_folders,
    "ravi": write_ravi,
}


# Omniglot: real alphabet names so that the Vinyals rules apply to the tiny dataset.
OMNIGLOT_CHARS = {
    "background": {"Armenian": 2, "Latin": 2},
    "evaluation": {"Gurmukhi": (41, 42), "Kannada": 1},
}
OMNI_PER_CHAR = 3


def omniglot_image(seed: int) -> np.ndarray:
    """A 105x105 1-bit drawing: white background (True), a few black strokes (False)."""
    rng = np.random.default_rng(seed)
    im = np.ones((105, 105), dtype=bool)
    for _ in range(3):
        r, c = rng.integers(10, 90, size=2)
        im[r : r + 8, c : c + 40] = False
    return im


def _omniglot_files() -> list[tuple[str, np.ndarray]]:
    files, seed = [], 0
    for part, alphabets in OMNIGLOT_CHARS.items():
        for alphabet, chars in alphabets.items():
            numbers = range(1, chars + 1) if isinstance(chars, int) else chars
            for n in numbers:
                for d in range(1, OMNI_PER_CHAR + 1):
                    name = f"images_{part}/{alphabet}/character{n:02d}/{seed:04d}_{d:02d}.png"
                    files.append((name, omniglot_image(seed * 10 + d)))
                seed += 1
    return files


def write_omniglot(root: Path, zipped: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, im in _omniglot_files():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).convert("1").save(path)
    if zipped:
        for part in OMNIGLOT_CHARS:
            folder = root / f"images_{part}"
            with zipfile.ZipFile(root / f"images_{part}.zip", "w") as z:
                for f in sorted(folder.rglob("*.png")):
                    z.write(f, f.relative_to(root).as_posix())
            for f in sorted(folder.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            folder.rmdir()


# The minimal sets: Greek is in both, with the same drawings (as in the real release).
OMNIGLOT_MINIMAL = {
    "background_small1": {"Greek": 2, "Korean": 3},
    "background_small2": {"Greek": 2, "Sanskrit": 3, "Tagalog": 2},
}

_MINIMAL_ALPHABETS = sorted({a for alphabets in OMNIGLOT_MINIMAL.values() for a in alphabets})


def write_omniglot_minimal(root: Path, zipped: bool = True) -> dict[str, np.ndarray]:
    """Write the two minimal sets; returns the inverted-stroke drawing per character name."""
    root.mkdir(parents=True, exist_ok=True)
    first: dict[str, np.ndarray] = {}
    for part, alphabets in OMNIGLOT_MINIMAL.items():
        files = []
        for alphabet, chars in sorted(alphabets.items()):
            for n in range(1, chars + 1):
                seed = 1000 + 100 * _MINIMAL_ALPHABETS.index(alphabet) + n  # same in both parts
                for d in range(1, OMNI_PER_CHAR + 1):
                    name = f"images_{part}/{alphabet}/character{n:02d}/{seed:04d}_{d:02d}.png"
                    files.append((name, omniglot_image(seed * 10 + d)))
                first.setdefault(f"{alphabet}/character{n:02d}", omniglot_image(seed * 10 + 1))
        if zipped:
            with zipfile.ZipFile(root / f"images_{part}.zip", "w") as z:
                for name, im in files:
                    buffer = io.BytesIO()
                    Image.fromarray(im).convert("1").save(buffer, format="PNG")
                    z.writestr(name, buffer.getvalue())
        else:
            for name, im in files:
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(im).convert("1").save(path)
    return first
