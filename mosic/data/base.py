"""The frame-source interface, clip planning and the source registry."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from mosic import MosicError
from mosic.config import ClipSettings
from mosic.registry import Registry


class FrameReadError(MosicError):
    """A frame or video could not be read (corrupt, truncated, missing)."""

    def __init__(self, video_id: str, message: str, frame: int | None = None):
        self.video_id = video_id
        self.frame = frame
        where = f"video {video_id!r}" + (f", frame {frame}" if frame is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class VideoInfo:
    video_id: str
    num_frames: int
    width: int
    height: int


@dataclass(frozen=True)
class ClipRef:
    """One clip: which frames of which video. Sizes are those of the stored frames."""

    video_id: str
    frames: tuple[int, ...]
    width: int
    height: int


@dataclass(frozen=True)
class PlanFailure:
    video_id: str
    reason: str


class FrameSource(ABC):
    """A data set of videos whose frames can be read by index.

    Frames are returned as uint8 arrays [T, H, W, 3] in RGB order.
    """

    kind: ClassVar[str]

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        self.split = split
        self._videos: list[VideoInfo] | None = None

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def _scan(self) -> list[VideoInfo]:
        """List the videos (any order); raise MosicError when the root is missing or empty."""

    @abstractmethod
    def read_frames(self, video_id: str, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` of ``video_id`` as uint8 [len(indices), H, W, 3] RGB.

        Raises FrameReadError naming the video and frame on any unreadable input."""

    # -- shared -------------------------------------------------------------------------------
    def videos(self) -> list[VideoInfo]:
        if self._videos is None:
            vids = sorted(self._scan(), key=lambda v: v.video_id)
            if not vids:
                raise MosicError(f"{self.kind}: no videos found under {self.root} (split {self.split!r})")
            self._videos = vids
        return self._videos

    def video(self, video_id: str) -> VideoInfo:
        for v in self.videos():
            if v.video_id == video_id:
                return v
        raise MosicError(f"{self.kind}: no video {video_id!r} under {self.root}")

    def fingerprint(self) -> str:
        """A hash of what the data set holds: video ids, frame counts and frame sizes."""
        h = hashlib.sha256(f"{self.kind}\n{self.split}\n".encode())
        for v in self.videos():
            h.update(f"{v.video_id}\t{v.num_frames}\t{v.width}\t{v.height}\n".encode())
        return h.hexdigest()[:16]

    def read_frames_reduced(
        self, video_id: str, indices: Sequence[int], max_factor: float = 1.0
    ) -> tuple[np.ndarray, int]:
        """(frames, s): frames ``indices`` reduced by an integer factor ``1 <= s <= max_factor``
        (source pixel coordinates / s = the frames' coordinates; size ceil(W / s) x ceil(H / s)).
        A source that cannot decode at reduced size returns its full frames and s = 1."""
        return self.read_frames(video_id, indices), 1

    def read_clip(self, clip: ClipRef) -> np.ndarray:
        frames = self.read_frames(clip.video_id, clip.frames)
        expected = (len(clip.frames), clip.height, clip.width, 3)
        if frames.shape != expected or frames.dtype != np.uint8:
            raise FrameReadError(
                clip.video_id,
                f"frames have shape {frames.shape} {frames.dtype}, expected {expected} uint8 "
                "(the frames on disk changed since the clip was planned?)",
            )
        return frames

    def describe(self) -> dict:
        return {"kind": self.kind, "split": self.split}


SOURCES: Registry[FrameSource] = Registry("frame source", entry_point_group="mosic.sources")


def create_source(kind: str, root: str | Path, split: str = "train") -> FrameSource:
    return SOURCES.create(kind, root, split=split)


def clip_starts(num_frames: int, span: int, clips: ClipSettings) -> list[int]:
    """First-frame indices of a video's clips, each covering ``span`` frames."""
    last = num_frames - span
    if last < 0:
        return []
    if clips.stride is not None:
        return list(range(0, last + 1, clips.stride))
    if clips.clips_per_video == 1:
        return [0]
    starts = np.linspace(0, last, clips.clips_per_video).round().astype(int)
    return sorted(set(int(s) for s in starts))


def plan_clips(
    videos: Sequence[VideoInfo], clips: ClipSettings
) -> tuple[list[ClipRef], list[PlanFailure]]:
    """Cut every video into clips; videos too short for one clip are returned as failures."""
    out: list[ClipRef] = []
    failures: list[PlanFailure] = []
    T = clips.length
    for v in videos:
        step = clips.step
        if (T - 1) * step + 1 > v.num_frames:
            if clips.short_videos == "adapt" and v.num_frames >= T:
                step = max(1, v.num_frames // T)
            else:
                failures.append(
                    PlanFailure(
                        v.video_id,
                        f"too short: {v.num_frames} frames, a clip needs {(T - 1) * step + 1} "
                        f"({T} frames every {step})"
                        + (" and short_videos='skip'" if v.num_frames >= T else ""),
                    )
                )
                continue
        span = (T - 1) * step + 1
        for s in clip_starts(v.num_frames, span, clips):
            out.append(
                ClipRef(v.video_id, tuple(range(s, s + span, step)), v.width, v.height)
            )
    return out, failures
