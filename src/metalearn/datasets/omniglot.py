"""Omniglot (Lake et al. 2015) with the Vinyals and the MAML character splits."""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Sequence
from os import PathLike
from pathlib import Path, PurePosixPath

from metalearn._checks import check_int
from metalearn.datasets.base import ImageClasses
from metalearn.datasets.cache import cache_files, read_cache
from metalearn.datasets.folder import ImageClass, decode_classes, list_image_classes

__all__ = [
    "MINIMAL_TEST_ALPHABETS",
    "MINIMAL_TRAIN_ALPHABETS",
    "PARTS",
    "SPLIT_CHARACTERS",
    "Omniglot",
    "character_split",
    "list_characters",
]

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
    "minimal": {"train": 136, "test": 106, "trainval": 136},
}


# Where the release's parts may sit: the full release's two halves and the "minimal" sets
# (five background alphabets each; Greek and Latin are in both, with identical images).
PARTS = ("background", "evaluation", "background_small1", "background_small2")
#: Alphabets of the minimal split: meta-train on ``images_background_small1``'s five alphabets,
#: test on the three alphabets only ``images_background_small2`` has.
MINIMAL_TRAIN_ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
MINIMAL_TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")


def _part_candidates(root: Path, part: str) -> list[Path]:
    dirs = [root, root / "omniglot", root / "omniglot-py", root / "python"]
    return [d / f"images_{part}" for d in dirs] + [d / f"images_{part}.zip" for d in dirs]


def _list_part(found: Path, part: str) -> list[ImageClass]:
    if found.is_dir() or zipfile.is_zipfile(found):
        classes = list_image_classes(found, (".png",))
    else:
        raise ValueError(
            f"{found} is neither a folder nor a zip archive; Omniglot's images_{part} must be "
            "the release's folder or its .zip"
        )
    out = []
    for c in classes:
        if c.name.count("/") != 1:
            raise ValueError(
                f"{c.archive or found}: {c.name} is not <Alphabet>/<character>; Omniglot's "
                f"images_{part} holds <Alphabet>/<characterNN>/<drawing>.png"
            )
        out.append(ImageClass(f"{part}/{c.name}", c.files, c.archive))
    return out


def list_characters(root: str | PathLike[str]) -> list[ImageClass]:
    """Every character under ``root`` (all release parts present, folders or zips), each once.

    Reads whichever of ``images_background``, ``images_evaluation``,
    ``images_background_small1`` and ``images_background_small2`` are present (folders or the
    release's zips, also under ``root/omniglot/`` or ``root/python/``). A character found in
    several parts (the minimal sets both hold Greek and Latin; the full background set holds
    every minimal one) is kept once, from the first part in that order, so no two classes have
    the same images. Names are ``part/Alphabet/characterNN``; the order is by part, then
    alphabet, then character.

    Raises:
        FileNotFoundError: listing the paths looked for when no part is present.
        ValueError: naming the part whose drawings disagree with another copy of a character.
    """
    root = Path(root)
    out: list[ImageClass] = []
    seen: dict[str, ImageClass] = {}
    for part in PARTS:
        found = next((p for p in _part_candidates(root, part) if p.exists()), None)
        if found is None:
            continue
        for c in _list_part(found, part):
            key = c.name.split("/", 1)[1]
            if key in seen:
                drawings = [PurePosixPath(f).name for f in c.files]
                if drawings != [PurePosixPath(f).name for f in seen[key].files]:
                    raise ValueError(
                        f"Omniglot character {key} is in {seen[key].name.split('/')[0]} and "
                        f"{part} with different drawings; remove one copy from {root}"
                    )
                continue
            seen[key] = c
            out.append(c)
    if not out:
        looked = "\n".join(f"  {p}" for part in PARTS for p in _part_candidates(root, part))
        raise FileNotFoundError(
            f"no Omniglot images found under {root}. Looked for:\n{looked}\n"
            "Download them with metalearn.datasets.download('omniglot', root)."
        )
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

    ``minimal`` (the minimal sets ``images_background_small1/2``): train = small1's Balinese,
    Early_Aramaic, Greek, Korean and Latin (136 characters); test = the three alphabets only
    small2 has, Japanese_(katakana), Sanskrit and Tagalog (106); there is no validation split.
    """
    if split_mode not in SPLIT_CHARACTERS:
        raise ValueError(f"split_mode must be 'vinyals', 'maml' or 'minimal', got {split_mode!r}")
    if split not in SPLIT_CHARACTERS[split_mode]:
        raise ValueError(
            f"split must be one of {sorted(SPLIT_CHARACTERS[split_mode])} for split_mode="
            f"{split_mode!r}, got {split!r}"
        )
    if split_mode == "minimal":
        wanted_alphabets = MINIMAL_TEST_ALPHABETS if split == "test" else MINIMAL_TRAIN_ALPHABETS
        return [n for n in names if n.split("/")[1] in wanted_alphabets]
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


class Omniglot(ImageClasses):
    """Omniglot: 1623 handwritten characters from 50 alphabets, 20 drawings each.

    Reads the parts of the original release present under ``root`` (folders or the release's
    zips, read without extracting; also under ``root/omniglot/``): the full
    ``images_background`` and ``images_evaluation``, and/or the "minimal" sets
    ``images_background_small1`` and ``images_background_small2`` (each character once, see
    :func:`list_characters`), or the cache written by :func:`metalearn.datasets.prepare`.
    Images are resized from 105x105 to ``image_size`` with Lanczos filtering and inverted so
    that strokes are 1 (Finn et al. 2017): ``float32`` ``1 x image_size x image_size`` in
    ``[0, 1]``. ``class_groups`` holds each character's alphabet, so
    ``FewShot(..., groups=ds.class_groups)`` makes within-alphabet tasks (Lake et al.).

    Classes are characters, each also rotated by the angles in ``rotations`` (Santoro et al.
    2016; Vinyals et al. 2016): the default gives the 4 x 1028 = 4112 training classes of the
    Vinyals split. See :func:`character_split` for the exact split rules.

    Args:
        root: folder holding the release's parts.
        split: ``"train"``, ``"val"`` (or ``"validation"``), ``"test"`` or ``"trainval"``.
        split_mode: ``"vinyals"`` (1028/172/423 characters), ``"maml"`` (1100/100/423,
            seeded; ``"trainval"`` is the 1200 characters Finn et al. train on) or
            ``"minimal"`` (train on small1's 5 alphabets, 136 characters; test on the 3
            alphabets only small2 has, 106 characters).
        image_size: side of the returned images (28 in the papers).
        rotations: rotation angles (multiples of 90); ``(0,)`` for no rotated classes.
        mirror: also add every (rotated) character reflected left to right as a new class,
            doubling the classes (``name/mirror/rotDDD``); for meta-training sets.
        seed: seed of the MAML split.
        format: ``"auto"`` (the cache if prepared for ``image_size``, else the files),
            ``"cache"`` or ``"files"``.
        check_classes: require the standard number of characters for the split; pass False
            for a subset (e.g. a tiny test dataset).
        alphabets: load exactly these alphabets instead of a split (``split``,
            ``split_mode`` and ``check_classes`` are then unused).

    Example:
        >>> import metalearn as ml
        >>> train = ml.datasets.Omniglot("data/omniglot", split="train")  # doctest: +SKIP
        >>> tasks = ml.tasks.FewShot(train, n_way=20, k_shot=1, k_query=15)  # doctest: +SKIP
        >>> test = ml.datasets.Omniglot("data/omniglot", "test", "minimal",
        ...                             rotations=(0,))  # doctest: +SKIP
        >>> within = ml.tasks.FewShot(test, 20, 1, 1, groups=test.class_groups)  # doctest: +SKIP

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
        mirror: bool = False,
        seed: int = 0,
        format: str = "auto",
        check_classes: bool = True,
        alphabets: Sequence[str] | None = None,
    ) -> None:
        root = Path(root)
        split = {"validation": "val", "valid": "val"}.get(split, split)
        check_int("image_size", image_size, 1)
        if format not in ("auto", "cache", "files"):
            raise ValueError(f"format must be 'auto', 'cache' or 'files', got {format!r}")
        if isinstance(alphabets, str):
            raise TypeError(f"alphabets must be a list of names, got the string {alphabets!r}")
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
        if alphabets is not None:
            names = _select_alphabets(all_names, alphabets, root)
            split, split_mode = "alphabets", "alphabets"
        else:
            names = character_split(all_names, split, split_mode, seed)
            expected = SPLIT_CHARACTERS[split_mode][split]
            if check_classes and len(names) != expected:
                parts = {n.split("/")[0] for n in all_names}
                minimal_only = parts <= {"background_small1", "background_small2"}
                hint = (
                    " Only the minimal sets are present: use split_mode='minimal'."
                    if minimal_only and split_mode != "minimal"
                    else " The files may be incomplete."
                )
                raise ValueError(
                    f"Omniglot under {root}: the {split_mode} {split!r} split has {len(names)} "
                    f"characters, expected {expected}.{hint} Pass check_classes=False to load "
                    "a subset."
                )
            if not names:
                raise ValueError(f"the {split_mode} {split!r} split of {root} has no characters")
        position = {n: i for i, n in enumerate(all_names)}
        if cached is not None:
            rows = [all_rows[position[n]] for n in names]
        else:
            data, rows = decode_classes([chars[position[n]] for n in names], image_size, "L", True)
        self.split = split
        self.split_mode = split_mode
        super().__init__(
            data, rows, names, rotations=rotations, groups=[n.split("/")[1] for n in names],
            mirror=mirror, channels_first=cached is not None, source=source,
        )  # fmt: skip

    @property
    def alphabets(self) -> list[str]:
        """The alphabets present, sorted."""
        return sorted({n.split("/")[1] for n in self.base_names})


def _select_alphabets(names: Sequence[str], alphabets: Sequence[str], root: Path) -> list[str]:
    present = {n.split("/")[1] for n in names}
    missing = [a for a in alphabets if a not in present]
    if missing or not alphabets:
        raise ValueError(
            f"alphabets {missing or list(alphabets)} are not in Omniglot under {root}; "
            f"present: {sorted(present)}"
        )
    wanted = set(alphabets)
    return [n for n in names if n.split("/")[1] in wanted]
