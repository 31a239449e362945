"""Scoring a store's tracks against the synthetic set's exact ground truth (TAP-Vid metrics)."""

from __future__ import annotations

from typing import Any

from mosic import MosicError
from mosic.data.base import FrameSource
from mosic.precompute.metrics import aggregate, tapvid_metrics
from mosic.data.grid import grid_queries
from mosic.store_schema.reader import StoreReader


def score_store(reader: StoreReader, source: FrameSource, max_clips: int | None = None) -> dict[str, Any]:
    """TAP-Vid metrics (percent, mean over videos of per-video means) of every written clip."""
    if not hasattr(source, "ground_truth"):
        raise MosicError(
            f"scoring needs ground truth: the store's data set is {source.kind!r}; "
            "only the synthetic set (mosic-data synthetic) has it"
        )
    per_clip, vids = [], []
    idx = reader.done if max_clips is None else reader.done[:max_clips]
    if len(idx) == 0:
        raise MosicError(f"store {reader.path} has no written clips to score")
    for i in idx:
        item = reader[i]
        c = item.clip
        q = grid_queries(reader.spec.grid, c.width, c.height)
        gt_tracks, gt_vis = source.ground_truth(c.video_id).track(c.frames[0], q, c.frames)
        per_clip.append(tapvid_metrics(item.tracks, item.visibility, gt_tracks, gt_vis, c.width, c.height))
        vids.append(c.video_id)
    out = aggregate(per_clip, vids)
    out["clips"] = len(idx)
    out["videos"] = len(set(vids))
    return out
