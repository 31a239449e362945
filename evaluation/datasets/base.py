"""What every evaluation data set shares: samples, the image and video data set classes, the
clip frame draw and the file readers that check what they read (see the package docstring)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from mosic import MosicError
from mosic.data.sources import decode_jpeg, list_jpegs, natural_key

IGNORE = 255

#: default frames per clip and frame step of the synthetic image set / export
DEFAULT_CLIP_FRAMES = 4
SYNTHETIC_EVERY = 4

_LABEL_MODES = ("P", "L")


def _index(i: int, n: int, name: str, what: str) -> int:
    """``i`` as a position among ``n`` items (negative counts from the end), or an IndexError naming
    the data set."""
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"{name}: index {i} out of range ({n} {what})")
    return i


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
        return self._load(self._items[_index(i, len(self._items), self.name, "images")])

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
        i = _index(i, len(self._videos), self.name, "videos")
        v, idx = self._videos[i], self.frame_indices(i)
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


@dataclass(frozen=True)
class _FileItem:
    id: str
    image: Path
    label: Path


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
