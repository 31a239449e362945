"""ADE20K SceneParsing (``ade20k``): see the package docstring for the layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mosic import MosicError
from mosic.evaluation.datasets.base import (
    IGNORE, SegDataset, SegSample, _FileItem, _check_same_size, _list_files, _read_image,
    _read_label_png,
)

#: the 150 ADE20K SceneParsing classes; index i here is raw annotation value i + 1
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)


_ADE_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def _ade_lut() -> np.ndarray:
    lut = np.full(256, -1, np.int16)
    lut[0] = IGNORE
    lut[1:151] = np.arange(150)
    lut[IGNORE] = IGNORE
    return lut


def _open_ade20k(root: Path, split: str) -> SegDataset:
    if not root.is_dir():
        raise MosicError(f"ade20k: data set root {root} does not exist (expected {root}/images/training, annotations/training, ...)")
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016" / "images").is_dir():
        root = root / "ADEChallengeData2016"
    try:
        sub = _ADE_SPLITS[split.lower()]
    except KeyError:
        raise MosicError(f"ade20k: unknown split {split!r}; use training (train) or validation (val)") from None
    img_dir, ann_dir = root / "images" / sub, root / "annotations" / sub
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise MosicError(f"ade20k: no folder {d}")
    names = _list_files(img_dir, (".jpg", ".jpeg"))
    if not names:
        raise MosicError(f"ade20k: no JPEG images in {img_dir}")
    items = []
    for nm in names:
        stem = os.path.splitext(nm)[0]
        lab = ann_dir / f"{stem}.png"
        if not lab.is_file():
            raise MosicError(f"ade20k: image {img_dir / nm} has no annotation {lab}")
        items.append(_FileItem(stem, img_dir / nm, lab))
    lut = _ade_lut()

    def load(it: _FileItem) -> SegSample:
        image = _read_image(it.image)
        raw = _read_label_png(it.label)
        _check_same_size(image, raw, it.image, it.label)
        bad = lut[raw] < 0
        if bad.any():
            vals = np.unique(raw[bad])
            raise MosicError(
                f"{it.label}: annotation values {', '.join(map(str, vals[:8].tolist()))} are not ADE20K "
                "classes (expected 0 = other, 1..150)"
            )
        return SegSample(image, lut[raw].astype(np.uint8), it.id)

    return SegDataset("ade20k", ADE20K_CLASSES, items, load, root, sub)
