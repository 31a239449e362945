"""The reference's fixed training subsets of the in-context evaluation (open-hummingbird-eval's
file lists, MIT, shipped in ``hummingbird_file_sets/`` with their licence and source).

Pascal VOC ``trainaug`` and ADE20K ``training`` have, for the fractions 1/128, 1/64 and 1/8, five
lists each, named by the seed that drew them (:data:`REFERENCE_SEEDS`). The published figures
average the five. Other data sets, splits and fractions use a seeded random draw
(:meth:`mosic.evaluation.datasets.SegDataset.subset`).
"""

from __future__ import annotations

from fractions import Fraction
from importlib import resources
from pathlib import Path

from mosic import MosicError

#: the seeds of the reference's five lists per fraction
REFERENCE_SEEDS = (42, 400, 783, 1293, 4019)
#: data set name -> (split the lists are drawn from, file name prefix)
_SETS = {"voc": ("trainaug", "trainaug"), "ade20k": ("training", "training")}
_FRACTIONS = (Fraction(1, 128), Fraction(1, 64), Fraction(1, 8))


def folder() -> Path:
    return Path(str(resources.files("mosic.evaluation") / "hummingbird_file_sets"))


def list_path(dataset: str, split: str | None, fraction: float, seed: int) -> Path | None:
    """The reference list for this data set, split, fraction and seed, or None when the reference
    has none (another data set, split, fraction or seed)."""
    if dataset not in _SETS or split != _SETS[dataset][0]:
        return None
    f = Fraction(fraction).limit_denominator(4096)
    if f not in _FRACTIONS or int(seed) not in REFERENCE_SEEDS:
        return None
    n = f.denominator
    return folder() / dataset / f"1_div_{n}" / f"{_SETS[dataset][1]}_{n}_{int(seed)}.txt"


def has_lists(dataset: str, split: str | None, fraction: float) -> bool:
    """True when the reference has fixed lists for this data set, split and fraction."""
    return list_path(dataset, split, fraction, REFERENCE_SEEDS[0]) is not None


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise MosicError(f"reference file list {path} is missing from this installation")
    ids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not ids:
        raise MosicError(f"reference file list {path} is empty")
    return ids


def fraction_seeds(dataset: str, split: str | None, fraction: float, draws: int, seed: int = 0,
                   subsets: str = "reference") -> list[int]:
    """The seeds to average for a fraction: 1/1 needs one run; where the reference has lists (and
    ``subsets`` is "reference"), its five list seeds (the first ``draws`` of them); else ``draws``
    seeds from ``seed`` on."""
    if fraction >= 1:
        return [seed]
    if subsets == "reference" and has_lists(dataset, split, fraction):
        return list(REFERENCE_SEEDS[:max(1, draws)])
    return list(range(seed, seed + draws))


def training_subset(ds, fraction: float, seed: int, subsets: str = "reference"):
    """(the images of ``ds`` the memory is built from, where they come from): the whole split for
    fraction 1; the reference list (``subsets="reference"``, where one exists for ``seed``): its
    images, which must all be in ``ds``; else ``ds.subset(fraction, seed)``."""
    if fraction >= 1:
        return ds, "all"
    path = list_path(ds.name, getattr(ds, "split", None), fraction, seed) if subsets == "reference" else None
    if path is None:
        return ds.subset(fraction, seed), f"random (seed {seed})"
    ids = read_list(path)
    try:
        sub = ds.select(ids, what=f"reference list {path.parent.name}/{path.name}")
    except MosicError as e:
        raise MosicError(f"{e}; pass --set incontext.subsets=random to draw seeded random subsets instead") from None
    return sub, f"list {path.parent.name}/{path.name}"
