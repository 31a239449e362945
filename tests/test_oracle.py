from dataclasses import dataclass

import numpy as np
import pytest

from mosic import MosicError
from mosic.config import TrackerSettings
from mosic.data.base import ClipRef
from mosic.data.grid import grid_queries
from mosic.precompute.trackers.base import TRACKERS
from mosic.precompute.trackers.oracle import OracleTracker

W, H = 80, 48


@dataclass
class FakeGroundTruth:
    """Points move by (video_speed * frame, -0.5 * frame); a point is occluded on frames where
    int(x) is a multiple of 7 (so visibility depends on the point and the frame)."""

    video_id: str
    num_frames: int
    width: int
    height: int
    speed: float

    def position(self, points, frame):
        return points + np.array([self.speed * frame, -0.5 * frame], dtype=np.float32)

    def track(self, query_frame, points, frames):
        base = points - np.array([self.speed * query_frame, -0.5 * query_frame], dtype=np.float32)
        tracks = np.stack([self.position(base, f) for f in frames]).astype(np.float32)
        vis = (tracks[..., 0].astype(int) % 7) != 0
        return tracks, vis


class FakeSource:
    kind = "fake-synthetic"

    def __init__(self):
        self.calls = []
        self.gts = {
            "a": FakeGroundTruth("a", 40, W, H, 1.5),
            "b": FakeGroundTruth("b", 40, W, H, -2.0),
        }

    def ground_truth(self, video_id):
        self.calls.append(video_id)
        return self.gts[video_id]


class NoGroundTruth:
    kind = "ytvos"


def clip(vid, start, n=4, step=3):
    return ClipRef(vid, tuple(range(start, start + n * step, step)), W, H)


def test_oracle_returns_the_ground_truth_of_each_clip():
    src = FakeSource()
    tr = TRACKERS.get("oracle")(TrackerSettings(name="oracle", batch_size=2), src)
    assert isinstance(tr, OracleTracker) and tr.uses_frames is False and tr.batch_size == 2
    q = grid_queries(5, W, H)
    clips = [clip("a", 6), clip("b", 0)]
    frames = np.zeros((2, 4, H, W, 3), np.uint8)
    res = tr.run(frames, q, clips, track_size=(40, 24))  # no resizing: it ignores pixels
    assert res.tracks.shape == (2, 4, len(q), 2) and res.tracks.dtype == np.float32
    assert res.visibility.dtype == bool
    for b, c in enumerate(clips):
        gt = src.gts[c.video_id]
        exp_tr, exp_vis = gt.track(c.frames[0], q, c.frames)
        np.testing.assert_array_equal(res.tracks[b], exp_tr)
        np.testing.assert_array_equal(res.visibility[b], exp_vis)
        # the clip's first frame is where the queries are
        np.testing.assert_allclose(res.tracks[b, 0], q, atol=1e-5)
    # clip "a" starts at frame 6 and moves 1.5 px per source frame, 3 frames per step
    np.testing.assert_allclose(res.tracks[0, 1] - q, np.broadcast_to([4.5, -1.5], q.shape), atol=1e-5)
    np.testing.assert_allclose(res.tracks[1, 3] - q, np.broadcast_to([-18.0, -4.5], q.shape), atol=1e-5)
    assert not res.visibility.all() and res.visibility.any()


def test_oracle_needs_a_source_with_ground_truth():
    with pytest.raises(MosicError, match="--dataset synthetic"):
        TRACKERS.get("oracle")(TrackerSettings(name="oracle"), NoGroundTruth())
    with pytest.raises(MosicError, match="synthetic"):
        TRACKERS.get("oracle")(TrackerSettings(name="oracle"), None)


def test_oracle_needs_the_clips():
    tr = OracleTracker(FakeSource())
    with pytest.raises(MosicError, match="clips"):
        tr.track(np.zeros((1, 4, H, W, 3), np.uint8), grid_queries(2, W, H), None)


def test_oracle_rejects_a_size_mismatch():
    src = FakeSource()
    tr = OracleTracker(src)
    bad = ClipRef("a", (0, 1, 2), W + 2, H)
    with pytest.raises(MosicError, match="ground truth"):
        tr.track(np.zeros((1, 3, H, W + 2, 3), np.uint8), grid_queries(2, W, H), [bad])


def test_oracle_on_the_synthetic_data_set(tmp_path):
    synthetic = pytest.importorskip("mosic.data.synthetic")
    from mosic.config import ClipSettings
    from mosic.data.base import create_source, plan_clips
    from mosic.precompute.metrics import aggregate, tapvid_metrics
    from mosic.precompute.trackers.base import create_tracker

    synthetic.generate(tmp_path, 2, seed=3, num_frames=20, width=96, height=64, exact_length=True)
    src = create_source("synthetic", tmp_path, split="train")
    clips, failures = plan_clips(src.videos(), ClipSettings(length=6, step=3, clips_per_video=2, stride=None))
    assert not failures and len(clips) == 4
    tr = create_tracker(TrackerSettings(name="oracle", batch_size=2), src)
    assert isinstance(tr, OracleTracker) and tr.version.startswith("oracle-")
    q = grid_queries(6, 96, 64)
    batch = clips[1:3]  # clips of two different videos, one not starting at frame 0
    assert batch[0].frames[0] > 0 and batch[0].video_id != batch[1].video_id
    frames = np.stack([src.read_clip(c) for c in batch])
    res = tr.run(frames, q, batch)
    for b, c in enumerate(batch):
        gt = src.ground_truth(c.video_id)
        exp_tr, exp_vis = gt.track(c.frames[0], q, c.frames)
        np.testing.assert_array_equal(res.tracks[b], exp_tr)
        np.testing.assert_array_equal(res.visibility[b], exp_vis)
        np.testing.assert_allclose(res.tracks[b, 0], q, atol=1e-3)
        m = tapvid_metrics(res.tracks[b], res.visibility[b], exp_tr, exp_vis, c.width, c.height)
        assert aggregate([m], [c.video_id])["average_jaccard"] == pytest.approx(100.0)
    # the ground truth moves: the tracks are not just the queries repeated
    assert np.abs(res.tracks[:, -1] - q).max() > 1.0
    # a source without ground truth is refused
    with pytest.raises(MosicError, match="synthetic"):
        create_tracker(TrackerSettings(name="oracle"), NoGroundTruth())
