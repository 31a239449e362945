"""Dense measures on the synthetic set, where every pixel's class and every point's track are
known exactly. Used to show that training improves a backbone.

- ``cluster_miou``: K-means (K = number of classes) on the patch features of frames, matched to
  the semantic classes (Hungarian); mIoU over patches.
- ``track_consistency``: fraction of (visible) ground-truth trajectories whose patch feature keeps
  its K-means cluster from the clip's first frame to later frames.
- ``correspondence``: for each visible tracked point in a later frame, its nearest first-frame
  point in feature space (cosine) must lie on the same layer (the same object, or the
  background); accuracy per layer, averaged over layers and videos (so the background, which
  holds most points, does not dominate).
- ``motion_margin``: on the points that moved to another patch, how much more often the first
  frame's cluster is found where the point went (``track_kept_moved``) than at the place it left
  (``location_kept_moved``, the static-location baseline). Features that merely get smoother
  raise both; features that follow objects raise the first; features trained on static tracks
  (a location keeps its cluster) raise the second. See :func:`follow_scores`.
- ``origin_preferred``: on the same moved points, how often the point's feature at frame t is
  nearer (cosine, standardised features) to its own first-frame patch than to the first-frame
  patch at the place it is now: 50 when features ignore where points came from, above when they
  follow the point, below when they follow the image location. ``origin_nearest``: how often its
  own first-frame patch is the nearest of all first-frame patches. See :func:`follow_features`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mosic.evaluation.dense import kmeans, patch_features, patch_labels
from mosic.evaluation.matching import hungarian_miou


def _semantic(source, video_id: str, frame: int) -> np.ndarray:
    inst = source.read_annotation(video_id, frame)
    gt = source.ground_truth(video_id)
    lut = np.zeros(256, np.int64)
    for oid in gt.object_ids:
        lut[oid] = gt.class_of(oid)
    return lut[inst]


def follow_scores(clusters: np.ndarray, cells: np.ndarray, visible: np.ndarray) -> dict:
    """Cluster agreement along tracks against agreement at the start location, for one clip.

    clusters int [T, h, w]: a cluster id per patch and frame; cells int [T, N, 2]: each tracked
    point's patch (col, row) per frame; visible bool [T, N]. For every later frame t and point
    visible at frames 0 and t: ``track`` = the cluster under the point at t equals its cluster at
    frame 0; ``location`` = the cluster at t of the point's frame-0 patch equals it. Returns counts
    over all such (t, point) pairs (``pairs``, ``track``) and over those where the point left its
    frame-0 patch (``moved``, ``track_moved``, ``location_moved``)."""
    T = clusters.shape[0]
    t = np.arange(T)[:, None]
    col, row = cells[..., 0], cells[..., 1]
    c_track = clusters[t, row, col]  # [T, N]
    c_loc = clusters[t, row[:1], col[:1]]  # [T, N]: frame t at the frame-0 patch
    ok = visible[1:] & visible[:1]
    moved = ok & (cells[1:] != cells[:1]).any(-1)
    keep = c_track[1:] == c_track[:1]
    stay = c_loc[1:] == c_track[:1]
    return {"pairs": int(ok.sum()), "track": int((keep & ok).sum()), "moved": int(moved.sum()),
            "track_moved": int((keep & moved).sum()), "location_moved": int((stay & moved).sum())}


def follow_features(feats: np.ndarray, cells: np.ndarray, visible: np.ndarray) -> dict:
    """Does a point's feature at frame t point back to where the point came from?

    feats float [T, h, w, D] (L2-normalised); cells int [T, N, 2] patch (col, row); visible bool
    [T, N]. Over (t >= 1, point) pairs visible at frames 0 and t whose patch changed (``moved``):
    ``origin`` counts those whose feature is more similar to the point's frame-0 patch than to the
    frame-0 patch at its frame-t position; ``nearest`` those whose most similar frame-0 patch (of
    all h x w) is the point's own frame-0 patch."""
    T, h, w, D = feats.shape
    col, row = cells[..., 0], cells[..., 1]
    ok = visible[1:] & visible[:1]
    moved = ok & (cells[1:] != cells[:1]).any(-1)  # [T-1, N]
    tt, nn = np.nonzero(moved)
    if len(tt) == 0:
        return {"moved": 0, "origin": 0, "nearest": 0}
    f = feats[tt + 1, row[tt + 1, nn], col[tt + 1, nn]]  # [M, D]
    sim0 = f @ feats[0].reshape(h * w, D).T  # [M, h*w] against every first-frame patch
    origin = row[0, nn] * w + col[0, nn]
    here = row[tt + 1, nn] * w + col[tt + 1, nn]
    m = np.arange(len(tt))
    return {"moved": int(len(tt)), "origin": int((sim0[m, origin] > sim0[m, here]).sum()),
            "nearest": int((sim0.argmax(1) == origin).sum())}


def probe(backbone: torch.nn.Module, root: str | Path, split: str = "train", img_size: int = 112,
          frames_per_video: int = 4, step: int = 6, max_videos: int | None = None, overcluster: int = 24,
          seed: int = 0) -> dict:
    """Both measures on the synthetic set at ``root``; percentages."""
    from mosic.data.synthetic import SyntheticSource
    from mosic.data.grid import grid_queries

    source = SyntheticSource(root, split=split)
    videos = source.videos()[:max_videos]
    num_classes = len(source.classes())
    frames, sem, tracks, vis, layers = [], [], [], [], []
    for v in videos:
        idx = [min(v.num_frames - 1, i * step) for i in range(frames_per_video)]
        frames.append(source.read_frames(v.video_id, idx))
        sem.append(np.stack([_semantic(source, v.video_id, i) for i in idx]))
        q = grid_queries(16, v.width, v.height)
        gt = source.ground_truth(v.video_id)
        tr, vs = gt.track(idx[0], q, idx)
        layers.append(gt.layer_at(idx[0], q))
        # track positions in feature-grid units of the img_size x img_size resize
        tracks.append(tr / np.array([v.width, v.height], np.float32))
        vis.append(vs)
    F_ = len(videos) * frames_per_video
    frames = np.concatenate(frames)
    feats = patch_features(backbone, frames, img_size)  # [F, h, h, D]
    h = feats.shape[1]
    labels = patch_labels(np.concatenate(sem), h, num_classes)
    x = feats.reshape(F_ * h * h, -1).numpy()
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    pred = kmeans(x, num_classes, seed=seed)
    miou, per_class = hungarian_miou(pred, labels.ravel(), num_classes, num_classes)

    # trajectory consistency: cluster of the patch under each tracked point, first frame vs later
    over = kmeans(x, overcluster, seed=seed).reshape(len(videos), frames_per_video, h, h)
    counts = {"pairs": 0, "track": 0, "moved": 0, "track_moved": 0, "location_moved": 0}
    for vi in range(len(videos)):
        tr = np.clip((tracks[vi] * h).astype(int), 0, h - 1)  # [T, N, 2] -> patch (col, row)
        for k, v in follow_scores(over[vi], tr, vis[vi]).items():
            counts[k] += v
    moved = max(1, counts["moved"])
    xn = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)
    xn = xn.reshape(len(videos), frames_per_video, h, h, -1)
    fc = {"moved": 0, "origin": 0, "nearest": 0}
    for vi in range(len(videos)):
        tr = np.clip((tracks[vi] * h).astype(int), 0, h - 1)
        for k, v in follow_features(xn[vi], tr, vis[vi]).items():
            fc[k] += v
    # correspondence: nearest first-frame point (same video) of each later tracked point
    fv = feats.view(len(videos), frames_per_video, h, h, -1)
    acc = []
    for vi in range(len(videos)):
        tr = np.clip((tracks[vi] * h).astype(int), 0, h - 1)
        f = fv[vi][torch.arange(frames_per_video)[:, None], torch.from_numpy(tr[..., 1]), torch.from_numpy(tr[..., 0])]
        sim = torch.einsum("tnd,md->tnm", f[1:], f[0])  # [T-1, N, N]
        nn = sim.argmax(-1).numpy()
        lay = layers[vi]
        ok = vis[vi][1:] & vis[vi][:1]
        hit = lay[nn] == lay[None, :]
        per_layer = [hit[ok & (lay[None, :] == l)].mean() for l in np.unique(lay) if (ok & (lay[None, :] == l)).any()]
        acc.append(np.mean(per_layer))
    return {
        "cluster_miou": 100 * miou,
        "correspondence": 100 * float(np.mean(acc)),
        "per_class_iou": [round(100 * v, 1) for v in per_class],
        "track_consistency": 100 * counts["track"] / max(1, counts["pairs"]),
        "track_kept_moved": 100 * counts["track_moved"] / moved,
        "location_kept_moved": 100 * counts["location_moved"] / moved,
        "motion_margin": 100 * (counts["track_moved"] - counts["location_moved"]) / moved,
        "origin_preferred": 100 * fc["origin"] / max(1, fc["moved"]),
        "origin_nearest": 100 * fc["nearest"] / max(1, fc["moved"]),
        "moved_fraction": 100 * counts["moved"] / max(1, counts["pairs"]),
        "frames": F_,
        "videos": len(videos),
    }
