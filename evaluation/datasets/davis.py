"""DAVIS-2017 (``davis``): see the package docstring for the layout."""

from __future__ import annotations

from pathlib import Path

from mosic import MosicError
from mosic.evaluation.datasets.base import VideoSegDataset, _read_split_list, _scan_video

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
