"""Multi-assay tables of molecules (SMILES + one label column per assay) as few-shot tasks."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from metalearn.chem.fingerprints import MorganFingerprint, morgan_fingerprints
from metalearn.tasks._tables import MISSING_CELLS, listing
from metalearn.tasks.assays import MultiAssay

__all__ = ["TOX21_TEST", "TOX21_TRAIN", "AssayTable", "molecule_assays", "read_assay_csv"]

#: Altae-Tran et al. (2017)'s Tox21 split: meta-train on the first nine assays ...
TOX21_TRAIN = (
    "NR-AR",
    "NR-AR-LBD",
    "NR-AhR",
    "NR-Aromatase",
    "NR-ER",
    "NR-ER-LBD",
    "NR-PPAR-gamma",
    "SR-ARE",
    "SR-ATAD5",
)
#: ... and test on the last three.
TOX21_TEST = ("SR-HSE", "SR-MMP", "SR-p53")


class AssayTable(NamedTuple):
    """A wide table read by :func:`read_assay_csv`.

    Attributes:
        smiles: one SMILES per compound.
        labels: ``[compounds, assays]`` float labels, NaN where the cell is empty (not measured).
        assays: the assay column names.
        lines: the CSV line number of every compound (for messages).
    """

    smiles: list[str]
    labels: np.ndarray
    assays: list[str]
    lines: list[int]


def read_assay_csv(
    path: str | os.PathLike,
    smiles: str = "smiles",
    assays: Sequence[str] | None = None,
    delimiter: str = ",",
) -> AssayTable:
    """Read a wide CSV table: a SMILES column and one label column per assay.

    Args:
        path: the file, with a header row (MoleculeNet's ``tox21.csv`` has this shape).
        smiles: the SMILES column.
        assays: the label columns; default every column other than ``smiles`` whose cells are
            all numbers or empty (text columns such as ``mol_id`` are ignored).
        delimiter: the field separator.

    Returns:
        An :class:`AssayTable`; empty cells (and ``NA``, ``NaN``...) become NaN.

    Raises:
        ValueError: naming the line and column of a cell that is not a number, or a missing
            column.

    Example:
        >>> table = read_assay_csv("tox21.csv")  # doctest: +SKIP
        >>> table.labels.shape, table.assays[:2]  # doctest: +SKIP
        ((7831, 12), ['NR-AR', 'NR-AR-LBD'])
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no CSV file at {path!r}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        lines = [(n, row) for n, row in enumerate(csv.reader(f, delimiter=delimiter), 1) if row]
    if len(lines) < 2:
        raise ValueError(f"{path} needs a header row and at least one compound")
    header = [h.strip() for h in lines[0][1]]
    body = lines[1:]
    for n, row in body:
        if len(row) != len(header):
            raise ValueError(
                f"{path} line {n} has {len(row)} cells but the header has {len(header)} columns"
            )
    if smiles not in header:
        raise ValueError(f"no SMILES column {smiles!r} in {path}; the columns are {header}")
    cells = {name: [row[j].strip() for _, row in body] for j, name in enumerate(header)}

    def number(cell: str) -> float:
        return float("nan") if cell.lower() in MISSING_CELLS else float(cell)

    def numeric(name: str) -> bool:
        try:
            [number(c) for c in cells[name]]
        except ValueError:
            return False
        return True

    if assays is None:
        assays = [h for h in header if h != smiles and numeric(h)]
    missing = [a for a in assays if a not in header]
    if missing:
        raise ValueError(f"assay columns {missing} are not in {path}; the columns are {header}")
    labels = np.empty((len(body), len(assays)))
    for k, name in enumerate(assays):
        for i, cell in enumerate(cells[name]):
            try:
                labels[i, k] = number(cell)
            except ValueError:
                raise ValueError(
                    f"{path} line {body[i][0]}: assay column {name!r} has {cell!r}, not a "
                    "label (a number, or empty for not measured)"
                ) from None
    return AssayTable(cells[smiles], labels, list(assays), [n for n, _ in body])


def molecule_assays(
    table: AssayTable | str | os.PathLike,
    k_shot: int,
    k_query: int | None,
    split: Mapping[str, Sequence[str]],
    fingerprint: MorganFingerprint | None = None,
    cache_dir: str | os.PathLike | None = None,
    **options: Any,
) -> MultiAssay:
    """Few-shot tasks from molecules: fingerprints of the SMILES, one task per assay.

    Reads the table (a path is read with :func:`read_assay_csv`), computes Morgan fingerprints
    (cached in ``cache_dir``), leaves out compounds whose SMILES RDKit cannot parse (with a
    warning naming their CSV lines and the count) and builds a :class:`MultiAssay`.

    Args:
        table: an :class:`AssayTable` or the path of a wide CSV file.
        k_shot: support compounds per class (K actives and K inactives for binary labels).
        k_query: query compounds per class, or ``None`` for all other labelled compounds.
        split: assay names per split, e.g. ``{"train": TOX21_TRAIN, "test": TOX21_TEST}``.
        fingerprint: the fingerprint settings (default radius 2, 2048 bits).
        cache_dir: where fingerprints are cached (``None``: not cached).
        **options: the other arguments of :class:`MultiAssay` (``n_way``, ``dtype``).

    Returns:
        A :class:`MultiAssay`; its rows are the compounds with a valid SMILES, in file order.

    Example:
        >>> import metalearn as ml
        >>> data = ml.chem.molecule_assays(
        ...     "tox21.csv", k_shot=10, k_query=None,
        ...     split={"train": ml.chem.TOX21_TRAIN, "test": ml.chem.TOX21_TEST},
        ...     cache_dir="~/.cache/metalearn")  # doctest: +SKIP

    Reference:
        Altae-Tran et al., Low Data Drug Discovery with One-Shot Learning, ACS Cent. Sci. 2017.
    """
    if not isinstance(table, AssayTable):
        table = read_assay_csv(table)
    fingerprints = morgan_fingerprints(
        table.smiles, fingerprint, cache_dir, names=[f"line {n}" for n in table.lines]
    )
    if len(fingerprints.rows) == 0:
        raise ValueError(
            f"none of the {len(table.smiles)} SMILES could be parsed; is "
            f"the SMILES column right? First entries: {listing(table.smiles[:3])}"
        )
    labels = table.labels[fingerprints.rows]
    return MultiAssay(
        fingerprints.features, labels, table.assays, k_shot, k_query, split, **options
    )
