import cv2
import numpy as np
import pytest

from mosic.config import TrackerSettings
from mosic.data.grid import grid_queries
from mosic.precompute.trackers.base import TRACKERS
from mosic.precompute.trackers.lk import LKTracker, from_cv, inside_image, to_cv

W, H = 96, 64  # non-square on purpose: catches x/y swaps


def texture(width, height, shifts, seed=0, k=40):
    """Frames [len(shifts), H, W, 3] of a smooth random texture (a sum of sinusoids, sampled at the
    pixel centres) translated by exact, possibly sub-pixel, (dx, dy) amounts."""
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, np.pi, k)
    freq = rng.uniform(0.2, 0.9, k)  # radians per pixel, well below Nyquist
    fx, fy = freq * np.cos(ang), freq * np.sin(ang)
    ph = rng.uniform(0, 2 * np.pi, k)
    amp = 1 / freq
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    norm = 120 / (3 * np.sqrt(np.sum(amp**2) / 2))
    out = []
    for dx, dy in shifts:
        x, y = xs - dx, ys - dy
        v = np.tensordot(amp, np.sin(fx[:, None, None] * x + fy[:, None, None] * y + ph[:, None, None]), 1)
        out.append(np.repeat((128 + v * norm)[..., None], 3, axis=-1))
    return np.clip(np.stack(out), 0, 255).round().astype(np.uint8)


def interior(points, margin, width=W, height=H):
    x, y = points[..., 0], points[..., 1]
    return (x >= margin) & (x < width - margin) & (y >= margin) & (y < height - margin)


def test_coordinate_conversion_is_half_a_pixel():
    ours = np.array([[0.5, 0.5], [10.5, 3.25]], dtype=np.float32)
    np.testing.assert_array_equal(to_cv(ours), [[0.0, 0.0], [10.0, 2.75]])
    np.testing.assert_array_equal(from_cv(to_cv(ours)), ours)
    # the image covers [0, W) x [0, H) in our convention
    pts = np.array([[0.0, 0.0], [W - 0.01, H - 0.01], [-0.01, 5], [W, 5], [5, H], [np.nan, 1]])
    assert inside_image(pts, W, H).tolist() == [True, True, False, False, False, False]


@pytest.mark.parametrize("step", [(0.4, 0.0), (-1.7, 0.0), (0.0, 0.6), (1.0, -1.0)])
def test_tracks_follow_a_known_translation(step):
    T = 6
    shifts = [(step[0] * t, step[1] * t) for t in range(T)]
    frames = texture(W, H, shifts)
    q = grid_queries(8, W, H)
    res = LKTracker().track(frames[None], q)
    assert res.tracks.dtype == np.float32 and res.tracks.shape == (1, T, len(q), 2)
    assert res.visibility.dtype == bool and res.confidence.shape == (1, T, len(q))
    expected = q[None] + np.asarray(shifts, dtype=np.float32)[:, None, :]
    np.testing.assert_array_equal(res.tracks[0, 0], q)  # frame 0 is the query itself
    # points whose window stays well inside the frames are tracked to a tenth of a pixel
    keep = interior(expected, 12).all(axis=0)
    assert keep.sum() >= 10
    assert res.visibility[0][:, keep].all()
    err = res.tracks[0][:, keep] - expected[:, keep]
    assert np.abs(err).max() < 0.15, np.abs(err).max(axis=(1, 2))
    # the mean displacement has the right sign and size along each axis separately
    mean_disp = (res.tracks[0, -1, keep] - q[keep]).mean(axis=0)
    np.testing.assert_allclose(mean_disp, np.asarray(shifts[-1]), atol=0.05)
    conf = res.confidence[0][:, keep]
    assert (conf > 0.3).all() and (conf <= 1).all()


def test_points_leaving_the_image_become_and_stay_invisible():
    T, step = 8, 3.0
    frames = texture(W, H, [(step * t, 0.0) for t in range(T)], seed=1)
    q = grid_queries(8, W, H)
    res = LKTracker().track(frames[None], q)
    vis = res.visibility[0]
    true_x = q[None, :, 0] + step * np.arange(T)[:, None]
    # once invisible, invisible for good
    assert not (vis[1:] & ~vis[:-1]).any()
    # where the true position has left the image the point must be invisible
    gone = true_x >= W
    assert gone.any()
    assert not vis[gone].any()
    # ... and every visible position is inside the image
    assert inside_image(res.tracks[0][vis], W, H).all()
    # points that stay far from the edge are visible to the end
    stays = (true_x[-1] < W - 12) & interior(q, 12)
    assert stays.sum() >= 8 and vis[:, stays].all()
    # lost points keep their last visible position and have confidence 0
    lost = ~vis[-1]
    last_t = vis.sum(axis=0) - 1
    for n in np.flatnonzero(lost):
        np.testing.assert_array_equal(res.tracks[0, -1, n], res.tracks[0, last_t[n], n])
    assert (res.confidence[0][~vis] == 0).all()


def test_query_outside_the_image_is_invisible_from_the_start():
    frames = texture(W, H, [(0.5 * t, 0.0) for t in range(3)])
    q = np.array([[40.0, 30.0], [-1.0, 30.0], [40.0, H + 0.5]], dtype=np.float32)
    res = LKTracker().track(frames[None], q)
    assert res.visibility[0, :, 0].all()
    assert not res.visibility[0, :, 1:].any()


def test_forward_backward_check_rejects_inconsistent_frames():
    # frame 1 is unrelated noise: LK forward and backward disagree -> points lost
    frames = texture(W, H, [(0.0, 0.0), (0.0, 0.0)])
    frames[1] = np.random.default_rng(3).integers(0, 256, frames[1].shape, dtype=np.uint8)
    q = grid_queries(6, W, H)
    res = LKTracker().track(frames[None], q)
    assert res.visibility[0, 1].mean() < 0.5


def test_batch_equals_each_clip_alone():
    a = texture(W, H, [(0.8 * t, 0.3 * t) for t in range(5)], seed=4)
    b = texture(W, H, [(-1.1 * t, 0.0) for t in range(5)], seed=5)
    q = grid_queries(7, W, H)
    tr = LKTracker()
    both = tr.track(np.stack([a, b]), q)
    for i, clip in enumerate([a, b]):
        one = tr.track(clip[None], q)
        np.testing.assert_array_equal(both.tracks[i], one.tracks[0])
        np.testing.assert_array_equal(both.visibility[i], one.visibility[0])
        np.testing.assert_array_equal(both.confidence[i], one.confidence[0])
    assert not np.array_equal(both.tracks[0], both.tracks[1])


def test_run_with_track_size_maps_back_to_source_pixels():
    # 2x the size, 2 px per frame along x in the source: 1 px per frame at the tracking size
    Ws, Hs, T = 2 * W, 2 * H, 5
    frames = texture(Ws, Hs, [(2.0 * t, 0.0) for t in range(T)], seed=6)
    q = grid_queries(8, Ws, Hs)
    tr = LKTracker()
    res = tr.run(frames[None], q, track_size=(W, H))
    assert res.tracks.shape == (1, T, len(q), 2)
    np.testing.assert_allclose(res.tracks[0, 0], q, atol=1e-4)
    expected = q[None] + np.array([2.0, 0.0], dtype=np.float32) * np.arange(T)[:, None, None]
    keep = interior(expected, 24, Ws, Hs).all(axis=0)
    assert keep.sum() >= 10 and res.visibility[0][:, keep].all()
    err = res.tracks[0][:, keep] - expected[:, keep]
    assert np.abs(err).max() < 0.3
    np.testing.assert_allclose(err.mean(axis=(0, 1)), 0.0, atol=0.06)


def test_registry_factory_and_metadata():
    tr = TRACKERS.get("lk")(TrackerSettings(name="lk", batch_size=3), None)
    assert isinstance(tr, LKTracker) and tr.batch_size == 3
    assert cv2.__version__ in tr.version and "lk" in tr.version
    p = tr.params()
    assert p["win_size"] == 15 and p["max_level"] == 3 and p["fb_threshold"] == 1.0
    assert tr.checkpoint_hash() is None


def test_bad_input_is_rejected():
    tr = LKTracker()
    with pytest.raises(ValueError):
        tr.track(np.zeros((2, 64, 96, 3), np.uint8), grid_queries(2, W, H))
    with pytest.raises(ValueError):
        tr.track(np.zeros((1, 2, 64, 96, 3), np.float32), grid_queries(2, W, H))
    with pytest.raises(ValueError):
        LKTracker(fb_threshold=0)


def test_lk_beats_standing_still_on_the_synthetic_set(tmp_path):
    synthetic = pytest.importorskip("mosic.data.synthetic")
    from mosic.config import ClipSettings
    from mosic.data.base import create_source, plan_clips
    from mosic.precompute.metrics import aggregate, tapvid_metrics

    synthetic.generate(tmp_path, 3, seed=1, num_frames=24, width=96, height=64, exact_length=True)
    src = create_source("synthetic", tmp_path, split="train")
    clips, _ = plan_clips(src.videos(), ClipSettings(length=8, step=3))
    q = grid_queries(8, 96, 64)
    tr = LKTracker()
    lk_m, still_m = [], []
    for c in clips:
        gt_tr, gt_vis = src.ground_truth(c.video_id).track(c.frames[0], q, c.frames)
        res = tr.run(src.read_clip(c)[None], q, [c])
        lk_m.append(tapvid_metrics(res.tracks[0], res.visibility[0], gt_tr, gt_vis, c.width, c.height))
        still = np.broadcast_to(q, gt_tr.shape)
        still_m.append(tapvid_metrics(still, np.ones_like(gt_vis), gt_tr, gt_vis, c.width, c.height))
    ids = [c.video_id for c in clips]
    lk_agg, still_agg = aggregate(lk_m, ids), aggregate(still_m, ids)
    assert lk_agg["delta_avg"] > still_agg["delta_avg"] + 10
    assert lk_agg["average_jaccard"] > still_agg["average_jaccard"] + 10
