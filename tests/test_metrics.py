import math

import numpy as np
import pytest

from mosic.precompute.metrics import THRESHOLDS, aggregate, tapvid_metrics


def _gt(T=5, N=4, W=512, H=128, seed=0):
    rng = np.random.default_rng(seed)
    tracks = rng.uniform([0, 0], [W, H], size=(T, N, 2)).astype(np.float32)
    vis = np.ones((T, N), dtype=bool)
    return tracks, vis, W, H


def test_perfect_prediction_scores_100():
    tracks, vis, W, H = _gt()
    vis[2, 1] = False  # an occluded point, predicted occluded too
    m = tapvid_metrics(tracks, vis, tracks, vis, W, H)
    assert m["delta_avg"] == 1.0
    assert m["occlusion_accuracy"] == 1.0
    assert m["average_jaccard"] == 1.0
    agg = aggregate([m], ["v"])
    for k in ("delta_avg", "occlusion_accuracy", "average_jaccard"):
        assert agg[k] == pytest.approx(100.0)


def test_constant_offset_gives_known_deltas():
    # W = 512: an x offset of 6 source pixels is 3 pixels of the 256 raster.
    # Within (strictly below) thresholds 4, 8, 16 but not 1, 2 -> delta_avg = 3/5.
    tracks, vis, W, H = _gt(W=512, H=128)
    pred = tracks.copy()
    pred[..., 0] += 6.0
    m = tapvid_metrics(pred, vis, tracks, vis, W, H)
    assert m["pts_within_1"] == 0.0 and m["pts_within_2"] == 0.0
    assert m["pts_within_4"] == 1.0 and m["pts_within_8"] == 1.0 and m["pts_within_16"] == 1.0
    assert m["delta_avg"] == pytest.approx(0.6)
    # all points predicted visible: a point too far is both a FP and a FN -> jaccard 0 at 1 and 2
    assert m["jaccard_1"] == 0.0 and m["jaccard_4"] == 1.0
    assert m["average_jaccard"] == pytest.approx(0.6)
    assert m["occlusion_accuracy"] == 1.0


def test_y_is_scaled_by_height_not_width():
    # H = 128: a y offset of 1.5 source pixels is 3 raster pixels (it would be 0.75 if y were
    # scaled by the width) -> not within 2, within 4
    tracks, vis, W, H = _gt(W=512, H=128)
    pred = tracks.copy()
    pred[..., 1] += 1.5
    m = tapvid_metrics(pred, vis, tracks, vis, W, H)
    assert m["pts_within_2"] == 0.0
    assert m["pts_within_4"] == 1.0
    assert m["delta_avg"] == pytest.approx(0.6)


def test_distance_exactly_at_threshold_is_not_within():
    tracks, vis, W, H = _gt(W=256, H=256)
    pred = tracks.copy().astype(np.float64)
    pred[..., 0] += 4.0
    m = tapvid_metrics(pred, vis, tracks.astype(np.float64), vis, W, H)
    assert m["pts_within_4"] == 0.0 and m["pts_within_8"] == 1.0


def test_all_occluded_prediction_has_zero_jaccard():
    tracks, vis, W, H = _gt()
    pred_vis = np.zeros_like(vis)
    m = tapvid_metrics(tracks, pred_vis, tracks, vis, W, H)
    assert m["average_jaccard"] == 0.0
    assert m["occlusion_accuracy"] == 0.0
    # positions are right, so delta (which ignores predicted visibility) is perfect
    assert m["delta_avg"] == 1.0


def test_visible_prediction_of_occluded_point_is_a_false_positive():
    T, N = 3, 2
    tracks = np.full((T, N, 2), 100.0, dtype=np.float32)
    gt_vis = np.ones((T, N), dtype=bool)
    gt_vis[2, 1] = False  # occluded in the ground truth at frame 2 ...
    pred_vis = np.ones((T, N), dtype=bool)  # ... but predicted visible (position exact)
    m = tapvid_metrics(tracks, pred_vis, tracks, gt_vis, 256, 256)
    # scored frames 1, 2: 3 GT-visible points, all correct -> TP 3, FN 0, FP 1
    for t in THRESHOLDS:
        assert m[f"jaccard_{t}"] == pytest.approx(3 / 4)
        assert m[f"pts_within_{t}"] == 1.0
    assert m["occlusion_accuracy"] == pytest.approx(3 / 4)


def test_false_negative_from_predicted_occlusion():
    T, N = 3, 2
    tracks = np.full((T, N, 2), 50.0, dtype=np.float32)
    vis = np.ones((T, N), dtype=bool)
    pred_vis = vis.copy()
    pred_vis[1, 0] = False
    m = tapvid_metrics(tracks, pred_vis, tracks, vis, 256, 256)
    assert m["average_jaccard"] == pytest.approx(3 / 4)  # TP 3, FN 1, FP 0


def test_query_frame_and_earlier_frames_are_excluded():
    tracks, vis, W, H = _gt(T=4, N=3)
    pred = tracks.copy()
    pred_vis = vis.copy()
    pred[0] += 100.0  # wildly wrong on the query frame only
    pred_vis[0] = False
    m = tapvid_metrics(pred, pred_vis, tracks, vis, W, H)
    assert m["delta_avg"] == 1.0 and m["average_jaccard"] == 1.0 and m["occlusion_accuracy"] == 1.0
    # with the query on frame 1, frames 0 and 1 are not scored; frame 2 wrong, frame 3 right
    pred = tracks.copy()
    pred[:2] += 100.0
    pred[2] += 100.0
    m = tapvid_metrics(pred, vis, tracks, vis, W, H, query_frame=1)
    assert m["delta_avg"] == pytest.approx(0.5)
    assert m["occlusion_accuracy"] == 1.0


def test_nan_when_nothing_visible_and_aggregate_skips_it():
    tracks, vis, W, H = _gt(T=3, N=2)
    none = np.zeros_like(vis)
    m0 = tapvid_metrics(tracks, none, tracks, none, W, H)
    assert math.isnan(m0["delta_avg"])
    assert m0["occlusion_accuracy"] == 1.0
    m1 = tapvid_metrics(tracks, vis, tracks, vis, W, H)
    agg = aggregate([m0, m1], ["a", "b"])
    assert agg["delta_avg"] == pytest.approx(100.0)
    assert agg["occlusion_accuracy"] == pytest.approx(100.0)


def test_aggregate_averages_clips_per_video_first():
    clips = [
        {"delta_avg": 1.0},
        {"delta_avg": 0.0},
        {"delta_avg": 0.0},  # video "a" has three clips: mean 1/3
        {"delta_avg": 1.0},  # video "b" has one: 1
    ]
    agg = aggregate(clips, ["a", "a", "a", "b"])
    assert agg["delta_avg"] == pytest.approx(100.0 * (1 / 3 + 1) / 2)
    assert agg["num_videos"] == 2 and agg["num_clips"] == 4
    with pytest.raises(ValueError):
        aggregate(clips, ["a"])


def test_shape_checks():
    tracks, vis, W, H = _gt()
    with pytest.raises(ValueError):
        tapvid_metrics(tracks[:, :2], vis, tracks, vis, W, H)
    with pytest.raises(ValueError):
        tapvid_metrics(tracks, vis[:, :2], tracks, vis, W, H)
    with pytest.raises(ValueError):
        tapvid_metrics(tracks, vis, tracks, vis, W, H, query_frame=len(tracks))
