"""``oracle``: the exact ground-truth tracks of the synthetic data set.

It does not look at pixels (``uses_frames = False``): for every clip it asks the data set's
``ground_truth(video_id)`` for the tracks of the queries from the clip's first frame through the
clip's frames. It is the upper bound the other trackers are scored against, and a way to exercise
the rest of the pipeline with perfect tracks.

Because it ignores the frames, ``Tracker.run`` never resizes for it, and queries and tracks are in
the pixels of the clip as stored (``ClipRef.width`` x ``ClipRef.height``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mosic import MosicError
from mosic.precompute.trackers.base import TRACKERS, Tracker, TrackResult

if TYPE_CHECKING:
    from mosic.config import TrackerSettings
    from mosic.data.base import ClipRef, FrameSource

ALGORITHM_REVISION = "oracle-1"

_NEEDS_SYNTHETIC = (
    "the oracle tracker needs the synthetic data set (--dataset synthetic), whose videos come "
    "with exact ground-truth tracks; {what}"
)


class OracleTracker(Tracker):
    name = "oracle"
    uses_frames = False

    def __init__(self, source: "FrameSource | None", batch_size: int = 8):
        super().__init__(batch_size=batch_size)
        if source is None or not callable(getattr(source, "ground_truth", None)):
            what = "no data set was given" if source is None else (
                f"the data set {getattr(source, 'kind', type(source).__name__)!r} has no ground truth"
            )
            raise MosicError(_NEEDS_SYNTHETIC.format(what=what))
        self.source = source

    @property
    def version(self) -> str:
        gen = None
        spec = getattr(self.source, "spec", None)
        if callable(spec):
            try:
                gen = (spec() or {}).get("generator")
            except MosicError:
                gen = None
        return ALGORITHM_REVISION + (f"+{gen}" if gen else "")

    def params(self) -> dict[str, Any]:
        return {}

    def track(self, frames: np.ndarray, queries: np.ndarray, clips: Sequence["ClipRef"] | None = None) -> TrackResult:
        if clips is None:
            raise MosicError(
                "the oracle tracker needs to know which clips it is tracking (clips=None): it reads "
                "the ground truth by video id and frame index, not from the pixels"
            )
        B = frames.shape[0] if frames is not None and np.ndim(frames) >= 1 else len(clips)
        if len(clips) != B:
            raise ValueError(f"{len(clips)} clips for a batch of {B}")
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, 2)
        N = len(queries)
        T = len(clips[0].frames) if clips else 0
        tracks = np.empty((B, T, N, 2), dtype=np.float32)
        vis = np.empty((B, T, N), dtype=bool)
        for b, clip in enumerate(clips):
            if len(clip.frames) != T:
                raise ValueError(
                    f"clips of one batch must have the same length: {len(clip.frames)} != {T}"
                )
            gt = self.source.ground_truth(clip.video_id)  # the source caches it
            if (gt.width, gt.height) != (clip.width, clip.height):
                raise MosicError(
                    f"video {clip.video_id!r}: ground truth is for {gt.width} x {gt.height} frames "
                    f"but the clip was planned at {clip.width} x {clip.height} (data set changed?)"
                )
            tr, vi = gt.track(clip.frames[0], queries, list(clip.frames))
            tracks[b] = tr
            vis[b] = vi
        # the ground truth is certain: no confidence
        return TrackResult(tracks, vis)


@TRACKERS.register("oracle")
def _make_oracle(settings: "TrackerSettings", source: "FrameSource | None" = None) -> OracleTracker:
    return OracleTracker(source, batch_size=settings.batch_size)
