"""What MoSiC trains, measured on held-out clips: does the trained model (student and teacher,
:class:`mosic.train.model.MoSiCModel`) predict where a point went? The backbone-only measures on
the synthetic set are :mod:`mosic.evaluation.synthetic_probe`."""

from __future__ import annotations

from pathlib import Path

import torch


def prediction_hits(student_first: torch.Tensor, teacher: torch.Tensor, tracks_cells: torch.Tensor,
                    visible: torch.Tensor) -> dict:
    """What MoSiC trains, measured on held-out clips: does the student's cluster at a point's first
    frame name the teacher's cluster where the point is at frame t (``track``), or where it started
    (``location``)?

    student_first int [B, N]: the student's cluster (argmax over prototypes) at each point on frame
    0; teacher int [B, T, h, w]: the teacher's cluster of every patch of every frame; tracks_cells
    int [B, T, N, 2]: each point's patch (col, row); visible bool [B, T, N]. Counts over (t >= 1,
    point) pairs visible at frames 0 and t (``pairs``, ``track``) and over those whose patch changed
    (``moved``, ``track_moved``, ``location_moved``)."""
    B, T = teacher.shape[:2]
    b = torch.arange(B)[:, None, None]
    t = torch.arange(T)[None, :, None]
    col, row = tracks_cells[..., 0], tracks_cells[..., 1]
    at_track = teacher[b, t, row, col]  # [B, T, N]
    at_start = teacher[b, t, row[:, :1], col[:, :1]]
    ok = visible[:, 1:] & visible[:, :1]
    moved = ok & (tracks_cells[:, 1:] != tracks_cells[:, :1]).any(-1)
    s = student_first[:, None]
    hit_track = at_track[:, 1:] == s
    hit_loc = at_start[:, 1:] == s
    return {"pairs": int(ok.sum()), "track": int((hit_track & ok).sum()), "moved": int(moved.sum()),
            "track_moved": int((hit_track & moved).sum()), "location_moved": int((hit_loc & moved).sum())}


@torch.no_grad()
def track_prediction(student, teacher, store: str | Path, img_size: int, batch_size: int = 8,
                     max_clips: int | None = None, sinkhorn_eps: float = 0.06, sinkhorn_iters: int = 3) -> dict:
    """The trained MoSiC model (student and teacher, :class:`mosic.train.model.MoSiCModel`) on the
    clips of a held-out store, whole frames resized to ``img_size`` (no crop, no flip, no token
    dropping): how often the student's first-frame cluster of a point is the teacher's cluster of
    the same point at a later frame (``track_prediction``), and, on points that moved to another
    patch, along the track (``prediction_moved``) against at the place the point left
    (``prediction_location``). The teacher's clusters are balanced by Sinkhorn-Knopp over all
    patches of a batch, as in training (so a model whose features merely got smoother cannot
    score by putting most patches in a few clusters); the student's are its argmax. Percent."""
    from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD
    from mosic.train.augment import normalize_frames
    from mosic.train.dataset import ClipDataset, collate_clips
    from mosic.train.ops import sinkhorn

    ds = ClipDataset(store, out_size=img_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, max_clips=max_clips)
    student.eval()
    teacher.eval()
    p = student.patch_size
    h = img_size // p
    counts = {"pairs": 0, "track": 0, "moved": 0, "track_moved": 0, "location_moved": 0}
    for a in range(0, len(ds), batch_size):
        batch = collate_clips([ds[i] for i in range(a, min(a + batch_size, len(ds)))])
        frames, tracks, vis = normalize_frames(batch["frames"], IMAGENET_MEAN, IMAGENET_STD), batch["tracks"], \
            batch["visibility"]
        B, T = frames.shape[:2]
        ft = teacher.patch_features(frames.flatten(0, 1))  # [B*T, D, h, w]
        z = teacher.head(ft.permute(0, 2, 3, 1))
        q = sinkhorn(teacher.scores(z).flatten(0, 2).float(), eps=sinkhorn_eps, iters=sinkhorn_iters)
        tc = q.argmax(-1).view(B, T, h, h)
        sc = student(frames[:, 0], tracks[:, 0], None, "nearest").argmax(-1)  # [B, N]
        cells = (tracks / p).floor().long().clamp(0, h - 1)
        for k, v in prediction_hits(sc, tc, cells, vis).items():
            counts[k] += v
    moved = max(1, counts["moved"])
    return {"track_prediction": 100 * counts["track"] / max(1, counts["pairs"]),
            "prediction_moved": 100 * counts["track_moved"] / moved,
            "prediction_location": 100 * counts["location_moved"] / moved,
            "prediction_margin": 100 * (counts["track_moved"] - counts["location_moved"]) / moved}
