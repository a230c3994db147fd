"""Morgan (ECFP) fingerprints of SMILES strings, computed once and cached on disk.

Needs RDKit (``pip install 'metalearn[chem]'``); it is imported only when a fingerprint is
computed, so ``import metalearn`` works without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from metalearn._checks import check_int
from metalearn.tasks._tables import listing, plural

__all__ = ["Fingerprints", "MorganFingerprint", "morgan_fingerprints", "require"]

_CACHE_FORMAT = 1


def require(module: str) -> Any:
    """Import ``module`` (``"rdkit"``, ``"sklearn"``) or fail naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"sklearn": "scikit-learn"}.get(module.split(".")[0], module.split(".")[0])
        raise ImportError(
            f"this needs {package}, which is not installed; install the chemistry extra: "
            "pip install 'metalearn[chem]'"
        ) from None


@dataclass(frozen=True)
class MorganFingerprint:
    """Settings of a Morgan (extended-connectivity, ECFP) fingerprint.

    Args:
        radius: atom-environment radius (2 gives ECFP4, 3 ECFP6).
        size: length of the folded vector (bits or counts), e.g. 1024 or 2048.
        counts: count how often each folded environment occurs instead of a 0/1 bit.
        chirality: distinguish stereo-centres.

    Reference:
        Rogers and Hahn, Extended-Connectivity Fingerprints, J. Chem. Inf. Model. 2010.
    """

    radius: int = 2
    size: int = 2048
    counts: bool = False
    chirality: bool = False

    def __post_init__(self) -> None:
        check_int("radius", self.radius, 0)
        check_int("size", self.size, 1)

    def key(self, smiles: Sequence[str]) -> str:
        """Hash of these settings, the SMILES list and the RDKit version: the cache file's name."""
        rdkit = require("rdkit")
        digest = hashlib.sha256()
        settings = {**asdict(self), "rdkit": rdkit.__version__, "format": _CACHE_FORMAT}
        digest.update(json.dumps(settings, sort_keys=True).encode())
        for s in smiles:
            digest.update(s.encode())
            digest.update(b"\n")
        return digest.hexdigest()[:24]


class Fingerprints(NamedTuple):
    """Fingerprints of the valid SMILES of a list.

    Attributes:
        features: ``[valid, size]`` uint8 bits or uint32 counts, one row per valid SMILES.
        rows: ``[valid]`` positions in the input list of the rows of ``features``.
        invalid: positions of the SMILES RDKit could not parse (left out of ``features``).
    """

    features: np.ndarray
    rows: np.ndarray
    invalid: tuple[int, ...]


def morgan_fingerprints(
    smiles: Sequence[str],
    fingerprint: MorganFingerprint | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    names: Sequence[str] | None = None,
) -> Fingerprints:
    """Morgan (ECFP) fingerprints of a list of SMILES, cached as ``.npz`` in ``cache_dir``.

    SMILES that RDKit cannot parse are left out of ``features`` with a warning that counts them
    and names their positions (``Fingerprints.invalid``); nothing is dropped silently. With a
    ``cache_dir`` the result is written once (atomically: a temporary file renamed into place)
    under a name that hashes the SMILES list, the settings and the RDKit version, and read back
    on the next call with the same inputs (the warning is repeated).

    Args:
        smiles: one SMILES string per molecule.
        fingerprint: the settings (default ``MorganFingerprint()``: radius 2, 2048 bits).
        cache_dir: folder for the cache (created if needed); ``None`` computes every time.
        names: how the warning names each SMILES (e.g. ``"line 12"`` of a file); default its
            0-based position in ``smiles``.

    Returns:
        A :class:`Fingerprints` (``features``, ``rows`` of the valid inputs, ``invalid``).

    Raises:
        ImportError: without RDKit, naming ``pip install 'metalearn[chem]'``.
        TypeError: if ``smiles`` is a single string or holds something other than strings.

    Example:
        >>> import metalearn as ml
        >>> fp = ml.chem.morgan_fingerprints(["CCO", "c1ccccc1O"],
        ...                                  ml.chem.MorganFingerprint(radius=2, size=1024))
        >>> fp.features.shape, fp.invalid
        ((2, 1024), ())
    """
    fingerprint = MorganFingerprint() if fingerprint is None else fingerprint
    if not isinstance(fingerprint, MorganFingerprint):
        raise TypeError(f"fingerprint must be a MorganFingerprint, got {fingerprint!r}")
    if isinstance(smiles, (str, bytes)):
        raise TypeError("smiles must be a list of SMILES strings, not one string")
    smiles = list(smiles)
    bad = [i for i, s in enumerate(smiles) if not isinstance(s, str)]
    if bad:
        raise TypeError(
            f"smiles must hold strings; {plural(len(bad), 'entry')} at positions "
            f"{listing(bad)} are not (e.g. {smiles[bad[0]]!r}); drop or fix them first"
        )
    if names is not None and len(names) != len(smiles):
        raise ValueError(f"names has {len(names)} entries for {len(smiles)} SMILES; give one each")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / f"morgan-{fingerprint.key(smiles)}.npz"
        if path.is_file():
            with np.load(path) as cached:
                result = Fingerprints(
                    cached["features"], cached["rows"], tuple(cached["invalid"].tolist())
                )
            _warn_invalid(result.invalid, smiles, names)
            return result
    result = _compute(smiles, fingerprint)
    if path is not None:
        _write_atomic(path, result)
    _warn_invalid(result.invalid, smiles, names)
    return result


def _compute(smiles: list[str], fingerprint: MorganFingerprint) -> Fingerprints:
    require("rdkit")
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(
        radius=fingerprint.radius,
        fpSize=fingerprint.size,
        includeChirality=fingerprint.chirality,
    )
    dtype = np.uint32 if fingerprint.counts else np.uint8
    rows, invalid, vectors = [], [], []
    # RDKit logs every parse error to stderr; they are collected and reported once instead.
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, s in enumerate(smiles):
            molecule = Chem.MolFromSmiles(s) if s.strip() else None
            if molecule is None:
                invalid.append(i)
                continue
            if fingerprint.counts:
                vectors.append(generator.GetCountFingerprintAsNumPy(molecule))
            else:
                vectors.append(generator.GetFingerprintAsNumPy(molecule))
            rows.append(i)
    finally:
        RDLogger.EnableLog("rdApp.*")
    features = (
        np.stack(vectors).astype(dtype, copy=False)
        if vectors
        else np.zeros((0, fingerprint.size), dtype)
    )
    return Fingerprints(features, np.asarray(rows, dtype=np.int64), tuple(invalid))


def _write_atomic(path: Path, result: Fingerprints) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(
                f,
                features=result.features,
                rows=result.rows,
                invalid=np.asarray(result.invalid, dtype=np.int64),
            )
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _warn_invalid(invalid: tuple[int, ...], smiles: list[str], names: Sequence[str] | None) -> None:
    if invalid:
        shown = [f"{names[i] if names else i} ({_short(smiles[i])!r})" for i in invalid]
        where = "" if names else "positions "
        warnings.warn(
            f"morgan_fingerprints: {len(invalid)} SMILES of {len(smiles)} could not be parsed by "
            f"RDKit and are left out: {where}{listing(shown, show=str)}",
            UserWarning,
            stacklevel=3,
        )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
