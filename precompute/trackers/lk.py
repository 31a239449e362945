"""``lk``: a weights-free pyramidal Lucas–Kanade tracker (OpenCV) with a forward–backward check.

Every point is tracked from frame to frame through the clip (t-1 -> t), vectorised over all points
of a frame pair. After each forward step the new positions are tracked back to frame t-1; the
distance between that back-tracked position and the point's position on frame t-1 is the
forward–backward (FB) error.

Visibility policy: a point is visible on frame 0 when its query lies inside the image. It is *lost*
on the first frame t where OpenCV reports failure (status 0), the FB error exceeds
``fb_threshold`` pixels, the result is not finite, or the new position leaves the image
(x outside [0, W) or y outside [0, H), pixel-centre convention). A lost point stays invisible for
the rest of the clip (LK has no way to re-detect it) and keeps the last position at which it was
visible. Confidence is ``exp(-(fb / fb_threshold)^2)`` on frames where the point is visible (1 on
frame 0) and 0 once it is lost.

OpenCV's coordinates put the centre of pixel (0, 0) at (0.0, 0.0); ours put it at (0.5, 0.5)
(see ``mosic.precompute.trackers.base``): positions are shifted by 0.5 on the way in and out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np

from mosic.precompute.trackers.base import TRACKERS, Tracker, TrackResult, check_frames

if TYPE_CHECKING:
    from mosic.config import TrackerSettings
    from mosic.data.base import ClipRef, FrameSource

#: bump when the algorithm's output changes (the store spec records it)
ALGORITHM_REVISION = "lk-fb-1"


def to_cv(points: np.ndarray) -> np.ndarray:
    """Our pixel-centre (x, y) -> OpenCV's pixel-index coordinates (centre of pixel 0 at 0.0)."""
    return (np.asarray(points, dtype=np.float32) - np.float32(0.5)).astype(np.float32)


def from_cv(points: np.ndarray) -> np.ndarray:
    """OpenCV's pixel-index coordinates -> our pixel-centre (x, y)."""
    return (np.asarray(points, dtype=np.float32) + np.float32(0.5)).astype(np.float32)


def inside_image(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """bool [...]: (x, y) in our convention lies in [0, W) x [0, H) and is finite."""
    x, y = points[..., 0], points[..., 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x < width) & (y >= 0) & (y < height)


class LKTracker(Tracker):
    """Defaults (15 x 15 window, 4 pyramid levels, at most 10 iterations or a 0.03 px step, FB check
    at 1 px) were chosen on the synthetic set at 320 x 240: faster than OpenCV's defaults (21 x 21,
    30 iterations, 0.01) and no less accurate there."""

    name = "lk"
    uses_frames = True

    def __init__(
        self,
        batch_size: int = 8,
        win_size: int = 15,
        max_level: int = 3,
        fb_threshold: float = 1.0,
        max_iterations: int = 10,
        epsilon: float = 0.03,
        min_eig_threshold: float = 1e-4,
    ):
        super().__init__(batch_size=batch_size)
        if win_size < 3:
            raise ValueError(f"win_size must be at least 3, got {win_size}")
        if max_level < 0:
            raise ValueError(f"max_level must be >= 0, got {max_level}")
        if fb_threshold <= 0:
            raise ValueError(f"fb_threshold must be positive, got {fb_threshold}")
        self.win_size = int(win_size)
        self.max_level = int(max_level)
        self.fb_threshold = float(fb_threshold)
        self.max_iterations = int(max_iterations)
        self.epsilon = float(epsilon)
        self.min_eig_threshold = float(min_eig_threshold)

    @property
    def version(self) -> str:
        return f"{ALGORITHM_REVISION}+opencv-{cv2.__version__}"

    def params(self) -> dict[str, Any]:
        return {
            "win_size": self.win_size,
            "max_level": self.max_level,
            "fb_threshold": self.fb_threshold,
            "max_iterations": self.max_iterations,
            "epsilon": self.epsilon,
            "min_eig_threshold": self.min_eig_threshold,
            "color": "gray(rgb)",
            "lost_points": "invisible for the rest of the clip, last visible position kept",
        }

    # -- tracking ------------------------------------------------------------------------------
    def _lk_kwargs(self) -> dict[str, Any]:
        return dict(
            winSize=(self.win_size, self.win_size),
            maxLevel=self.max_level,
            criteria=(
                cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS,
                self.max_iterations,
                self.epsilon,
            ),
            minEigThreshold=self.min_eig_threshold,
        )

    @staticmethod
    def _gray(frame: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)

    def track_clip(self, frames: np.ndarray, queries: np.ndarray):
        """One clip: frames uint8 [T, H, W, 3] RGB, queries [N, 2] -> (tracks [T, N, 2] float32,
        visibility bool [T, N], confidence float32 [T, N])."""
        T, H, W, _ = frames.shape
        N = len(queries)
        tracks = np.empty((T, N, 2), dtype=np.float32)
        vis = np.zeros((T, N), dtype=bool)
        conf = np.zeros((T, N), dtype=np.float32)
        pos = np.asarray(queries, dtype=np.float32).reshape(N, 2).copy()  # our convention
        alive = inside_image(pos, W, H)
        tracks[0] = pos
        vis[0] = alive
        conf[0] = alive
        if T == 1 or N == 0:
            tracks[1:] = pos
            return tracks, vis, conf

        kw = self._lk_kwargs()
        # (OpenCV's Python binding does not take prebuilt pyramids, so each call builds its own)
        prev_img = self._gray(frames[0])
        for t in range(1, T):
            next_img = self._gray(frames[t])
            idx = np.flatnonzero(alive)
            if idx.size:
                p0 = to_cv(pos[idx]).reshape(-1, 1, 2)
                p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev_img, next_img, p0, None, **kw)
                p0b, st0, _ = cv2.calcOpticalFlowPyrLK(next_img, prev_img, p1, None, **kw)
                p1 = p1.reshape(-1, 2)
                fb = np.linalg.norm(p0b.reshape(-1, 2) - p0.reshape(-1, 2), axis=1)
                new = from_cv(p1)
                with np.errstate(invalid="ignore"):
                    ok = (
                        (st1.reshape(-1) == 1)
                        & (st0.reshape(-1) == 1)
                        & np.isfinite(fb)
                        & (fb <= self.fb_threshold)
                        & inside_image(new, W, H)
                    )
                good = idx[ok]
                pos[good] = new[ok]
                conf[t, good] = np.exp(-np.square(fb[ok] / self.fb_threshold))
                alive[idx[~ok]] = False
            tracks[t] = pos
            vis[t] = alive
            prev_img = next_img
        return tracks, vis, conf

    def track(self, frames: np.ndarray, queries: np.ndarray, clips: Sequence["ClipRef"] | None = None) -> TrackResult:
        check_frames(frames)
        B, T = frames.shape[:2]
        N = len(queries)
        tracks = np.empty((B, T, N, 2), dtype=np.float32)
        vis = np.empty((B, T, N), dtype=bool)
        conf = np.empty((B, T, N), dtype=np.float32)
        for b in range(B):
            tracks[b], vis[b], conf[b] = self.track_clip(frames[b], queries)
        return TrackResult(tracks, vis, conf)


@TRACKERS.register("lk")
def _make_lk(settings: "TrackerSettings", source: "FrameSource | None" = None) -> LKTracker:
    return LKTracker(batch_size=settings.batch_size)
