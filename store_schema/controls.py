"""Control copies of a trajectory store, to test whether training uses the motion in the tracks.

- ``static``: every frame holds the clip's first-frame point (no motion at all): the loss then asks
  that an image *location* keeps its cluster over time;
- ``swapped``: x and y exchanged in normalised coordinates, ``(x, y) -> (y W / H, x H / W)`` on a
  W x H frame (on a square frame simply ``(y, x)``): the transposed positions that a sampler reading
  ``[x, y]`` as ``[row, col]`` would use. Points start elsewhere and move the wrong way.

Only positions change; visibility is kept as the tracker gave it, so the three stores differ in
the positions alone. A control store is a store like any other: its tracker is named
``<tracker>+<control>`` (``oracle+static``) and its spec records the control, so it never passes
for the original.

```python
from mosic.store_schema.controls import write_control_store
path = write_control_store("stores/synthetic-train-oracle-....zarr", "static", "stores")
```
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mosic import MosicError
from mosic.store_schema import layout as L
from mosic.store_schema.reader import StoreReader
from mosic.store_schema.spec import SCHEMA_VERSION, TrackerSpec
from mosic.store_schema.writer import StoreWriter

CONTROLS = ("static", "swapped")


def control_tracks(tracks: np.ndarray, control: str, width: float, height: float) -> np.ndarray:
    """Tracks [..., T, N, 2] (x, y pixels of a ``width`` x ``height`` frame) turned into a control:
    ``static`` repeats frame 0 at every frame; ``swapped`` maps (x, y) to (y W / H, x H / W)."""
    tracks = np.asarray(tracks, dtype=np.float32)
    if tracks.ndim < 3 or tracks.shape[-1] != 2:
        raise ValueError(f"expected tracks [..., T, N, 2], got {tracks.shape}")
    if control == "static":
        return np.broadcast_to(tracks[..., :1, :, :], tracks.shape).copy()
    if control == "swapped":
        x, y = tracks[..., 0], tracks[..., 1]
        return np.stack([y * (width / height), x * (height / width)], axis=-1).astype(np.float32)
    raise MosicError(f"unknown track control {control!r}: choose one of {', '.join(CONTROLS)}")


def write_control_store(src: str | Path, control: str, stores: str | Path, overwrite: bool = False) -> Path:
    """Write the ``control`` copy of the complete store ``src`` into the folder ``stores``; returns
    its path (named from its spec, as every store). An existing complete copy is reused."""
    if control not in CONTROLS:
        raise MosicError(f"unknown track control {control!r}: choose one of {', '.join(CONTROLS)}")
    reader = StoreReader(src)
    spec = reader.spec
    tr = spec.tracker
    if "control" in tr.params:
        raise MosicError(f"store {src} is already a control ({tr.params['control']}); start from the original")
    # a new store, so in the current layout whatever the layout of the original
    cspec = spec.model_copy(update={"schema_version": SCHEMA_VERSION, "tracker": TrackerSpec(
        name=f"{tr.name}+{control}", version=tr.version, checkpoint_sha256=tr.checkpoint_sha256,
        params={**tr.params, "control": control})})
    path = Path(stores) / cspec.store_name()
    if path.exists() and overwrite:
        shutil.rmtree(path)
    if path.exists():
        if StoreReader(path).meta.complete:
            return path
        shutil.rmtree(path)  # an interrupted copy: start again
    meta = reader.meta
    writer = StoreWriter.open_or_create(
        path, cspec, reader.clips, meta.plan_failures, clips_per_chunk=meta.clips_per_chunk,
        made_with={**meta.made_with, "control_of": str(reader.path), "control": control})
    g = reader._zgroup()
    failed = [f for f in L.read_failures(g, meta) if f.clip is not None]
    for a, b in writer.chunk_ranges():
        tracks = L.read_tracks(g, a, b, spec)
        vis = g[L.VISIBILITY][a:b]
        status = reader.status[a:b]
        out = np.empty_like(tracks)
        for k, clip in enumerate(reader.clips[a:b]):
            out[k] = control_tracks(tracks[k], control, clip.width, clip.height)
        writer.write_chunk(a, out, vis, status, [f for f in failed if a <= f.clip < b])
    writer.finalize()
    return path
