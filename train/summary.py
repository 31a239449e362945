"""What a training run is about to read, in one line (printed when it starts)."""

from __future__ import annotations

import numpy as np


def start_summary(dataset) -> str:
    """The store, its clips and videos, the failed clips left out, and whether frames come from a
    frame cache or the JPEGs, for a :class:`mosic.train.data.ClipDataset`."""
    from mosic.store_schema import layout as L

    r = dataset.reader
    status = np.asarray(r.status)
    failed = int((status == L.FAILED).sum())
    videos = len({r.clips[int(i)].video_id for i in dataset.indices})
    fc = getattr(dataset, "frame_cache", None)
    cache = (f"frame cache {getattr(fc, 'folder', fc)} ({getattr(fc, 'side', '?')} px frames)" if fc is not None
             else "no frame cache: frames decoded from the source (`mosic-store cache-frames STORE` makes one)")
    return (f"training on {r.path}: {len(dataset.indices)} clips from {videos} videos, "
            f"{failed} failed clip(s) skipped, {len(dataset)} items per epoch; {cache}")
