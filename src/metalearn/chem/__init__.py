"""Molecules as features: Morgan fingerprints of SMILES and multi-assay tables as tasks.

Fingerprints need RDKit and the ranking metrics scikit-learn: ``pip install 'metalearn[chem]'``.
Both are imported only when used.
"""

from metalearn.chem.assays import (
    TOX21_TEST,
    TOX21_TRAIN,
    AssayTable,
    molecule_assays,
    read_assay_csv,
)
from metalearn.chem.fingerprints import Fingerprints, MorganFingerprint, morgan_fingerprints

__all__ = [
    "TOX21_TEST",
    "TOX21_TRAIN",
    "AssayTable",
    "Fingerprints",
    "MorganFingerprint",
    "molecule_assays",
    "morgan_fingerprints",
    "read_assay_csv",
]
