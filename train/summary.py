"""What a training run is about to read, in one line (printed when it starts), and the store
nearest to a pipeline's when none fits."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mosic.store_schema.location import Location, list_stores


def start_summary(dataset) -> str:
    """The store, its clips and videos, the failed clips left out, and whether frames come from a
    frame cache or the JPEGs, for a :class:`mosic.train.dataset.ClipDataset`."""
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


def nearest_store(stores: Location, req: dict[str, Any]) -> tuple[Location, list[tuple[str, Any, Any]]] | None:
    """The complete store in ``stores`` whose spec differs from ``req`` in the fewest fields (the
    grid does not count: training takes any grid dense enough), with those fields as
    (field, store's value, wanted value)."""
    from mosic.store_schema.reader import StoreError, StoreReader
    from mosic.store_schema.spec import flatten

    best = None
    for p in list_stores(stores):
        try:
            have = flatten(StoreReader(p).spec.model_dump(mode="json"))
        except StoreError:
            continue
        diffs = [(k, have.get(k), v) for k, v in req.items() if k != "grid"
                 and have.get(k) != (list(v) if isinstance(v, tuple) else v)]
        if diffs and (best is None or len(diffs) < len(best[1])):
            best = (p, diffs)
    return best


def yaml_value(v: Any) -> str:
    return "null" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)
