"""The tracker interface and the tracker registry (the query grid: :mod:`mosic.data.grid`).

Coordinates everywhere are (x, y) in pixels of the source frame, x along the width, with the
pixel-centre convention: pixel (col, row) covers [col, col + 1) x [row, row + 1) and its centre is
(col + 0.5, row + 0.5).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import cv2
import numpy as np

from mosic.registry import Registry

if TYPE_CHECKING:
    from mosic.config import TrackerSettings
    from mosic.data.base import ClipRef, FrameSource


@dataclass
class TrackResult:
    tracks: np.ndarray  # float32 [B, T, N, 2], (x, y) pixels of the frames given to ``run``
    visibility: np.ndarray  # bool [B, T, N]
    confidence: np.ndarray | None = None  # float32 [B, T, N] in [0, 1], where the tracker has one

    def check(self, B: int, T: int, N: int) -> "TrackResult":
        if self.tracks.shape != (B, T, N, 2):
            raise RuntimeError(f"tracker returned tracks {self.tracks.shape}, expected {(B, T, N, 2)}")
        if self.visibility.shape != (B, T, N):
            raise RuntimeError(f"tracker returned visibility {self.visibility.shape}, expected {(B, T, N)}")
        self.tracks = np.ascontiguousarray(self.tracks, dtype=np.float32)
        self.visibility = np.ascontiguousarray(self.visibility, dtype=bool)
        if self.confidence is not None:
            self.confidence = np.ascontiguousarray(self.confidence, dtype=np.float32)
        return self


class Tracker(ABC):
    """Tracks query points given on the first frame of each clip through the clip."""

    name: ClassVar[str]
    #: False for trackers that do not look at pixels (the synthetic ground truth)
    uses_frames: ClassVar[bool] = True

    def __init__(self, batch_size: int = 8):
        self.batch_size = batch_size

    @property
    @abstractmethod
    def version(self) -> str:
        """Identifies the implementation (library versions, algorithm revision)."""

    def checkpoint_hash(self) -> str | None:
        """sha256 of the weights file, for trackers with weights."""
        return None

    def params(self) -> dict[str, Any]:
        """Settings that change the output, recorded in the store's spec."""
        return {}

    @abstractmethod
    def track(self, frames: np.ndarray, queries: np.ndarray, clips: Sequence["ClipRef"] | None = None) -> TrackResult:
        """frames uint8 [B, T, H, W, 3] RGB; queries float32 [N, 2] (x, y) on frame 0 of every clip.
        Returns tracks in the pixel coordinates of ``frames``."""

    def run(
        self,
        frames: np.ndarray,
        queries: np.ndarray,
        clips: Sequence["ClipRef"] | None = None,
        track_size: tuple[int, int] | None = None,
    ) -> TrackResult:
        """``track`` with the frames resized to ``track_size`` (width, height) first, and the
        queries and tracks mapped to and from that size; output in ``frames``' pixels."""
        B, T, H, W, _ = frames.shape
        N = len(queries)
        if track_size is None or not self.uses_frames or tuple(track_size) == (W, H):
            return self.track(frames, queries, clips).check(B, T, N)
        tw, th = track_size
        small = np.stack(
            [
                np.stack([cv2.resize(f, (tw, th), interpolation=cv2.INTER_AREA) for f in clip])
                for clip in frames
            ]
        )
        scale = np.array([tw / W, th / H], dtype=np.float32)
        res = self.track(small, (queries * scale).astype(np.float32), clips).check(B, T, N)
        res.tracks = (res.tracks / scale).astype(np.float32)
        return res


def check_frames(frames: np.ndarray) -> np.ndarray:
    """``frames`` when they are uint8 [B, T, H, W, 3] RGB clips, else a ValueError saying what they are."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [B, T, H, W, 3], got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


TRACKERS: Registry[Tracker] = Registry("tracker", entry_point_group="mosic.trackers")


def create_tracker(settings: "TrackerSettings", source: "FrameSource | None" = None) -> Tracker:
    """Build the tracker named in ``settings``. ``source`` is given to trackers that need it
    (the synthetic ground truth)."""
    return TRACKERS.get(settings.name)(settings, source)
