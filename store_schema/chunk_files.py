"""Decoding a local store's chunk files without zarr, for the reader's hot path.

zarr's per-read overhead is several times the decoding of one chunk, so :class:`StoreReader` reads
the files of ``tracks`` and ``visibility`` itself, only when their metadata is exactly what the
writer produces (anything else, and every URL, reads through zarr). The results are bit-identical
to zarr's: tests compare both paths chunk by chunk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import Shuffle, Zstd, blosc

from mosic.store_schema import layout as L
from mosic.store_schema import location
from mosic.store_schema.layout import StoreMeta
from mosic.store_schema.location import Location

#: codec settings that change only how hard the writer compressed, not how a chunk decodes
_ENCODE_ONLY = ("level", "clevel", "blocksize")


def _decoding_codecs(codecs: list) -> list:
    return [{"name": c["name"], "configuration": {k: v for k, v in (c.get("configuration") or {}).items()
                                                  if k not in _ENCODE_ONLY}} for c in codecs]


def _expected(meta: StoreMeta) -> dict[str, tuple[list, list, str, Any, list, dict]]:
    """Per array: shape, chunk shape, data type, fill value, decoding codecs and the attributes the
    direct decode relies on, as the writer makes them in the store's schema."""
    T, N, C, cpc = meta.spec.clips.length, meta.spec.num_points, meta.num_clips, meta.clips_per_chunk
    scale = meta.spec.coord_scale
    if meta.spec.schema_version >= 3:
        tracks = ("int32", 0, [
            {"name": "transpose", "configuration": {"order": list(L.TRACK_ORDER)}},
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "blosc", "configuration": {"typesize": 4, "cname": "zstd", "shuffle": "shuffle"}},
        ], {"scale_factor": 1 / scale})
    else:
        tracks = ("float32", 0.0, [
            {"name": "transpose", "configuration": {"order": [0, 2, 3, 1]}},
            {"name": "numcodecs.fixedscaleoffset",
             "configuration": {"offset": 0, "scale": scale, "dtype": "<f4", "astype": "<i4"}},
            {"name": "numcodecs.delta", "configuration": {"dtype": "<i4"}},
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}},
            {"name": "numcodecs.zstd", "configuration": {}},
        ], {})
    return {
        L.TRACKS: ([C, T, N, 2], [cpc, T, N, 2], *tracks),
        L.VISIBILITY: ([C, T, N], [cpc, T, N], "bool", False, [
            {"name": "bytes", "configuration": {}},
            {"name": "zstd", "configuration": {"checksum": False}},
        ], {}),
    }


def direct_schema(path: Location, meta: StoreMeta) -> int | None:
    """The store's schema version if the reader can decode its chunk files itself: a local store
    whose ``tracks`` and ``visibility`` are laid out and encoded exactly as the writer does with
    the default codec of that schema. None: read through zarr (always for a URL)."""
    if location.is_remote(path):
        return None
    for name, (shape, chunks, dtype, fill, codecs, attrs) in _expected(meta).items():
        try:
            z = json.loads((path / name / "zarr.json").read_text())
            ok = (
                z["shape"] == shape and z["data_type"] == dtype and z["fill_value"] == fill
                and z["chunk_grid"] == {"name": "regular", "configuration": {"chunk_shape": chunks}}
                and z["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                and not z.get("storage_transformers")
                and _decoding_codecs(z["codecs"]) == codecs
                and all(z.get("attributes", {}).get(k) == v for k, v in attrs.items())
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            return None
    return meta.spec.schema_version


def _read(path: Path, name: str, c: int, ndim: int) -> bytes | None:
    try:
        return path.joinpath(name, "c", str(c), *["0"] * (ndim - 1)).read_bytes()
    except FileNotFoundError:
        return None


def decode_chunk(path: Path, c: int, shape: tuple[int, int, int], coord_scale: int, schema: int):
    """Chunk ``c`` of ``tracks`` (float32 pixels) and ``visibility`` decoded from its files, as zarr
    and :func:`layout.decode_tracks` would: at the full chunk ``shape`` (clips, T, N) also at the
    array's end, fill values where no file is."""
    n, T, N = shape
    tracks = np.zeros((n, T, N, 2), np.float32)
    if (raw := _read(path, L.TRACKS, c, 4)) is not None:
        if schema >= 3:
            # blosc (byte shuffle, zstd) over int32 [n, 2, T, N]; int / coord_scale in float64, to float32
            fixed = np.frombuffer(blosc.decompress(raw), "<i4").reshape(n, 2, T, N)
            np.divide(fixed, coord_scale, out=tracks.transpose(0, 3, 1, 2), casting="unsafe")
        else:
            # byte-shuffled int32 [n, N, 2, T], delta-coded along the flattened chunk: numcodecs' Delta
            # and FixedScaleOffset(offset=0) decoders (divide in float64, round to float32) in place
            fixed = Shuffle(elementsize=4).decode(Zstd().decode(raw)).view("<i4")
            np.cumsum(fixed, out=fixed)
            np.divide(fixed.reshape(n, N, 2, T), coord_scale, out=tracks.transpose(0, 2, 3, 1), casting="unsafe")
    raw = _read(path, L.VISIBILITY, c, 3)
    vis = np.zeros((n, T, N), bool) if raw is None else np.frombuffer(Zstd().decode(raw), bool).reshape(n, T, N).copy()
    return tracks, vis
