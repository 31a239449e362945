"""TAP-Vid point-tracking metrics (Doersch et al., 2022), as pure numpy functions.

Definitions (those of the TAP-Vid benchmark, "first" query mode):

* positions are scaled to a 256 x 256 raster first: ``x * 256 / W``, ``y * 256 / H``;
* thresholds are 1, 2, 4, 8 and 16 pixels (of that raster); "within" means a distance strictly
  below the threshold;
* only frames *after* the query frame are scored (the query frame itself, and any frame before
  it, are excluded);
* ``pts_within_{t}``: of the points visible in the ground truth, the fraction predicted within
  ``t``; ``delta_avg`` is their mean over the thresholds;
* ``occlusion_accuracy``: the fraction of (point, frame) pairs whose visibility is predicted right;
* ``jaccard_{t}`` = TP / (TP + FP + FN) with TP = visible in the ground truth, predicted visible and
  within ``t``; FP = predicted visible but occluded in the ground truth or too far; FN = visible in
  the ground truth but predicted occluded or too far. ``average_jaccard`` is the mean over the
  thresholds.

``tapvid_metrics`` scores one clip and returns fractions in [0, 1] (``nan`` where a ratio has no
denominator, e.g. ``delta_avg`` of a clip where no point is ever visible after the query frame).
``aggregate`` gives the benchmark figures: per-video means first (over a video's clips), then the
mean over videos, times 100. ``nan`` entries are left out of those means.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np

THRESHOLDS: tuple[int, ...] = (1, 2, 4, 8, 16)
RASTER = 256.0

#: the headline keys, in the order the benchmark reports them
HEADLINE = ("average_jaccard", "delta_avg", "occlusion_accuracy")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def tapvid_metrics(
    pred_tracks: np.ndarray,
    pred_vis: np.ndarray,
    gt_tracks: np.ndarray,
    gt_vis: np.ndarray,
    width: int,
    height: int,
    query_frame: int = 0,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, float]:
    """TAP-Vid metrics of one clip.

    pred_tracks, gt_tracks: [T, N, 2] (x, y) in pixels of a ``width`` x ``height`` frame;
    pred_vis, gt_vis: bool [T, N]; ``query_frame``: the frame the queries were given on (frames up to
    and including it are not scored). Returns fractions in [0, 1] under the keys ``delta_avg``,
    ``occlusion_accuracy``, ``average_jaccard``, ``pts_within_{t}`` and ``jaccard_{t}``.
    """
    pred_tracks = np.asarray(pred_tracks, dtype=np.float64)
    gt_tracks = np.asarray(gt_tracks, dtype=np.float64)
    pred_vis = np.asarray(pred_vis, dtype=bool)
    gt_vis = np.asarray(gt_vis, dtype=bool)
    if pred_tracks.ndim != 3 or pred_tracks.shape[-1] != 2:
        raise ValueError(f"pred_tracks must be [T, N, 2], got {pred_tracks.shape}")
    if gt_tracks.shape != pred_tracks.shape:
        raise ValueError(f"gt_tracks {gt_tracks.shape} and pred_tracks {pred_tracks.shape} differ")
    T, N, _ = pred_tracks.shape
    if pred_vis.shape != (T, N) or gt_vis.shape != (T, N):
        raise ValueError(
            f"visibility must be [T, N] = {(T, N)}, got pred {pred_vis.shape}, gt {gt_vis.shape}"
        )
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    if not 0 <= query_frame < T:
        raise ValueError(f"query_frame {query_frame} is outside the clip's {T} frames")

    scale = np.array([RASTER / width, RASTER / height])
    sq_dist = np.sum(np.square((pred_tracks - gt_tracks) * scale), axis=-1)  # [T, N]
    # a nan prediction is never within any threshold
    sq_dist = np.where(np.isfinite(sq_dist), sq_dist, np.inf)

    evaluated = np.zeros((T, N), dtype=bool)
    evaluated[query_frame + 1 :] = True

    out: dict[str, float] = {}
    out["occlusion_accuracy"] = _ratio(np.sum((pred_vis == gt_vis) & evaluated), np.sum(evaluated))

    gt_pos = gt_vis & evaluated
    n_gt_pos = np.sum(gt_pos)
    deltas, jaccards = [], []
    for t in thresholds:
        within = sq_dist < float(t) ** 2
        correct = within & gt_pos
        frac = _ratio(np.sum(correct), n_gt_pos)
        tp = np.sum(correct & pred_vis)
        fp = np.sum(pred_vis & evaluated & (~gt_vis | ~within))
        # TP + FN = the ground-truth positives
        jac = _ratio(tp, n_gt_pos + fp)
        key = f"{t:g}"
        out[f"pts_within_{key}"] = frac
        out[f"jaccard_{key}"] = jac
        deltas.append(frac)
        jaccards.append(jac)
    out["delta_avg"] = float(np.mean(deltas))
    out["average_jaccard"] = float(np.mean(jaccards))
    return out


def aggregate(
    per_clip: Sequence[Mapping[str, float]], video_ids: Sequence[str]
) -> dict[str, float]:
    """Benchmark figures in percent: for every key, the mean over a video's clips, then the mean
    over videos (``nan`` values are skipped; a key that is ``nan`` everywhere stays ``nan``).
    Also returns ``num_videos`` and ``num_clips`` (as floats, not scaled)."""
    if len(per_clip) != len(video_ids):
        raise ValueError(f"{len(per_clip)} metric dicts but {len(video_ids)} video ids")
    if not per_clip:
        raise ValueError("no clips to aggregate")
    keys: list[str] = []
    for m in per_clip:
        for k in m:
            if k not in keys:
                keys.append(k)
    by_video: dict[str, list[Mapping[str, float]]] = defaultdict(list)
    for m, vid in zip(per_clip, video_ids):
        by_video[vid].append(m)

    out: dict[str, float] = {}
    for k in keys:
        video_means = []
        for clips in by_video.values():
            vals = np.array([c.get(k, np.nan) for c in clips], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                video_means.append(vals.mean())
        out[k] = float(np.mean(video_means) * 100.0) if video_means else float("nan")
    out["num_videos"] = float(len(by_video))
    out["num_clips"] = float(len(per_clip))
    return out
