"""Reading a store: the API the training stage consumes.

```python
reader = StoreReader(path, require={"grid": 16, "clips.length": 12})   # refuses a store that does not fit
for i in reader.done:                  # indices of clips with tracks
    item = reader[i]                   # ClipTracks: clip (video id, frames, size), tracks, visibility
```
The reader opens the Zarr group lazily and again in every process that uses it, so one reader can
be handed to many DataLoader workers. Decoded chunks are kept in a small LRU cache (``cache_mb``):
random access over an epoch then decodes each chunk about once per worker.

A store may also be a URL on object storage (``s3://bucket/stores/x.zarr``, see
:mod:`mosic.store_schema.location`); each process then opens its own fsspec connection.

A local store written with its schema's default codec is decoded without zarr: the reader reads
the chunk files itself (:mod:`mosic.store_schema.chunk_files`; zarr's per-read overhead is several
times the decoding). Anything else is read through zarr. Both layouts read the same: float32
pixels (:func:`mosic.store_schema.layout.decode_tracks`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import zarr
from pydantic import ValidationError

from mosic import MosicError
from mosic.data.base import ClipRef, create_source
from mosic.store_schema import layout as L
from mosic.store_schema import location
from mosic.store_schema.chunk_files import decode_chunk, direct_schema
from mosic.store_schema.layout import StoreMeta
from mosic.store_schema.location import Location
from mosic.store_schema.spec import READABLE_SCHEMA_VERSIONS, flatten


class StoreError(MosicError):
    pass


class IncompleteStoreError(StoreError):
    pass


class CorruptStoreError(StoreError):
    pass


def read_meta(path: str | Path, mode: str = "r") -> tuple[zarr.Group, StoreMeta]:
    path = location.as_location(path)
    if not location.exists(path):
        raise StoreError(f"no store at {path}")
    try:
        group = location.open_group(path, mode=mode)
    except Exception as e:  # noqa: BLE001 - zarr raises several types here
        raise StoreError(f"{path} is not a Zarr v3 group: {e}") from None
    raw = group.attrs.get(L.ATTR_KEY)
    if raw is None:
        raise StoreError(f"{path} is a Zarr group but not a mosic trajectory store (no '{L.ATTR_KEY}' attributes)")
    version = (raw.get("spec") or {}).get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise StoreError(
            f"{path} has store schema version {version}; this mosic reads versions "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}: rebuild the store with this version of mosic-precompute"
        )
    try:
        meta = StoreMeta.model_validate(raw)
    except ValidationError as e:
        raise StoreError(f"{path}: the store's metadata is not valid:\n{e}") from None
    return group, meta


def clip_index(group: zarr.Group) -> list[ClipRef]:
    cv = group[L.CLIP_VIDEO]
    video_ids = cv.attrs["video_ids"]
    vid = cv[:]
    frames = group[L.CLIP_FRAMES][:]
    size = group[L.CLIP_SIZE][:]
    return [
        ClipRef(video_ids[v], tuple(int(f) for f in fr), int(s[0]), int(s[1]))
        for v, fr, s in zip(vid, frames, size)
    ]


@dataclass
class ClipTracks:
    index: int
    clip: ClipRef
    tracks: np.ndarray  # float32 [T, N, 2] (x, y) pixels of the source frame
    visibility: np.ndarray  # bool [T, N]


class StoreReader:
    def __init__(
        self,
        path: str | Path,  # or a URL, e.g. s3://bucket/stores/x.zarr
        require: Mapping[str, Any] | None = None,
        allow_incomplete: bool = False,
        cache_mb: float = 256,
    ):
        self.path: Location = location.as_location(path)
        group, self.meta = read_meta(self.path)
        self.spec = self.meta.spec
        if require:
            self.check(require)
        if not self.meta.complete and not allow_incomplete:
            st = group[L.STATUS][:]
            raise IncompleteStoreError(
                f"store {self.path} is incomplete: {int((st == L.PENDING).sum())} of {len(st)} clips "
                "are not written yet; finish it with mosic-precompute (same settings) first"
            )
        self.clips: list[ClipRef] = clip_index(group)
        self.status = group[L.STATUS][:]
        self.done = np.flatnonzero(self.status == L.DONE)
        self._cpc = self.meta.clips_per_chunk
        self._cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cached = 0
        self._group: zarr.Group | None = group
        self._pid = os.getpid()
        self._direct = direct_schema(self.path, self.meta)  # None: read through zarr

    # -- checks -------------------------------------------------------------------------------
    def check(self, require: Mapping[str, Any]) -> None:
        """Raise StoreError unless the spec has every ``field: value`` in ``require`` (dotted
        keys into the spec, e.g. ``{"grid": 16, "clips.length": 12, "tracker.name": "lk"}``)."""
        have = flatten(self.spec.model_dump(mode="json"))
        bad = []
        for k, want in require.items():
            if isinstance(want, tuple):
                want = list(want)
            if k not in have and not any(h.startswith(k + ".") for h in have):
                raise StoreError(f"unknown store spec field {k!r}; fields are: {', '.join(sorted(have))}")
            got = have.get(k)
            if got != want:
                bad.append(f"{k}: store has {got!r}, the experiment asks for {want!r}")
        if bad:
            raise StoreError(f"store {self.path} does not fit: " + "; ".join(bad))

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.clips)

    def _zgroup(self) -> zarr.Group:
        if self._group is None or self._pid != os.getpid():
            self._group = location.open_group(self.path, mode="r")
            self._pid = os.getpid()
            self._cache.clear()
            self._cached = 0
        return self._group

    def _chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(c)
        if hit is not None:
            self._cache.move_to_end(c)
            return hit
        a, b = c * self._cpc, min((c + 1) * self._cpc, len(self.clips))
        try:
            if self._direct is not None:
                shape = (self._cpc, self.spec.clips.length, self.spec.num_points)
                tr, vis = decode_chunk(self.path, c, shape, self.spec.coord_scale, self._direct)
                tr, vis = tr[: b - a], vis[: b - a]
            else:
                g = self._zgroup()
                tr = L.read_tracks(g, a, b, self.spec)
                vis = g[L.VISIBILITY][a:b]
        except Exception as e:  # noqa: BLE001 - any decode failure is a damaged chunk
            raise CorruptStoreError(
                f"store {self.path}: cannot read the chunk holding clips {a}..{b - 1} "
                f"({type(e).__name__}: {e}); the store is damaged, rebuild those clips"
            ) from None
        if tr.shape[0] != b - a:
            raise CorruptStoreError(f"store {self.path}: chunk {c} has {tr.shape[0]} clips, expected {b - a}")
        item = (tr, vis)
        if self._cache_bytes > 0:
            self._cache[c] = item
            self._cached += tr.nbytes + vis.nbytes
            while self._cached > self._cache_bytes and len(self._cache) > 1:
                _, (t0, v0) = self._cache.popitem(last=False)
                self._cached -= t0.nbytes + v0.nbytes
        return item

    def __getitem__(self, i: int) -> ClipTracks:
        i = int(i)
        if not 0 <= i < len(self.clips):
            raise IndexError(f"clip {i} out of range (store has {len(self.clips)})")
        if self.status[i] != L.DONE:
            why = "failed" if self.status[i] == L.FAILED else "not written yet"
            raise StoreError(f"store {self.path}: clip {i} ({self.clips[i].video_id}) has no tracks ({why})")
        c, r = divmod(i, self._cpc)
        tr, vis = self._chunk(c)
        return ClipTracks(i, self.clips[i], tr[r].copy(), vis[r].copy())

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_group"] = None
        d["_cache"] = OrderedDict()
        d["_cached"] = 0
        return d

    # -- summaries ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        st = self.status
        return {
            "path": str(self.path),
            "name": self.path.name,
            "complete": self.meta.complete,
            "clips": len(st),
            "done": int((st == L.DONE).sum()),
            "failed": int((st == L.FAILED).sum()),
            "pending": int((st == L.PENDING).sum()),
            "videos": len({c.video_id for c in self.clips}),
            "failures": [f.model_dump() for f in L.read_failures(self._zgroup(), self.meta)],
        }

    def visibility_rate(self, max_clips: int | None = None) -> float:
        g = self._zgroup()
        idx = self.done if max_clips is None else self.done[:max_clips]
        if len(idx) == 0:
            return float("nan")
        vis = g[L.VISIBILITY][int(idx.min()) : int(idx.max()) + 1]
        return float(vis[idx - idx.min()].mean())


def open_frame_source(reader: StoreReader, root: str | Path | None = None, verify: bool = True):
    """The frame source the store was made from: its recorded root, or ``root`` if given (a data
    set moved to another place). With ``verify``, its fingerprint must match the store's."""
    root = root or reader.meta.made_with.get("root")
    if not root:
        raise StoreError(f"store {reader.path} does not record where its frames are: pass --root")
    ds = reader.spec.dataset
    source = create_source(ds.kind, root, ds.split)
    if verify:
        fp = source.fingerprint()
        if fp != ds.fingerprint:
            raise StoreError(
                f"the {ds.kind} data under {root} (fingerprint {fp}) is not the data set store "
                f"{reader.path.name} was made from (fingerprint {ds.fingerprint}): videos, frame "
                "counts or frame sizes differ"
            )
    return source
