"""Pascal VOC 2012 (``voc``): see the package docstring for the layout."""

from __future__ import annotations

from pathlib import Path

from mosic import MosicError
from mosic.evaluation.datasets.base import (
    SegDataset, SegSample, _FileItem, _check_class_range, _check_same_size, _read_classes_txt,
    _read_image, _read_label_png, _read_split_list,
)

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _voc_root(root: Path) -> Path:
    """``root`` itself, or the newest ``VOC20xx`` folder in it or in its ``VOCdevkit`` (VOC2012,
    also VOC2011, VOC2010...), whichever holds ``JPEGImages``."""
    if not root.is_dir():
        raise MosicError(f"voc: data set root {root} does not exist (expected {root}/JPEGImages, SegmentationClass, ImageSets/Segmentation)")
    years = sorted([*root.glob("VOC20[0-9][0-9]"), *root.glob("VOCdevkit/VOC20[0-9][0-9]")],
                   key=lambda p: p.name, reverse=True)
    for cand in (root, *years):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise MosicError(f"voc: no folder {root / 'JPEGImages'} (expected the VOC2012 folder, or a VOCdevkit holding "
                     "one, with JPEGImages, SegmentationClass, ImageSets/Segmentation)")


def _open_voc(root: Path, split: str) -> SegDataset:
    root = _voc_root(root)
    if split == "trainaug":
        masks = root / "SegmentationClassAug"
        if not masks.is_dir():
            have = sorted(f.stem for f in (root / "ImageSets" / "Segmentation").glob("*.txt"))
            raise MosicError(f"voc: split 'trainaug' needs the augmented masks in {masks} (and {root}/ImageSets/Segmentation/trainaug.txt)"
                             + (f"; this folder has the splits {', '.join(have)}: pass --train-split "
                                f"{'train' if 'train' in have else have[0]}" if have else ""))
    else:
        masks = root / "SegmentationClass"
        if not masks.is_dir():
            raise MosicError(f"voc: no folder {masks}")
    ids = _read_split_list(root / "ImageSets" / "Segmentation" / f"{split}.txt", "voc")
    classes_file = root / "classes.txt"
    if classes_file.is_file():
        names, declared = _read_classes_txt(classes_file), str(classes_file)
    else:
        names, declared = list(VOC_CLASSES), "Pascal VOC"
    items = []
    for i in ids:
        img, lab = root / "JPEGImages" / f"{i}.jpg", masks / f"{i}.png"
        if not img.is_file():
            raise MosicError(f"voc: split {split!r} lists {i!r} but there is no image {img}")
        if not lab.is_file():
            raise MosicError(f"voc: image {img} has no mask {lab}")
        items.append(_FileItem(i, img, lab))
    n = len(names)

    def load(it: _FileItem) -> SegSample:
        image = _read_image(it.image)
        label = _read_label_png(it.label)
        _check_same_size(image, label, it.image, it.label)
        _check_class_range(label, n, it.label, declared)
        return SegSample(image, label, it.id)

    return SegDataset("voc", names, items, load, root, split)
