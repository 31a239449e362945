"""The Zarr v3 layout of a trajectory store.

```
<name>.zarr/                 group; attrs["mosic"] = StoreMeta (spec, progress, failures)
  tracks      int32   [C, T, N, 2]  (x, y) pixels of the source frame times coord_scale; pixels =
                                    value * attrs["scale_factor"] (= value / coord_scale)
  visibility  bool    [C, T, N]
  status      uint8   [C]           0 pending, 1 done, 2 failed
  clip_video  int32   [C]           index into attrs["video_ids"] of this array
  clip_frames int32   [C, T]        frame indices in the source video
  clip_size   int32   [C, 2]        (width, height) of the source frames
  failures/c<k>                     group per chunk k with failed clips: attrs["failures"]
```
All per-clip arrays are chunked along clips with the same number of clips per chunk, so one
chunk index names one file of each array and a chunk has exactly one writer.

Schema 3 (the current one) uses only codecs of the Zarr v3 core spec, so any Zarr v3 reader
(zarr-python, tensorstore, zarrs, zarr-js) decodes every array to the same numbers. Coordinates
are stored losslessly as int32 multiples of 1/coord_scale pixel (the CF ``scale_factor``
attribute), reordered so that each chunk holds [clips, xy, T, N] (a frame's points adjacent, x
before y), byte-shuffled and zstd-compressed by ``blosc``: ``bench/bench_store.py`` measures this
against the alternatives.

Schema 2 (stores made before) keeps float32 ``tracks`` behind numcodecs' codecs (fixed point, delta
along time, shuffle, zstd), which only zarr-python reads. Such stores stay readable, and an
incomplete one is finished in its own layout; ``mosic-store convert`` rewrites it in schema 3.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mosic.store_schema.spec import StoreSpec

TRACKS = "tracks"
VISIBILITY = "visibility"
STATUS = "status"
CLIP_VIDEO = "clip_video"
CLIP_FRAMES = "clip_frames"
CLIP_SIZE = "clip_size"
FAILURES = "failures"  # one child group per chunk, written by that chunk's only writer

PENDING, DONE, FAILED = 0, 1, 2
ATTR_KEY = "mosic"


class Failure(BaseModel):
    model_config = ConfigDict(frozen=True)

    video_id: str
    clip: int | None = None  # None: the whole video (e.g. too short to cut one clip)
    reason: str


class StoreMeta(BaseModel):
    """The group attribute ``mosic``: the spec plus the store's state."""

    model_config = ConfigDict(extra="forbid")

    spec: StoreSpec
    num_clips: int
    clips_per_chunk: int
    codec: str
    complete: bool = False
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    completed: str | None = None
    made_with: dict[str, Any] = Field(default_factory=dict)
    plan_failures: list[Failure] = Field(default_factory=list)  # videos that gave no clip


def chunk_failures_key(chunk: int) -> str:
    return f"c{chunk}"


def read_failures(group, meta: StoreMeta) -> list[Failure]:
    """Whole-video failures from planning, then failed clips in clip order."""
    clip_failures: list[Failure] = []
    if FAILURES in group:
        for _, child in group[FAILURES].groups():
            clip_failures += [Failure.model_validate(f) for f in child.attrs.get("failures", [])]
    return list(meta.plan_failures) + sorted(clip_failures, key=lambda f: f.clip)


def _numcodecs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from zarr.codecs import numcodecs as znc
    return znc


# numcodecs' codecs are not in the Zarr v3 core spec; zarr warns about that each time it parses
# the metadata of a schema 2 array. Such stores are still read, so say it once here.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")

#: the track codecs of each schema version, its default first. Within a version every codec keeps
#: the same values (coordinates on the 1/coord_scale pixel grid); only size and speed differ.
TRACK_CODECS: dict[int, tuple[str, ...]] = {
    3: ("fixed-shuffle-zstd",),
    2: ("fixed-delta-zstd", "fixed-zstd", "zstd"),
}

#: ``dimension_names`` of the arrays in schema 3 (tensorstore labels its axes with them)
DIMENSIONS: dict[str, tuple[str, ...]] = {
    TRACKS: ("clip", "frame", "point", "xy"),
    VISIBILITY: ("clip", "frame", "point"),
    STATUS: ("clip",),
    CLIP_VIDEO: ("clip",),
    CLIP_FRAMES: ("clip", "frame"),
    CLIP_SIZE: ("clip", "wh"),
}

#: schema 3: the axis order of ``tracks`` inside a chunk, [clips, xy, T, N]
TRACK_ORDER = (0, 3, 1, 2)


def default_codec(version: int) -> str:
    if version not in TRACK_CODECS:
        raise ValueError(f"store schema {version} has no layout here: choose one of {sorted(TRACK_CODECS)}")
    return TRACK_CODECS[version][0]


def blosc_level(level: int) -> int:
    """Blosc's clevel (1-9) that runs zstd at about ``level``: blosc runs zstd at 2 * clevel - 1."""
    return max(1, min(9, (level + 1) // 2))


def dimension_names(version: int, name: str) -> tuple[str, ...] | None:
    return DIMENSIONS[name] if version >= 3 else None


def tracks_array(version: int, codec: str, coord_scale: int, level: int, chunks: tuple[int, ...]) -> dict[str, Any]:
    """create_array keyword arguments (dtype, codecs, attributes) for the ``tracks`` array."""
    from zarr.codecs import BloscCodec, TransposeCodec, ZstdCodec

    if codec not in TRACK_CODECS.get(version, ()):
        raise ValueError(f"unknown track codec {codec!r} for store schema {version}: "
                         f"choose one of {', '.join(TRACK_CODECS.get(version, ()))}")
    if codec == "fixed-shuffle-zstd":
        block = 4 * int(np.prod(chunks))  # one blosc block per chunk: better ratio than blosc's small default
        return {
            "dtype": "int32", "fill_value": 0, "dimension_names": DIMENSIONS[TRACKS],
            "filters": [TransposeCodec(order=TRACK_ORDER)],
            "compressors": BloscCodec(cname="zstd", clevel=blosc_level(level), shuffle="shuffle", typesize=4,
                                      blocksize=block),
            "attributes": {"scale_factor": 1 / coord_scale, "units": "pixel",
                           "long_name": "(x, y) in pixels of the source frame, pixel centres at col + 0.5, "
                                        "row + 0.5: value * scale_factor"},
        }
    legacy = {"dtype": "float32", "fill_value": 0.0}
    if codec == "zstd":  # float32 as is
        return {**legacy, "compressors": ZstdCodec(level=level)}
    znc = _numcodecs()
    fixed = znc.FixedScaleOffset(offset=0, scale=coord_scale, dtype="<f4", astype="<i4")
    compressors = [znc.Shuffle(elementsize=4), znc.Zstd(level=level)]
    if codec == "fixed-delta-zstd":
        # [C, N, 2, T]: a point's track is contiguous, delta-coded along time
        return {**legacy, "filters": [TransposeCodec(order=(0, 2, 3, 1)), fixed, znc.Delta(dtype="<i4")],
                "compressors": compressors}
    return {**legacy, "filters": [fixed], "compressors": compressors}  # fixed-zstd


def fixed_point(tracks, coord_scale: int) -> np.ndarray:
    """Coordinates as float64 multiples of 1/coord_scale pixel, rounded: what a store keeps."""
    return np.round(np.asarray(tracks, dtype=np.float64) * coord_scale)


def quantize(tracks, coord_scale: int) -> np.ndarray:
    """Round coordinates to the grid the store keeps (what a reader gets back)."""
    return (fixed_point(tracks, coord_scale) / coord_scale).astype(np.float32)


INT32_MAX = 2**31 - 1


def encode_tracks(tracks, spec: StoreSpec) -> np.ndarray:
    """What the ``tracks`` array of a store of ``spec`` holds for float32 pixel ``tracks``."""
    fixed = fixed_point(tracks, spec.coord_scale)
    if spec.schema_version < 3:
        out = (fixed / spec.coord_scale).astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError("non-finite coordinates in a clip marked done")
        return out
    if not np.isfinite(fixed).all():
        raise ValueError("non-finite coordinates in a clip marked done")
    if fixed.size and np.abs(fixed).max() > INT32_MAX:
        raise ValueError(f"coordinates beyond +-{INT32_MAX // spec.coord_scale} px do not fit the store's "
                         f"int32 multiples of 1/{spec.coord_scale} px")
    return fixed.astype(np.int32)


def decode_tracks(stored: np.ndarray, spec: StoreSpec) -> np.ndarray:
    """float32 pixels from what the ``tracks`` array holds (schema 3: int32 / coord_scale)."""
    if spec.schema_version < 3:
        return np.asarray(stored, dtype=np.float32)
    return (stored / spec.coord_scale).astype(np.float32)


def read_tracks(group, start: int, stop: int, spec: StoreSpec) -> np.ndarray:
    """float32 pixel tracks of clips ``start:stop`` read through zarr, in either layout."""
    return decode_tracks(group[TRACKS][start:stop], spec)
