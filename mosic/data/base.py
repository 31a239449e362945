"""The frame-source interface, clip planning and the source registry."""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from mosic import MosicError
from mosic.config import ClipSettings
from mosic.registry import Registry

log = logging.getLogger("mosic.data")


class FrameReadError(MosicError):
    """A frame or video could not be read (corrupt, truncated, missing)."""

    def __init__(self, video_id: str, message: str, frame: int | None = None):
        self.video_id = video_id
        self.frame = frame
        where = f"video {video_id!r}" + (f", frame {frame}" if frame is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class VideoInfo:
    """A video: ``num_frames`` frames (indices 0 .. num_frames - 1) of ``width`` x ``height``.

    ``frame_numbers`` are the RAW frame numbers of those frames in the original video, where a
    data set stores only some of them (YouTube-VOS ``train`` holds every 5th raw frame: files
    00000, 00005, ...; ``train_all_frames`` holds them all). None: frame i is raw frame i."""

    video_id: str
    num_frames: int
    width: int
    height: int
    frame_numbers: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    def raw_numbers(self) -> np.ndarray:
        """int64 [num_frames]: the raw frame number of every frame index."""
        if self.frame_numbers is None:
            return np.arange(self.num_frames, dtype=np.int64)
        return np.asarray(self.frame_numbers, dtype=np.int64)


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


def clip_starts(first: int, last: int, span: int, clips: ClipSettings) -> list[int]:
    """Raw frame numbers where a video's clips start, for a video whose frames run from raw frame
    ``first`` to ``last`` and clips that cover ``span`` raw frames: every ``clips.stride`` raw
    frames from ``first``, or ``clips.clips_per_video`` starts spread evenly (one: at ``first``)."""
    end = last - span + 1  # the last possible start
    if end < first:
        return []
    if clips.stride is not None:
        return list(range(first, end + 1, clips.stride))
    if clips.clips_per_video == 1:
        return [first]
    starts = np.linspace(first, end, clips.clips_per_video).round().astype(int)
    return sorted(set(int(s) for s in starts))


def nearest_frames(numbers: np.ndarray, wanted: Sequence[int]) -> np.ndarray:
    """Frame indices whose raw numbers (``numbers``, increasing) are nearest to the raw frame
    numbers ``wanted`` (ties: the earlier frame)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    w = np.asarray(wanted, dtype=np.int64)
    hi = np.clip(np.searchsorted(numbers, w), 1, len(numbers) - 1) if len(numbers) > 1 else np.zeros_like(w)
    if len(numbers) == 1:
        return hi
    lo = hi - 1
    return np.where(np.abs(numbers[hi] - w) < np.abs(w - numbers[lo]), hi, lo)


def plan_clips(
    videos: Sequence[VideoInfo], clips: ClipSettings
) -> tuple[list[ClipRef], list[PlanFailure]]:
    """Cut every video into clips; videos too short for one clip are returned as failures.

    Steps, strides and lengths count RAW frames (see :class:`VideoInfo`), so ``step: 6`` means
    the same on a data set with every raw frame and on one that keeps every 5th: a clip wants raw
    frames ``start, start + step, ...`` and takes the nearest frames that exist (on a subsampled
    set the spacing is then uneven and coarser than asked; a warning says so once). A video
    shorter than one clip (in raw frames) uses step = its raw length // T with ``short_videos:
    adapt`` (the official recipe), or is a failure."""
    out: list[ClipRef] = []
    failures: list[PlanFailure] = []
    T = clips.length
    coarse = []
    for v in videos:
        numbers = v.raw_numbers()
        if len(numbers) and np.any(np.diff(numbers) <= 0):
            raise MosicError(f"video {v.video_id!r}: raw frame numbers are not increasing")
        first, last = (int(numbers[0]), int(numbers[-1])) if len(numbers) else (0, -1)
        length = last - first + 1
        step = clips.step
        if (T - 1) * step + 1 > length:
            if clips.short_videos == "adapt" and length >= T and v.num_frames >= T:
                step = max(1, length // T)
            else:
                failures.append(
                    PlanFailure(
                        v.video_id,
                        f"too short: {length} raw frames ({v.num_frames} stored), a clip needs "
                        f"{(T - 1) * step + 1} ({T} frames every {step})"
                        + (" and short_videos='skip'" if length >= T and v.num_frames >= T else ""),
                    )
                )
                continue
        span = (T - 1) * step + 1
        gap = int(np.median(np.diff(numbers))) if len(numbers) > 1 else 1
        if gap > 1:
            coarse.append((v.video_id, gap))
        seen = set()
        for s in clip_starts(first, last, span, clips):
            idx = tuple(int(i) for i in nearest_frames(numbers, range(s, s + span, step)))
            if len(set(idx)) < T:
                failures.append(PlanFailure(
                    v.video_id, f"step {step} is finer than the frames on disk (every {gap} raw frames): "
                    f"a clip of {T} frames from raw frame {s} would repeat frames"))
                break
            if idx not in seen:  # starts closer than the stored spacing round to the same clip
                seen.add(idx)
                out.append(ClipRef(v.video_id, idx, v.width, v.height))
    if coarse:
        log.warning(
            "%d of %d videos store only every %d-th raw frame (e.g. %s; YouTube-VOS 'train' is 6 fps): clips "
            "take the nearest stored frames, so their spacing is coarser than the paper's every %d-th frame "
            "of the 30 fps frames ('train_all_frames')", len(coarse), len(videos), coarse[0][1], coarse[0][0],
            clips.step)
    return out, failures
