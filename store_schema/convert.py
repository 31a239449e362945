"""Rewriting a store of an older layout in the current one (``mosic-store convert``).

The new store is written beside the old one under its own name (the schema version is part of the
spec, so of the name), never in place: the old store stays as it was until its owner removes it.
Spec (but for the schema version), clip index, clip outcomes, failures and ``made_with`` are kept;
every chunk is read back from the new store and compared with the old before the new one is marked
complete. The writer's rules hold: a store interrupted while being converted is incomplete, and
converting again finishes it.
"""

from __future__ import annotations

import json
import shlex

import numpy as np

import mosic
from mosic import MosicError
from mosic.store_schema import layout as L
from mosic.store_schema import location
from mosic.store_schema.location import Location
from mosic.store_schema.reader import CorruptStoreError, StoreReader
from mosic.store_schema.spec import SCHEMA_VERSION, StoreSpec
from mosic.store_schema.writer import StoreWriter


def _value(v) -> str:
    return "null" if v is None else json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else str(v)


def finish_command(path: Location, reader: StoreReader) -> str:
    """The command that finishes the incomplete store at ``path`` with the settings in its spec."""
    meta, spec = reader.meta, reader.spec
    if not np.any(reader.status == L.PENDING):  # every clip written by shards, not yet marked
        return f"mosic-store finalize {path}"
    made = meta.made_with
    parts = ["mosic-precompute", "--pipeline", made.get("pipeline", "PIPELINE"), "--dataset", spec.dataset.kind,
             "--root", made.get("root", "ROOT"), "--split", spec.dataset.split, "--tracker", spec.tracker.name,
             "--grid", str(spec.grid)]
    if spec.tracker.checkpoint_sha256:
        parts += ["--checkpoint", "WEIGHTS"]
    for k, v in spec.clips.model_dump(mode="json").items():
        parts += ["--set", f"clips.{k}={_value(v)}"]
    return shlex.join(parts + ["--store", str(path)])


def converted_path(src: Location, spec: StoreSpec) -> Location:
    """Where the converted store goes: beside ``src``, under the name of its spec in this layout."""
    return location.as_location(src).parent / spec.in_schema(SCHEMA_VERSION).store_name()


def convert_store(src: str, dst: str | None = None, compression_level: int = 5) -> Location:
    """Write the complete store ``src`` in the current layout at ``dst`` (default: beside it, named
    from its spec); returns the new store's path. A complete store already at ``dst`` with the same
    content is kept as it is."""
    src = location.as_location(src)
    reader = StoreReader(src, allow_incomplete=True)
    if reader.spec.schema_version == SCHEMA_VERSION:
        raise MosicError(f"{src} already has the current layout (store schema {SCHEMA_VERSION}): nothing to convert")
    if not reader.meta.complete:
        pending = int(np.sum(reader.status == L.PENDING))
        raise MosicError(f"{src} is incomplete ({pending} of {len(reader)} clips not written): finish it with "
                         f"`{finish_command(src, reader)}`, then convert it")
    spec = reader.spec.in_schema(SCHEMA_VERSION)
    dst = location.as_location(dst) if dst else converted_path(src, reader.spec)
    if location.as_location(dst) == src:
        raise MosicError(f"--out {dst} is the store itself: a store is converted beside itself, never in place")
    meta = reader.meta
    writer = StoreWriter.open_or_create(
        dst, spec, reader.clips, meta.plan_failures, clips_per_chunk=meta.clips_per_chunk,
        compression_level=compression_level,
        made_with={**meta.made_with, "converted_from": str(src), "converted_with": mosic.__version__},
    )
    group = reader._zgroup()
    failed = [f for f in L.read_failures(group, meta) if f.clip is not None]
    for a, b, _ in writer.todo(retry_failed=False):
        tracks = L.read_tracks(group, a, b, reader.spec)
        vis = group[L.VISIBILITY][a:b]
        status = reader.status[a:b]
        writer.write_chunk(a, tracks, vis, status, [f for f in failed if a <= f.clip < b])
        back, back_vis = writer.read(a, b)
        done = status == L.DONE
        if not (np.array_equal(back[done], tracks[done]) and np.array_equal(back_vis[done], vis[done])):
            raise CorruptStoreError(f"{dst}: clips {a}..{b - 1} read back other values than {src} holds; "
                                    "delete the new store and convert again")
    writer.finalize()
    return dst
