"""Readers for the segmentation data sets the evaluation protocols run on.

Image data sets (:func:`open_seg_dataset`, a :class:`SegDataset` of :class:`SegSample`)
-------------------------------------------------------------------------------------
``voc``        Pascal VOC 2012: ``<root>/JPEGImages/<id>.jpg``, ``<root>/SegmentationClass/<id>.png``
               (palette or greyscale PNG: pixel value = class index, 255 = void, not scored) and
               ``<root>/ImageSets/Segmentation/<split>.txt`` (train | val | trainval). Split
               ``trainaug`` reads ``ImageSets/Segmentation/trainaug.txt`` with the masks in
               ``SegmentationClassAug/`` (the SBD-augmented set, 10,582 images). 21 classes with the
               standard names, or the names listed in ``<root>/classes.txt`` (one per line, index =
               class id) when that file exists, e.g. in a synthetic set exported with
               :func:`export_synthetic_voc`. ``root`` may also be a folder holding ``VOC2012/`` or
               ``VOCdevkit/VOC2012/``.
``ade20k``     ADE20K SceneParsing (ADEChallengeData2016): ``<root>/images/<split>/*.jpg`` and
               ``<root>/annotations/<split>/<same name>.png`` (split: training | validation, also
               train | val). 150 classes. The raw annotation value 0 ("other", not one of the 150)
               is not scored: it becomes IGNORE (255), and classes 1..150 become 0..149, so
               ``num_classes`` is 150 and there is no background class.
``synthetic``  The built-in synthetic video set (``mosic-data synthetic``) seen as images: every
               ``every``-th frame (default 4) of each video of ``<root>/<split>``, id
               ``<video>_<nnnnn>``; label = semantic class of the object under each pixel (through
               the ground truth; 0 = background). Split ``val`` means ``valid`` when there is no
               ``val`` folder.

Video data sets (:func:`open_video_dataset`, a :class:`VideoSegDataset` of :class:`VideoClipSample`)
---------------------------------------------------------------------------------------------------
``davis``      DAVIS-2017: ``<root>/JPEGImages/480p/<video>/*.jpg``, ``<root>/Annotations/480p/<video>/*.png``
               and ``<root>/ImageSets/2017/<split>.txt`` (train | val). ``num_classes`` is None: labels
               are the per-video instance ids (0 = background), as in the annotation PNGs.
``ytvos``      YouTube-VOS: ``<root>/<split>/JPEGImages/<video>/*.jpg``, ``<root>/<split>/Annotations/<video>/*.png``
               and ``<root>/<split>/meta.json``. Instance ids become categories through meta.json;
               category ``c`` gets class index 1 + (position of ``c`` among all the categories
               meta.json names, sorted), 0 = background. (The valid/test meta.json of the
               challenge hide the categories; those splits are refused.)
``synthetic``  As above, per video; labels are semantic classes through the ground truth.

A clip is ``frames`` (default 4) of a video's annotated frames (frames with an annotation PNG),
drawn at random without replacement and sorted (the TimeTuning protocol); the draw depends only
on ``seed`` and the video id, so it is the same on every run and for every subset of videos. A
video with fewer annotated frames gives all of them.

Everything the user can get wrong (missing folders or split lists, images without masks, masks of
the wrong kind or with out-of-range values, empty splits) raises :class:`mosic.MosicError` naming
the file or folder.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from mosic import MosicError
from mosic.data.sources import decode_jpeg, list_jpegs, natural_key, voc_colormap

IGNORE = 255

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
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

#: default frames per clip and frame step of the synthetic image set / export
DEFAULT_CLIP_FRAMES = 4
SYNTHETIC_EVERY = 4

EXPORT_MARKER = "mosic_export.json"
EXPORT_FORMAT = "mosic-voc-export/1"
_LABEL_MODES = ("P", "L")




# ------------------------------------------------------------------------------------------------
# samples and data sets
# ------------------------------------------------------------------------------------------------
@dataclass
class SegSample:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    label: np.ndarray  # uint8 [H, W]: class index per pixel, IGNORE (255) = not scored
    id: str


@dataclass
class VideoClipSample:
    video_id: str
    frames: np.ndarray  # uint8 [F, H, W, 3]
    labels: np.ndarray  # int64 [F, H, W]: class (or instance id) per pixel, 0 = background, 255 ignore
    frame_indices: list[int]  # positions of the frames in the video (its JPEGs in natural order)


class SegDataset:
    """An image segmentation data set: ``ds[i]`` is a :class:`SegSample`; ``ids`` lists the images.

    Images and labels are read lazily, one sample per ``__getitem__``."""

    ignore_index: int = IGNORE

    def __init__(
        self,
        name: str,
        class_names: Sequence[str],
        items: Sequence[Any],
        loader: Callable[[Any], SegSample],
        root: Path | None = None,
        split: str | None = None,
    ):
        self.name = name
        self.class_names = list(class_names)
        self._items = list(items)
        self._load = loader
        self.root = root
        self.split = split

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> SegSample:
        n = len(self._items)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range ({n} images)")
        return self._load(self._items[i])

    def subset(self, fraction: float, seed: int) -> SegDataset:
        """``fraction`` (0 < f <= 1) of the images, drawn at random with ``seed`` (the Hummingbird data
        fractions: e.g. 1/128 of trainaug); floor(f * N) images, at least one, in their original order."""
        f = float(fraction)
        if not (0.0 < f <= 1.0):
            raise MosicError(f"{self.name}: data fraction must be in (0, 1], got {fraction}")
        n = len(self._items)
        k = max(1, min(n, int(f * n + 1e-9)))
        keep = np.sort(np.random.default_rng(_seed_entropy(seed)).permutation(n)[:k])
        return SegDataset(self.name, self.class_names, [self._items[j] for j in keep], self._load, self.root, self.split)

    def select(self, ids: Sequence[str], what: str = "id list") -> SegDataset:
        """The images named by ``ids``, in that order; an id not in this data set is an error
        naming ``what`` (e.g. the list file)."""
        pos = {it.id: j for j, it in enumerate(self._items)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise MosicError(f"{what} names {len(missing)} image(s) that {self.name!r} split {self.split!r} "
                             f"does not have, e.g. {missing[0]!r} (root {self.root})")
        return SegDataset(self.name, self.class_names, [self._items[pos[i]] for i in ids], self._load, self.root,
                          self.split)

    def fingerprint(self) -> str:
        """A short hash of the data set's name, split, classes and image ids (not the pixels)."""
        import hashlib

        h = hashlib.sha256(f"{self.name}\n{self.split}\n{'|'.join(self.class_names)}\n".encode())
        for it in self._items:
            h.update(it.id.encode() + b"\n")
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SegDataset({self.name!r}, split={self.split!r}, {len(self)} images, {self.num_classes} classes)"


@dataclass
class _Video:
    id: str
    num_frames: int
    annotated: list[int]  # frame positions that have an annotation
    frame_paths: list[Path] | None = None
    label_paths: dict[int, Path] | None = None
    lut: np.ndarray | None = None  # int16 [256]: annotation value -> label, -1 = unexpected


class VideoSegDataset:
    """A video segmentation data set: ``ds[i]`` is a clip of video ``i`` (:class:`VideoClipSample`).

    ``num_classes`` is None where labels are per-video instance ids (DAVIS); ``class_names`` then is
    None too."""

    ignore_index: int = IGNORE

    def __init__(
        self,
        name: str,
        num_classes: int | None,
        class_names: Sequence[str] | None,
        videos: Sequence[_Video],
        frames: int = DEFAULT_CLIP_FRAMES,
        seed: int = 0,
        root: Path | None = None,
        split: str | None = None,
    ):
        if int(frames) < 1:
            raise MosicError(f"{name}: frames per clip must be at least 1, got {frames}")
        _seed_entropy(seed)  # validates
        self.name = name
        self.num_classes = num_classes
        self.class_names = None if class_names is None else list(class_names)
        self._videos = list(videos)
        self.frames = int(frames)
        self.seed = int(seed)
        self.root = root
        self.split = split

    @property
    def video_ids(self) -> list[str]:
        return [v.id for v in self._videos]

    def __len__(self) -> int:
        return len(self._videos)

    def fingerprint(self) -> str:
        """A short hash of the data set's name, split, clip settings and each video's id and
        annotated frames (not the pixels)."""
        import hashlib

        h = hashlib.sha256(f"{self.name}\n{self.split}\n{self.num_classes}\n{self.frames}\n{self.seed}\n".encode())
        for v in self._videos:
            h.update(f"{v.id}:{','.join(map(str, v.annotated))}\n".encode())
        return h.hexdigest()[:16]

    def annotated_frames(self, i: int) -> list[int]:
        """Positions of video ``i``'s annotated frames."""
        return list(self._videos[i].annotated)

    def frame_indices(self, i: int) -> list[int]:
        """The frames the clip of video ``i`` uses (see :func:`select_frames`)."""
        v = self._videos[i]
        return select_frames(v.annotated, self.frames, self.seed, v.id)

    def __getitem__(self, i: int) -> VideoClipSample:
        n = len(self._videos)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range ({n} videos)")
        v = self._videos[i]
        idx = select_frames(v.annotated, self.frames, self.seed, v.id)
        frames, labels = self._read(v, idx)
        return VideoClipSample(v.id, frames, labels, idx)

    def _read(self, v: _Video, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        frames = np.stack([decode_jpeg(v.frame_paths[t], v.id, t) for t in idx])
        labels = np.empty(frames.shape[:3], np.int64)
        for k, t in enumerate(idx):
            p = v.label_paths[t]
            raw = _read_label_png(p)
            _check_same_size(frames[k], raw, v.frame_paths[t], p)
            labels[k] = raw if v.lut is None else _apply_lut(v.lut, raw, p, f"video {v.id!r}")
        return frames, labels

    def __repr__(self) -> str:
        return (
            f"VideoSegDataset({self.name!r}, split={self.split!r}, {len(self)} videos, "
            f"num_classes={self.num_classes}, frames={self.frames}, seed={self.seed})"
        )


def select_frames(annotated: Iterable[int], frames: int, seed: int, video_id: str) -> list[int]:
    """``frames`` of the ``annotated`` frame positions, at random without replacement, sorted; all of
    them when there are no more than ``frames``. The draw depends only on ``seed`` and ``video_id``."""
    ann = sorted({int(a) for a in annotated})
    if not ann:
        raise MosicError(f"video {video_id!r} has no annotated frames, so no clip can be drawn from it")
    if int(frames) < 1:
        raise MosicError(f"frames per clip must be at least 1, got {frames}")
    if len(ann) <= frames:
        return ann
    rng = np.random.default_rng(np.random.SeedSequence([_seed_entropy(seed), zlib.crc32(video_id.encode())]))
    pick = rng.choice(len(ann), size=int(frames), replace=False)
    return sorted(ann[j] for j in pick)


def _seed_entropy(seed: int) -> int:
    try:
        s = int(seed)
    except (TypeError, ValueError):
        raise MosicError(f"seed must be an integer, got {seed!r}") from None
    if s < 0:
        raise MosicError(f"seed must be non-negative, got {seed}")
    return s


# ------------------------------------------------------------------------------------------------
# file helpers
# ------------------------------------------------------------------------------------------------
def _read_image(path: Path) -> np.ndarray:
    """A JPEG/PNG image as uint8 [H, W, 3] RGB (EXIF orientation ignored, as the masks are stored)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise MosicError(f"{path}: cannot read image: {e.strerror or e}") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if img is None:
        raise MosicError(f"{path}: not a readable image (empty, corrupt or truncated)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_label_png(path: Path) -> np.ndarray:
    """An annotation PNG as uint8 [H, W] values; it must be a palette (P) or greyscale (L) image."""
    try:
        with Image.open(path) as im:
            if im.mode not in _LABEL_MODES:
                raise MosicError(
                    f"{path}: annotation has image mode {im.mode}; expected a palette (P) or greyscale (L) "
                    "PNG whose pixel values are class indices (a colour-coded RGB mask must be converted "
                    "to indices first)"
                )
            return np.array(im, dtype=np.uint8)
    except MosicError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise MosicError(f"{path}: not a readable annotation PNG: {e}") from None


def _check_same_size(image: np.ndarray, label: np.ndarray, image_path: Any, label_path: Any) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise MosicError(
            f"{label_path}: annotation is {label.shape[1]}x{label.shape[0]} but its image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}"
        )


def _check_class_range(label: np.ndarray, num_classes: int, path: Path, declared: str) -> None:
    bad = (label >= num_classes) & (label != IGNORE)
    if bad.any():
        vals = np.unique(label[bad])
        raise MosicError(
            f"{path}: label values {', '.join(map(str, vals[:8].tolist()))} are not classes: {declared} "
            f"declares {num_classes} classes (0..{num_classes - 1}) and 255 is the only other value allowed"
        )


def _apply_lut(lut: np.ndarray, raw: np.ndarray, path: Any, what: str) -> np.ndarray:
    out = lut[raw]
    if (out < 0).any():
        vals = np.unique(raw[out < 0])
        raise MosicError(
            f"{path}: annotation values {', '.join(map(str, vals[:8].tolist()))} are not objects of {what}"
        )
    return out


def _read_split_list(path: Path, kind: str) -> list[str]:
    """Image/video ids from a split file: the first token of each non-empty line, without folder and
    extension (accepts plain ids and "/JPEGImages/x.jpg /SegmentationClassAug/x.png" lines)."""
    if not path.is_file():
        raise MosicError(f"{kind}: no split list {path}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MosicError(f"{kind}: cannot read split list {path}: {e}") from None
    ids = []
    for line in lines:
        tok = line.strip().split()
        if tok:
            name = tok[0].replace("\\", "/").rsplit("/", 1)[-1]
            stem, ext = os.path.splitext(name)
            ids.append(stem if ext.lower() in (".jpg", ".jpeg", ".png") else name)
    if not ids:
        raise MosicError(f"{kind}: split list {path} is empty")
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise MosicError(f"{kind}: split list {path} names {dup!r} more than once")
    return ids


def _read_classes_txt(path: Path) -> list[str]:
    try:
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise MosicError(f"{path}: cannot read the class list: {e}") from None
    if not names:
        raise MosicError(f"{path}: the class list is empty")
    if len(names) >= IGNORE:
        raise MosicError(f"{path}: lists {len(names)} classes; at most 255 fit next to the ignore value 255")
    if len(set(names)) != len(names):
        dup = next(x for x in names if names.count(x) > 1)
        raise MosicError(f"{path}: class {dup!r} is listed more than once")
    return names


def _list_files(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if e.name.lower().endswith(suffixes) and not e.name.startswith(".") and e.is_file()]
    except OSError:
        return []
    return sorted(names, key=natural_key)


# ------------------------------------------------------------------------------------------------
# Pascal VOC
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _FileItem:
    id: str
    image: Path
    label: Path


def _voc_root(root: Path) -> Path:
    if not root.is_dir():
        raise MosicError(f"voc: data set root {root} does not exist (expected {root}/JPEGImages, SegmentationClass, ImageSets/Segmentation)")
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise MosicError(f"voc: no folder {root / 'JPEGImages'} (expected the VOC2012 folder with JPEGImages, SegmentationClass, ImageSets/Segmentation)")


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


# ------------------------------------------------------------------------------------------------
# ADE20K
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# synthetic (through mosic.data.synthetic.SyntheticSource)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _SynItem:
    id: str
    video: str
    frame: int


class _SyntheticClasses:
    """Class look-up tables of a synthetic split: annotation instance id -> semantic class."""

    def __init__(self, source):
        self.source = source
        self.names = list(source.classes())
        self.classes_file = Path(source.root) / "classes.json"
        if not self.names or len(self.names) >= IGNORE:
            raise MosicError(f"{self.classes_file}: lists {len(self.names)} classes; expected 1..254")
        self._luts: dict[str, np.ndarray] = {}

    def lut(self, video: str) -> np.ndarray:
        if video not in self._luts:
            gt = self.source.ground_truth(video)
            lut = np.full(256, -1, np.int16)
            lut[0] = 0
            lut[IGNORE] = IGNORE
            for oid in gt.object_ids:
                c = int(gt.class_of(oid))
                if not 0 <= c < len(self.names):
                    raise MosicError(
                        f"synthetic: object {oid} of video {video!r} has class {c}, but {self.classes_file} "
                        f"declares {len(self.names)} classes (0..{len(self.names) - 1})"
                    )
                if not 0 < oid < IGNORE:
                    raise MosicError(f"synthetic: video {video!r} has object id {oid}; ids must be 1..254")
                lut[oid] = c
            self._luts[video] = lut
        return self._luts[video]

    def label(self, video: str, frame: int) -> np.ndarray:
        raw = self.source.read_annotation(video, frame)
        path = self.source.annotation_path(video, frame)
        if raw is None:
            raise MosicError(f"synthetic: frame {frame} of video {video!r} has no annotation (expected {self.source.annotations_root / video})")
        return _apply_lut(self.lut(video), raw, path, f"video {video!r} (see its ground truth)")


def _synthetic_source(root: Path, split: str):
    from mosic.data.synthetic import SyntheticSource

    root = Path(root)
    if not root.is_dir():
        raise MosicError(f"synthetic: data set root {root} does not exist (make one with: mosic-data synthetic --out {root} --videos N)")
    if split == "val" and not (root / "val").is_dir() and (root / "valid").is_dir():
        split = "valid"
    src = SyntheticSource(root, split)
    src.videos()  # scans; raises MosicError naming the folder when it is missing or empty
    return src


def _open_synthetic_seg(root: Path, split: str, every: int = SYNTHETIC_EVERY) -> SegDataset:
    if int(every) < 1:
        raise MosicError(f"synthetic: every must be at least 1, got {every}")
    src = _synthetic_source(root, split)
    classes = _SyntheticClasses(src)
    items = []
    for v in src.videos():
        for t in range(0, v.num_frames, int(every)):
            if src.annotation_path(v.video_id, t) is not None:
                items.append(_SynItem(f"{v.video_id}_{src.frame_name(v.video_id, t)}", v.video_id, t))
    if not items:
        raise MosicError(f"synthetic: no annotated frames under {src.annotations_root}")

    def load(it: _SynItem) -> SegSample:
        image = src.read_frames(it.video, [it.frame])[0]
        label = classes.label(it.video, it.frame)
        _check_same_size(image, label, src.frame_path(it.video, it.frame), src.annotation_path(it.video, it.frame))
        return SegSample(image, label.astype(np.uint8), it.id)

    ds = SegDataset("synthetic", classes.names, items, load, Path(root), src.split)
    ds._source, ds._classes = src, classes  # used by export_synthetic_voc
    return ds


# ------------------------------------------------------------------------------------------------
# DAVIS-2017, YouTube-VOS and synthetic videos
# ------------------------------------------------------------------------------------------------
def _scan_video(video: str, frame_dir: Path, ann_dir: Path, kind: str) -> _Video:
    if not frame_dir.is_dir():
        raise MosicError(f"{kind}: no frame folder {frame_dir} for video {video!r}")
    names = list_jpegs(frame_dir)
    if not names:
        raise MosicError(f"{kind}: no JPEG frames in {frame_dir} (video {video!r})")
    pngs = set(_list_files(ann_dir, (".png",)))
    annotated, label_paths = [], {}
    for t, nm in enumerate(names):
        png = os.path.splitext(nm)[0] + ".png"
        if png in pngs:
            annotated.append(t)
            label_paths[t] = ann_dir / png
    if not annotated:
        raise MosicError(f"{kind}: video {video!r} has no annotated frames (no PNG in {ann_dir} matches a frame in {frame_dir})")
    return _Video(video, len(names), annotated, [frame_dir / nm for nm in names], label_paths)


def _open_davis(root: Path, split: str, frames: int, seed: int) -> VideoSegDataset:
    if not root.is_dir():
        raise MosicError(f"davis: data set root {root} does not exist (expected {root}/JPEGImages/480p, Annotations/480p, ImageSets/2017)")
    for d in (root / "JPEGImages" / "480p", root / "Annotations" / "480p"):
        if not d.is_dir():
            raise MosicError(f"davis: no folder {d}")
    ids = _read_split_list(root / "ImageSets" / "2017" / f"{split}.txt", "davis")
    videos = [
        _scan_video(v, root / "JPEGImages" / "480p" / v, root / "Annotations" / "480p" / v, "davis") for v in ids
    ]
    return VideoSegDataset("davis", None, None, videos, frames, seed, root, split)


def _open_ytvos(root: Path, split: str, frames: int, seed: int) -> VideoSegDataset:
    # "heldout": the videos of train that the ytvos training leaves out (mosic.data.holdout)
    heldout = split == "heldout"
    folder = "train" if heldout else split
    if not root.is_dir():
        raise MosicError(f"ytvos: data set root {root} does not exist (expected {root}/{folder}/JPEGImages, Annotations, meta.json)")
    sroot = root / folder
    jroot, aroot, meta_path = sroot / "JPEGImages", sroot / "Annotations", sroot / "meta.json"
    for d in (jroot, aroot):
        if not d.is_dir():
            raise MosicError(f"ytvos: no folder {d}")
    if not meta_path.is_file():
        raise MosicError(f"ytvos: no {meta_path} (it maps each video's object ids to categories)")
    try:
        meta = json.loads(meta_path.read_text())
        vmeta = meta["videos"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MosicError(f"ytvos: {meta_path} is not a YouTube-VOS meta.json ({{'videos': {{...}}}}): {e}") from None
    objects: dict[str, dict[int, str]] = {}
    for vid, entry in vmeta.items():
        objs = {}
        for oid, o in (entry or {}).get("objects", {}).items():
            cat = o.get("category") if isinstance(o, dict) else None
            if not cat:
                raise MosicError(
                    f"ytvos: {meta_path} gives no category for object {oid} of video {vid!r} (the challenge's "
                    "valid/test meta.json hide categories; use a split whose meta.json has them, e.g. train)"
                )
            try:
                oi = int(oid)
            except ValueError:
                raise MosicError(f"ytvos: {meta_path}: object id {oid!r} of video {vid!r} is not a number") from None
            if not 0 < oi < IGNORE:
                raise MosicError(f"ytvos: {meta_path}: object id {oi} of video {vid!r} is outside 1..254")
            objs[oi] = str(cat)
        objects[vid] = objs
    cats = sorted({c for objs in objects.values() for c in objs.values()})
    if not cats:
        raise MosicError(f"ytvos: {meta_path} names no object categories")
    cls = {c: k + 1 for k, c in enumerate(cats)}
    try:
        vids = sorted(e.name for e in os.scandir(jroot) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise MosicError(f"ytvos: cannot list {jroot}: {e}") from None
    if not vids:
        raise MosicError(f"ytvos: no video folders in {jroot}")
    if heldout:
        from mosic.data.holdout import YTVOS_HOLDOUT, split_heldout

        vids = split_heldout(vids, YTVOS_HOLDOUT)[1]
        if not vids:
            raise MosicError(f"ytvos: none of the videos in {jroot} is held out (split 'heldout' keeps "
                             f"{YTVOS_HOLDOUT:.0%} of train's videos, chosen by a hash of the id); use --video-split train")
    videos = []
    for v in vids:
        if v not in objects:
            raise MosicError(f"ytvos: video {v!r} ({jroot / v}) is not in {meta_path}")
        vv = _scan_video(v, jroot / v, aroot / v, "ytvos")
        lut = np.full(256, -1, np.int16)
        lut[0], lut[IGNORE] = 0, IGNORE
        for oi, c in objects[v].items():
            lut[oi] = cls[c]
        vv.lut = lut
        videos.append(vv)
    return VideoSegDataset("ytvos", len(cats) + 1, ["background", *cats], videos, frames, seed, root, split)


class _SyntheticVideoSegDataset(VideoSegDataset):
    def _read(self, v: _Video, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        frames = self._source.read_frames(v.id, idx)
        labels = np.stack([self._classes.label(v.id, t) for t in idx]).astype(np.int64)
        if labels.shape != frames.shape[:3]:
            raise MosicError(
                f"synthetic: annotations of video {v.id!r} are {labels.shape[2]}x{labels.shape[1]}, its frames "
                f"{frames.shape[2]}x{frames.shape[1]} ({self._source.annotations_root / v.id})"
            )
        return frames, labels


def _open_synthetic_video(root: Path, split: str, frames: int, seed: int) -> VideoSegDataset:
    src = _synthetic_source(root, split)
    classes = _SyntheticClasses(src)
    videos = []
    for info in src.videos():
        ann = [t for t in range(info.num_frames) if src.annotation_path(info.video_id, t) is not None]
        if not ann:
            raise MosicError(f"synthetic: video {info.video_id!r} has no annotated frames ({src.annotations_root / info.video_id})")
        videos.append(_Video(info.video_id, info.num_frames, ann))
    ds = _SyntheticVideoSegDataset("synthetic", len(classes.names), classes.names, videos, frames, seed, Path(root), src.split)
    ds._source, ds._classes = src, classes
    return ds


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
SEG_KINDS = ("voc", "ade20k", "synthetic")
VIDEO_KINDS = ("davis", "ytvos", "synthetic")
_ALIASES = {"ade": "ade20k", "pascal-voc": "voc", "youtube-vos": "ytvos", "davis2017": "davis", "davis-2017": "davis"}


def _kind(kind: str, allowed: tuple[str, ...], what: str) -> str:
    k = str(kind).lower()
    k = _ALIASES.get(k, k)
    if k not in allowed:
        raise MosicError(f"unknown {what} data set {kind!r}; choose one of: {', '.join(allowed)}")
    return k


def open_seg_dataset(kind: str, root, split: str, *, every: int = SYNTHETIC_EVERY) -> SegDataset:
    """An image segmentation data set: ``kind`` is voc | ade20k | synthetic (see the module docstring).
    ``every`` (synthetic only) takes every n-th frame of each video."""
    k = _kind(kind, SEG_KINDS, "image segmentation")
    root = Path(root)
    if k == "voc":
        return _open_voc(root, split)
    if k == "ade20k":
        return _open_ade20k(root, split)
    return _open_synthetic_seg(root, split, every)


def open_video_dataset(kind: str, root, split: str, frames: int = DEFAULT_CLIP_FRAMES, seed: int = 0) -> VideoSegDataset:
    """A video segmentation data set: ``kind`` is davis | ytvos | synthetic; clips of ``frames`` random
    sorted annotated frames per video, drawn with ``seed`` (see the module docstring)."""
    k = _kind(kind, VIDEO_KINDS, "video segmentation")
    if int(frames) < 1:
        raise MosicError(f"frames per clip must be at least 1, got {frames}")
    _seed_entropy(seed)
    root = Path(root)
    if k == "davis":
        return _open_davis(root, split, frames, seed)
    if k == "ytvos":
        return _open_ytvos(root, split, frames, seed)
    return _open_synthetic_video(root, split, frames, seed)


# ------------------------------------------------------------------------------------------------
# export: the synthetic set as a VOC-layout semantic segmentation set
# ------------------------------------------------------------------------------------------------
_EXPORT_ENTRIES = ("JPEGImages", "SegmentationClass", "ImageSets", "classes.txt", EXPORT_MARKER)


def _voc_split_name(split: str) -> str:
    return "val" if split == "valid" else split


def _prepare_export_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise MosicError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / EXPORT_MARKER).is_file():
            raise MosicError(f"{out} already holds other data (no {EXPORT_MARKER}); choose an empty or new --out folder")
        for n in _EXPORT_ENTRIES:
            p = out / n
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def export_synthetic_voc(
    synthetic_root,
    out,
    splits: Sequence[str] = ("train", "valid"),
    every: int = SYNTHETIC_EVERY,
    progress: bool = False,
) -> dict[str, int]:
    """Write the synthetic set as a Pascal-VOC-layout semantic segmentation set, so that every image
    protocol runs on it through the plain ``voc`` reader.

    Every ``every``-th frame of each video of each split becomes an image
    ``<out>/JPEGImages/<split>_<video>_<nnnnn>.jpg`` (the frame's JPEG, copied byte for byte; the
    split is part of the name because train and valid reuse the video ids) with
    ``SegmentationClass/<same>.png``: a palette PNG with the VOC colour map whose values are the
    semantic classes (0 = background). ``ImageSets/Segmentation/<split>.txt`` lists each split
    (``valid`` is written as ``val``), ``trainval.txt`` their union, and ``classes.txt`` the class
    names (from the synthetic set's classes.json). ``out`` must be new, empty or an earlier export
    (which is replaced). Returns the number of images per VOC split name."""
    src_root = Path(synthetic_root)
    out = Path(out)
    splits = list(splits)
    if not splits:
        raise MosicError("export: no splits to export")
    names = [_voc_split_name(s) for s in splits]
    if len(set(names)) != len(names):
        raise MosicError(f"export: splits {splits} would be written to the same VOC split names {names}")
    datasets = [_open_synthetic_seg(src_root, s, every) for s in splits]
    classes = datasets[0].class_names
    for ds in datasets[1:]:
        if ds.class_names != classes:  # pragma: no cover - one classes.json per set
            raise MosicError(f"export: splits of {src_root} disagree on the class list")
    _prepare_export_dir(out)
    (out / EXPORT_MARKER).write_text(json.dumps({"format": EXPORT_FORMAT, "complete": False}) + "\n")
    jdir, sdir, ldir = out / "JPEGImages", out / "SegmentationClass", out / "ImageSets" / "Segmentation"
    for d in (jdir, sdir, ldir):
        d.mkdir(parents=True, exist_ok=True)
    palette = voc_colormap().ravel().tolist()
    counts: dict[str, int] = {}
    all_ids: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(d) for d in datasets), unit="image", desc="voc export", dynamic_ncols=True)
    try:
        for split, vname, ds in zip(splits, names, datasets):
            src, cl = ds._source, ds._classes
            ids = []
            for it in ds._items:
                img_id = f"{split}_{it.id}"
                label = cl.label(it.video, it.frame)  # checks the classes against classes.json
                shutil.copyfile(src.frame_path(it.video, it.frame), jdir / f"{img_id}.jpg")
                im = Image.fromarray(label.astype(np.uint8), mode="P")
                im.putpalette(palette)
                im.save(sdir / f"{img_id}.png", compress_level=1)
                ids.append(img_id)
                if bar is not None:
                    bar.update(1)
            (ldir / f"{vname}.txt").write_text("".join(f"{i}\n" for i in ids))
            counts[vname] = len(ids)
            all_ids += ids
    finally:
        if bar is not None:
            bar.close()
    if "trainval" not in counts and len(names) > 1:
        (ldir / "trainval.txt").write_text("".join(f"{i}\n" for i in all_ids))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    marker = {
        "format": EXPORT_FORMAT,
        "complete": True,
        "source": str(src_root.resolve()),
        "splits": dict(zip(splits, names)),
        "every": int(every),
        "images": counts,
        "classes": len(classes),
    }
    (out / EXPORT_MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
    return counts
