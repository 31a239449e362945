"""The built-in synthetic set as image and video segmentation data sets (``synthetic``, through
``mosic.data.synthetic.SyntheticSource``), and its export as a VOC-layout set."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mosic import MosicError
from mosic.data.sources import voc_colormap
from mosic.evaluation.datasets.base import (
    IGNORE, SYNTHETIC_EVERY, SegDataset, SegSample, VideoSegDataset, _Video, _apply_lut,
    _check_same_size,
)

EXPORT_MARKER = "mosic_export.json"
EXPORT_FORMAT = "mosic-voc-export/1"


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
