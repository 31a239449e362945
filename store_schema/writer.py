"""Creating a store and writing clips into it.

Rules that keep a store honest:
- a new local store is built under a temporary name and renamed into place, so a half-created
  store never appears under the real name. Object storage (a URL, see
  :mod:`mosic.store_schema.location`) has no atomic rename: a remote store is created in place, its
  ``mosic`` attributes written last, so a half-created remote store has none and is never taken
  for a store (nor, having ``complete`` unset, for a complete one);
- a chunk of clips has exactly one writer and is written whole (tracks, visibility, then status:
  a clip counts as written only once its status is);
- ``complete`` is set last, and only after a check that no clip is pending;
- a store keeps the layout it was created with (its schema version): an older store asked for again
  is finished in its own layout, never extended in another.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError

from mosic import MosicError
from mosic.data.base import ClipRef
from mosic.store_schema import layout as L
from mosic.store_schema import location
from mosic.store_schema.layout import Failure, StoreMeta
from mosic.store_schema.reader import clip_index, read_meta
from mosic.store_schema.spec import StoreSpec, spec_differences


class StoreMismatchError(MosicError):
    pass


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


class StoreWriter:
    def __init__(self, path: location.Location, group: zarr.Group, meta: StoreMeta):
        self.path = path
        self.group = group
        self.meta = meta
        self.spec = meta.spec

    # -- creation / reopening -----------------------------------------------------------------
    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        spec: StoreSpec,
        clips: Sequence[ClipRef],
        plan_failures: Iterable[Failure] = (),
        clips_per_chunk: int = 16,
        codec: str | None = None,
        compression_level: int = 5,
        made_with: dict | None = None,
    ) -> "StoreWriter":
        """Open the store at ``path`` for writing, creating it if it does not exist.

        An existing store must have been made with exactly ``spec`` and the same clips, or with the
        same content in an older layout (a schema version this mosic still reads), which is then
        written in its own layout. A new store takes ``spec``'s schema version and ``codec`` (default:
        that version's). ``path`` may be a URL (``s3://bucket/stores/x.zarr``): see
        :meth:`_open_or_create_remote`."""
        path = location.as_location(path)
        if location.is_remote(path):
            return cls._open_or_create_remote(path, spec, clips, list(plan_failures), clips_per_chunk,
                                              codec, compression_level, made_with or {})
        if path.exists():
            return cls._open_matching(path, spec, clips)
        if not clips:
            raise MosicError("refusing to create a store with no clips")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
        try:
            _create(tmp, spec, clips, list(plan_failures), clips_per_chunk, codec, compression_level,
                    made_with or {})
            try:
                os.rename(tmp, path)
            except OSError:
                if path.exists():  # another process created it first: use theirs if it fits
                    shutil.rmtree(tmp, ignore_errors=True)
                    return cls.open_or_create(path, spec, clips, plan_failures, clips_per_chunk,
                                              codec, compression_level, made_with)
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(path)

    @classmethod
    def _open_matching(cls, path: location.Location, spec: StoreSpec, clips: Sequence[ClipRef]) -> "StoreWriter":
        w = cls.open(path)
        if w.spec.schema_version != spec.schema_version:
            spec = spec.in_schema(w.spec.schema_version)  # read_meta took its version: go on in its layout
        diffs = spec_differences(w.spec, spec)
        if diffs:
            raise StoreMismatchError(
                f"a store at {path} was made with another spec ({'; '.join(diffs)}): re-run with the store's "
                "settings to go on with it, or use another --stores folder or --store path, or delete that store"
            )
        w._check_clips(clips)
        return w

    #: how long a process waits for a remote store another process is creating (seconds)
    REMOTE_CREATE_WAIT = 60.0

    @classmethod
    def _open_or_create_remote(cls, url: location.URL, spec, clips, plan_failures, cpc, codec, level,
                               made_with) -> "StoreWriter":
        """Object storage cannot rename a folder atomically, so a remote store is created in place:
        the group, its arrays and the clip index first, the ``mosic`` attributes (the spec) last.
        Until then the group is not a mosic store, so no reader or writer uses it; ``complete``
        is still set only by :meth:`finalize`. A process that finds such a half-created store (a
        shard started at the same time) waits up to ``REMOTE_CREATE_WAIT`` seconds for its
        creator to finish; if it does not, the creation was interrupted and the store must be
        deleted by hand (unlike a local temporary folder, nothing removes it automatically)."""
        if not location.exists(url):
            if not clips:
                raise MosicError("refusing to create a store with no clips")
            try:
                _create(url, spec, clips, plan_failures, cpc, codec, level, made_with)
            except (FileExistsError, ContainsArrayError, ContainsGroupError):
                pass  # another process is creating it (zarr's mode "w-" found it): wait for it below
            else:
                return cls.open(url)
        deadline = time.monotonic() + cls.REMOTE_CREATE_WAIT
        while True:
            attrs = location.open_group(url, mode="r").attrs
            if L.ATTR_KEY in attrs:
                return cls._open_matching(url, spec, clips)
            if time.monotonic() > deadline:
                raise MosicError(
                    f"{url} holds a half-created store (no '{L.ATTR_KEY}' attributes after waiting "
                    f"{cls.REMOTE_CREATE_WAIT:.0f} s): its creation was interrupted; delete it and re-run"
                )
            time.sleep(1.0)

    @classmethod
    def open(cls, path: str | Path) -> "StoreWriter":
        path = location.as_location(path)
        group, meta = read_meta(path, mode="r+")
        return cls(path, group, meta)

    def _check_clips(self, clips: Sequence[ClipRef]) -> None:
        have = clip_index(self.group)
        if have != list(clips):
            raise StoreMismatchError(
                f"the store at {self.path} holds another list of clips ({len(have)} clips) than "
                f"planned now ({len(clips)}); its data set changed? Delete the store to rebuild it"
            )

    # -- state --------------------------------------------------------------------------------
    @property
    def num_clips(self) -> int:
        return self.meta.num_clips

    def status(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Clip outcomes (PENDING / DONE / FAILED) of clips ``start:stop``, read from the store."""
        return self.group[L.STATUS][start:stop]

    def chunk_ranges(self) -> list[tuple[int, int]]:
        return _chunks(self.num_clips, self.meta.clips_per_chunk)

    def todo(self, retry_failed: bool = True, shard: tuple[int, int] = (0, 1)) -> list[tuple[int, int, np.ndarray]]:
        """Chunks that still have work: (start, stop, clip indices to (re)do). With ``shard=(i, n)``
        only chunks k with k % n == i: n processes given i = 0..n-1 write disjoint chunks."""
        i, n = shard
        if not 0 <= i < n:
            raise MosicError(f"shard {i}/{n}: the index must be in 0..{n - 1}")
        st = self.status()
        redo = (st == L.PENDING) | ((st == L.FAILED) if retry_failed else False)
        out = []
        for a, b in self.chunk_ranges()[i::n]:
            idx = np.flatnonzero(redo[a:b]) + a
            if len(idx):
                out.append((a, b, idx))
        return out

    # -- writing ------------------------------------------------------------------------------
    def write_chunk(
        self,
        start: int,
        tracks: np.ndarray,
        visibility: np.ndarray,
        status: np.ndarray,
        failures: Sequence[Failure] = (),
    ) -> None:
        """Write clips ``start .. start + len(tracks)``, a whole chunk. ``status`` gives each clip's
        outcome (DONE / FAILED); tracks of failed clips are ignored (written as zeros)."""
        cpc = self.meta.clips_per_chunk
        n = len(tracks)
        if start % cpc or (n != cpc and start + n != self.num_clips):
            raise ValueError(f"write_chunk({start}, n={n}) is not a whole chunk of {cpc} clips")
        status = np.asarray(status, dtype=np.uint8)
        if np.any(status == L.PENDING):
            raise ValueError("write_chunk needs an outcome (done or failed) for every clip")
        T, N = self.spec.clips.length, self.spec.num_points
        if tracks.shape != (n, T, N, 2) or visibility.shape != (n, T, N):
            raise ValueError(f"chunk arrays {tracks.shape} / {visibility.shape} do not fit [n, {T}, {N}, 2]")
        tracks = np.where((status == L.DONE)[:, None, None, None], tracks, 0)
        # every layout keeps the same values: coordinates on the 1/coord_scale pixel grid
        tracks = L.encode_tracks(tracks, self.spec)
        visibility = visibility & (status == L.DONE)[:, None, None]
        self.group[L.TRACKS][start:start + n] = tracks
        self.group[L.VISIBILITY][start:start + n] = visibility
        # status last: a clip is written once its status says so
        self.group[L.STATUS][start:start + n] = status
        self._record_failures(start, start + n, failures)

    def _record_failures(self, a: int, b: int, new: Sequence[Failure]) -> None:
        # failures live in a group of their own per chunk, so concurrent writers of other chunks
        # never rewrite them
        key = L.chunk_failures_key(a // self.meta.clips_per_chunk)
        fails = self.group[L.FAILURES]
        if new:
            fails.require_group(key).attrs["failures"] = [f.model_dump(mode="json") for f in new]
        elif key in fails:
            fails[key].attrs["failures"] = []

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 pixel tracks and visibility of clips ``start:stop`` as written so far."""
        return L.read_tracks(self.group, start, stop, self.spec), self.group[L.VISIBILITY][start:stop]

    def failures(self) -> list[Failure]:
        return L.read_failures(self.group, self.meta)

    def _save_meta(self) -> None:
        self.group.attrs[L.ATTR_KEY] = self.meta.model_dump(mode="json")

    def finalize(self) -> bool:
        """Mark the store complete if no clip is pending. Returns whether it is complete."""
        st = self.status()
        if np.any(st == L.PENDING):
            return False
        if not self.meta.complete:
            self.meta.complete = True
            self.meta.completed = datetime.now(timezone.utc).isoformat()
            self._save_meta()
        return True


def _create(
    path: location.Location,
    spec: StoreSpec,
    clips: Sequence[ClipRef],
    plan_failures: list[Failure],
    cpc: int,
    codec: str | None,
    level: int,
    made_with: dict,
) -> None:
    C, T, N = len(clips), spec.clips.length, spec.num_points
    cpc = max(1, min(cpc, C))
    version = spec.schema_version
    codec = codec or L.default_codec(version)
    if codec == "fixed-delta-zstd" and N == 1:
        # With one point per clip the transposed chunk [cpc, 1, 2, T] can be F-contiguous (cpc = 1);
        # numcodecs' Delta then flattens it in F order while zarr decodes in C order, and the round
        # trip scrambles x and t (found by tests/test_store_properties.py). Skip the transpose.
        codec = "fixed-zstd"
    tracks = L.tracks_array(version, codec, spec.coord_scale, level, (cpc, T, N, 2))  # checks the codec first
    root = location.open_group(path, mode="w-")
    zstd = {"compressors": ZstdCodec(level=level)}

    root.create_array(L.TRACKS, shape=(C, T, N, 2), chunks=(cpc, T, N, 2), **tracks)
    root.create_array(L.VISIBILITY, shape=(C, T, N), chunks=(cpc, T, N), dtype="bool",
                      fill_value=False, **zstd, dimension_names=L.dimension_names(version, L.VISIBILITY))
    root.create_array(L.STATUS, shape=(C,), chunks=(cpc,), dtype="uint8", fill_value=L.PENDING, **zstd,
                      dimension_names=L.dimension_names(version, L.STATUS))
    root.create_group(L.FAILURES)

    video_ids = sorted({c.video_id for c in clips})
    vindex = {v: i for i, v in enumerate(video_ids)}
    frames = np.array([c.frames for c in clips], dtype=np.int32)
    if frames.shape != (C, T):
        raise ValueError(f"clips must have {T} frames each")
    cv = root.create_array(L.CLIP_VIDEO, shape=(C,), chunks=(C,), dtype="int32", **zstd,
                           dimension_names=L.dimension_names(version, L.CLIP_VIDEO))
    cv[:] = np.array([vindex[c.video_id] for c in clips], dtype=np.int32)
    cv.attrs["video_ids"] = video_ids
    root.create_array(L.CLIP_FRAMES, shape=(C, T), chunks=(C, T), dtype="int32", **zstd,
                      dimension_names=L.dimension_names(version, L.CLIP_FRAMES))[:] = frames
    root.create_array(L.CLIP_SIZE, shape=(C, 2), chunks=(C, 2), dtype="int32", **zstd,
                      dimension_names=L.dimension_names(version, L.CLIP_SIZE))[:] = np.array(
        [(c.width, c.height) for c in clips], dtype=np.int32
    )
    meta = StoreMeta(
        spec=spec, num_clips=C, clips_per_chunk=cpc, codec=codec, made_with=made_with,
        plan_failures=plan_failures,
    )
    root.attrs[L.ATTR_KEY] = meta.model_dump(mode="json")
