"""Omniglot (Lake et al. 2015) with the Vinyals and the MAML character splits."""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from metalearn._checks import check_int
from metalearn.datasets._imageio import decode_image
from metalearn.datasets.base import ImageClasses
from metalearn.datasets.cache import cache_files, read_cache

__all__ = ["PARTS", "SPLIT_CHARACTERS", "Omniglot", "character_split", "list_characters"]

PARTS = ("background", "evaluation")
NUM_CHARACTERS = 1623

# The Vinyals et al. (2016) split as distributed with Snell et al.'s prototypical networks and
# torchmeta: validation = five whole background alphabets; test = the evaluation alphabets
# from Gurmukhi's 42nd character on (the last 423 characters in sorted order); train = the rest.
VINYALS_VAL_ALPHABETS = frozenset(
    {"Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)"}
)
VINYALS_TEST_ALPHABETS = frozenset(
    {
        "Kannada",
        "Keble",
        "Malayalam",
        "Manipuri",
        "Mongolian",
        "Old_Church_Slavonic_(Cyrillic)",
        "Oriya",
        "Sylheti",
        "Syriac_(Serto)",
        "Tengwar",
        "Tibetan",
        "ULOG",
    }
)
VINYALS_SPLIT_ALPHABET = ("Gurmukhi", 42)  # characters >= 42 of Gurmukhi are test characters

SPLIT_CHARACTERS = {
    "vinyals": {"train": 1028, "val": 172, "test": 423, "trainval": 1200},
    "maml": {"train": 1100, "val": 100, "test": 423, "trainval": 1200},
}


@dataclass(frozen=True)
class Character:
    """One Omniglot character: its name ``part/Alphabet/characterNN`` and its image files."""

    part: str
    alphabet: str
    character: str
    files: tuple[str, ...]  # paths, or member names inside the part's zip
    archive: str | None  # the zip holding the files, None for folders

    @property
    def name(self) -> str:
        return f"{self.part}/{self.alphabet}/{self.character}"


def _part_candidates(root: Path, part: str) -> list[Path]:
    dirs = [root, root / "omniglot", root / "omniglot-py"]
    return [d / f"images_{part}" for d in dirs] + [d / f"images_{part}.zip" for d in dirs]


def _list_folder(folder: Path, part: str) -> list[Character]:
    chars = []
    for alphabet in sorted(p for p in folder.iterdir() if p.is_dir()):
        for char in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            files = tuple(str(f) for f in sorted(char.glob("*.png")))
            if not files:
                raise ValueError(f"Omniglot character folder {char} holds no .png images")
            chars.append(Character(part, alphabet.name, char.name, files, None))
    return chars


def _list_zip(path: Path, part: str) -> list[Character]:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not a readable zip archive ({e})") from e
    groups: dict[tuple[str, str], list[str]] = {}
    for n in names:
        pieces = n.split("/")
        # images_background/<Alphabet>/<characterNN>/<IIII_DD>.png
        if len(pieces) == 4 and pieces[3].lower().endswith(".png"):
            groups.setdefault((pieces[1], pieces[2]), []).append(n)
    return [
        Character(part, a, c, tuple(sorted(files)), str(path))
        for (a, c), files in sorted(groups.items())
    ]


def list_characters(root: str | PathLike[str]) -> list[Character]:
    """Every character under ``root`` (both parts, folders or zips), in the canonical order.

    The order is: background before evaluation, alphabets sorted, characters sorted.

    Raises:
        FileNotFoundError: listing the paths looked for when a part is missing.
    """
    root = Path(root)
    out: list[Character] = []
    for part in PARTS:
        candidates = _part_candidates(root, part)
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            looked = "\n".join(f"  {p}" for p in candidates)
            raise FileNotFoundError(
                f"Omniglot images_{part} not found under {root}. Looked for:\n{looked}\n"
                "Download them with metalearn.datasets.download('omniglot', root)."
            )
        chars = _list_zip(found, part) if found.suffix == ".zip" else _list_folder(found, part)
        if not chars:
            raise ValueError(f"{found} holds no <Alphabet>/<character>/*.png images")
        out += chars
    return out


def _maml_key(seed: int, name: str) -> bytes:
    return hashlib.sha256(f"{seed}:{name}".encode()).digest()


def character_split(
    names: Sequence[str], split: str, split_mode: str = "vinyals", seed: int = 0
) -> list[str]:
    """The character names (``part/Alphabet/characterNN``) of ``split``, in canonical order.

    ``vinyals``: validation = the Armenian, Bengali, Early_Aramaic, Hebrew and
    Mkhedruli_(Georgian) alphabets; test = the Kannada, Keble, Malayalam, Manipuri, Mongolian,
    Old_Church_Slavonic_(Cyrillic), Oriya, Sylheti, Syriac_(Serto), Tengwar, Tibetan and ULOG
    alphabets plus Gurmukhi characters 42-45; train = every other character (1028/172/423).

    ``maml``: characters ordered by ``sha256(f"{seed}:{name}")``; the first
    ``round(n * 1100 / 1623)`` train, the next ``round(n * 100 / 1623)`` validation, the rest
    test (1100/100/423 on the full data; ``trainval`` = the first 1200, Finn et al.'s training
    set). The rule uses no random number generator, so it is the same on every platform.
    """
    if split_mode not in SPLIT_CHARACTERS:
        raise ValueError(f"split_mode must be 'vinyals' or 'maml', got {split_mode!r}")
    if split not in SPLIT_CHARACTERS[split_mode]:
        raise ValueError(f"split must be 'train', 'val', 'test' or 'trainval', got {split!r}")
    if split_mode == "vinyals":

        def which(name: str) -> str:
            _, alphabet, character = name.split("/")
            m = re.search(r"(\d+)$", character)
            number = int(m.group(1)) if m else 0
            if alphabet in VINYALS_TEST_ALPHABETS:
                return "test"
            split_alphabet, first_test = VINYALS_SPLIT_ALPHABET
            if alphabet == split_alphabet and number >= first_test:
                return "test"
            return "val" if alphabet in VINYALS_VAL_ALPHABETS else "train"

        wanted = {"train", "val"} if split == "trainval" else {split}
        return [n for n in names if which(n) in wanted]
    n = len(names)
    order = sorted(names, key=lambda name: _maml_key(seed, name))
    n_train = round(n * 1100 / NUM_CHARACTERS)
    n_val = round(n * 100 / NUM_CHARACTERS)
    chosen = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
        "trainval": order[: n_train + n_val],
    }[split]
    keep = set(chosen)
    return [name for name in names if name in keep]


def decode_characters(
    chars: Sequence[Character], image_size: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Decode, resize and invert the images of ``chars``: ``uint8 [N, S, S]``, rows per char."""
    total = sum(len(c.files) for c in chars)
    data = np.empty((total, image_size, image_size), dtype=np.uint8)
    rows, start = [], 0
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for c in chars:
            for j, f in enumerate(c.files):
                if c.archive is None:
                    source: str | bytes = f
                    label = f
                else:
                    z = archives.get(c.archive) or archives.setdefault(
                        c.archive, zipfile.ZipFile(c.archive)
                    )
                    try:
                        source = z.read(f)
                    except (zipfile.BadZipFile, OSError) as e:
                        raise ValueError(f"cannot read {f} from {c.archive} ({e})") from e
                    label = f"{c.archive}:{f}"
                # 1-bit PNGs have white background (1) and black strokes (0); invert so that
                # strokes are 1, as Finn et al. do.
                data[start + j] = 255 - decode_image(source, label, "L", image_size)
            rows.append(np.arange(start, start + len(c.files)))
            start += len(c.files)
    finally:
        for z in archives.values():
            z.close()
    return data, rows


class Omniglot(ImageClasses):
    """Omniglot: 1623 handwritten characters from 50 alphabets, 20 drawings each.

    Reads ``images_background/`` and ``images_evaluation/`` under ``root`` (folders or the
    original ``images_background.zip``/``images_evaluation.zip``, which are read without
    extracting; also under ``root/omniglot/``), or the cache written by
    :func:`metalearn.datasets.prepare`. Images are resized from 105x105 to ``image_size`` with
    Lanczos filtering and inverted so that strokes are 1 (Finn et al. 2017): ``float32``
    ``1 x image_size x image_size`` in ``[0, 1]``.

    Classes are characters, each also rotated by the angles in ``rotations`` (Santoro et al.
    2016; Vinyals et al. 2016): the default gives the 4 x 1028 = 4112 training classes of the
    Vinyals split. See :func:`character_split` for the exact split rules.

    Args:
        root: folder holding the two parts.
        split: ``"train"``, ``"val"`` (or ``"validation"``), ``"test"`` or ``"trainval"``.
        split_mode: ``"vinyals"`` (1028/172/423 characters) or ``"maml"`` (1100/100/423,
            seeded; ``"trainval"`` is the 1200 characters Finn et al. train on).
        image_size: side of the returned images (28 in the papers).
        rotations: rotation angles (multiples of 90); ``(0,)`` for no rotated classes.
        seed: seed of the MAML split.
        format: ``"auto"`` (the cache if prepared for ``image_size``, else the files),
            ``"cache"`` or ``"files"``.
        check_classes: require the standard number of characters for the split; pass False
            for a subset (e.g. a tiny test dataset).

    Example:
        >>> import metalearn as ml
        >>> train = ml.datasets.Omniglot("data/omniglot", split="train")  # doctest: +SKIP
        >>> tasks = ml.tasks.FewShot(train, n_way=20, k_shot=1, k_query=15)  # doctest: +SKIP

    Reference:
        Lake, Salakhutdinov, Tenenbaum. Human-level concept learning through probabilistic
        program induction. Science 2015; Vinyals et al. Matching Networks. NeurIPS 2016;
        Finn, Abbeel, Levine. MAML. ICML 2017.
    """

    def __init__(
        self,
        root: str | PathLike[str],
        split: str = "train",
        split_mode: str = "vinyals",
        *,
        image_size: int = 28,
        rotations: Sequence[int] = (0, 90, 180, 270),
        seed: int = 0,
        format: str = "auto",
        check_classes: bool = True,
    ) -> None:
        root = Path(root)
        split = {"validation": "val", "valid": "val"}.get(split, split)
        check_int("image_size", image_size, 1)
        if format not in ("auto", "cache", "files"):
            raise ValueError(f"format must be 'auto', 'cache' or 'files', got {format!r}")
        cached = None if format == "files" else read_cache(root, "omniglot", f"all-{image_size}")
        if format == "cache" and cached is None:
            index = cache_files(root, "omniglot", f"all-{image_size}")[1]
            raise FileNotFoundError(
                f"no Omniglot cache for image_size={image_size}: {index} is missing; "
                "run metalearn.datasets.prepare('omniglot', root)"
            )
        if cached is not None:
            data, all_rows, all_names, source = cached
            self.format = "cache"
        else:
            chars = list_characters(root)
            all_names = [c.name for c in chars]
            self.format = "files"
            source = f"files {root}"
        names = character_split(all_names, split, split_mode, seed)
        expected = SPLIT_CHARACTERS[split_mode][split]
        if check_classes and len(names) != expected:
            raise ValueError(
                f"Omniglot under {root}: the {split_mode} {split!r} split has {len(names)} "
                f"characters, expected {expected} (of {NUM_CHARACTERS}); the files may be "
                "incomplete. Pass check_classes=False to load a subset."
            )
        if not names:
            raise ValueError(f"the {split_mode} {split!r} split of {root} has no characters")
        position = {n: i for i, n in enumerate(all_names)}
        if cached is not None:
            rows = [all_rows[position[n]] for n in names]
        else:
            data, rows = decode_characters([chars[position[n]] for n in names], image_size)
        self.split = split
        self.split_mode = split_mode
        super().__init__(data, rows, names, rotations=rotations, channels_first=True, source=source)
