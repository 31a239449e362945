"""Exact ground truth: every layer's per-frame affine gives exact tracks and visibility of any point."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mosic import MosicError
from mosic.data.synthetic.drawing import shape_sdf
from mosic.data.synthetic.motion import apply_affine, invert_affines

GENERATOR = "mosic.synthetic/1"
GT_FORMAT = "mosic-synthetic-gt/1"


@dataclass
class _GTLayer:
    id: int
    class_index: int
    z: int
    shape: str
    radius: float
    centre: np.ndarray
    A: np.ndarray  # [T, 2, 3]
    Ainv: np.ndarray  # [T, 2, 3]


class SyntheticGroundTruth:
    """Exact tracks, visibility and layer membership for one synthetic video."""

    def __init__(self, video_id: str, num_frames: int, width: int, height: int, layers: list[_GTLayer]):
        self.video_id = video_id
        self.num_frames = num_frames
        self.width = width
        self.height = height
        self._layers = {L.id: L for L in layers}
        self._objects_top_down = sorted((L for L in layers if L.shape != "plane"), key=lambda L: -L.z)

    @classmethod
    def from_json(cls, d: dict) -> "SyntheticGroundTruth":
        T = int(d["num_frames"])
        layers = []
        for L in d["layers"]:
            A = np.asarray(L["affines"], dtype=np.float64).reshape(-1, 2, 3)
            if len(A) != T:
                raise MosicError(f"ground truth of {d['video_id']!r}: layer {L['id']} has {len(A)} affines for {T} frames")
            layers.append(_GTLayer(int(L["id"]), int(L["class_index"]), int(L["z"]), L["shape"], float(L["radius"]),
                                   np.asarray(L["centre"], np.float64), A, invert_affines(A)))
        return cls(d["video_id"], T, int(d["width"]), int(d["height"]), layers)

    # -- queries -------------------------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        return sorted(i for i in self._layers if i != 0)

    def class_of(self, layer_id: int) -> int:
        """The semantic class index (into CLASSES) of layer ``layer_id`` (0 = background)."""
        return self._layers[layer_id].class_index

    def affine(self, layer_id: int, frame: int) -> np.ndarray:
        """float64 [2, 3]: layer-local -> image at ``frame``."""
        return self._layers[layer_id].A[self._check_frame(frame)].copy()

    def _check_frame(self, frame: int) -> int:
        f = int(frame)
        if not 0 <= f < self.num_frames:
            raise MosicError(f"video {self.video_id!r}: frame {f} out of range (0..{self.num_frames - 1})")
        return f

    def layer_at(self, frame: int, points: np.ndarray) -> np.ndarray:
        """int64 [N]: the topmost layer at each (x, y) point on ``frame`` (0 = background)."""
        f = self._check_frame(frame)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out = np.zeros(len(pts), np.int64)
        free = np.ones(len(pts), bool)
        for L in self._objects_top_down:
            loc = apply_affine(L.Ainv[f], pts)
            inside = shape_sdf(L.shape, L.radius, loc - L.centre) <= 0
            out[free & inside] = L.id
            free &= ~inside
            if not free.any():
                break
        return out

    def track(self, query_frame: int, points: np.ndarray, frames: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """points float [N, 2] (x, y) on ``query_frame`` -> (tracks float32 [F, N, 2],
        visibility bool [F, N]) on ``frames``. A point moves with the topmost layer at its query
        position; it is visible where it is inside the image and that layer is topmost there."""
        q = self._check_frame(query_frame)
        fr = np.asarray([self._check_frame(f) for f in frames], dtype=np.int64)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        N, F = len(pts), len(fr)
        own = self.layer_at(q, pts)
        tracks = np.zeros((F, N, 2), np.float64)
        for lid in np.unique(own):
            sel = own == lid
            L = self._layers[int(lid)]
            loc = apply_affine(L.Ainv[q], pts[sel])
            A = L.A[fr]
            tracks[:, sel] = np.einsum("fij,nj->fni", A[:, :, :2], loc) + A[:, None, :, 2]
        vis = np.zeros((F, N), bool)
        for k, f in enumerate(fr):
            p = tracks[k]
            inb = (p[:, 0] >= 0) & (p[:, 0] < self.width) & (p[:, 1] >= 0) & (p[:, 1] < self.height)
            vis[k] = inb & (self.layer_at(int(f), p) == own)
        return tracks.astype(np.float32), vis


def _split_dir(root: Path | str, split: str) -> Path:
    return Path(root) / split


def load_ground_truth(root: Path | str, video_id: str, split: str = "train") -> SyntheticGroundTruth:
    p = _split_dir(root, split) / "GroundTruth" / f"{video_id}.json"
    if not p.is_file():
        raise MosicError(f"no synthetic ground truth for video {video_id!r}: expected {p}")
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise MosicError(f"{p}: not readable JSON: {e}") from None
    if d.get("format") != GT_FORMAT:
        raise MosicError(f"{p}: unknown ground-truth format {d.get('format')!r} (expected {GT_FORMAT!r})")
    return SyntheticGroundTruth.from_json(d)


def load_classes(root: Path | str) -> list[str]:
    p = Path(root) / "classes.json"
    if not p.is_file():
        raise MosicError(f"no class list: expected {p}")
    return list(json.loads(p.read_text()))
