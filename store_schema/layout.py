"""The Zarr v3 layout of a trajectory store.

```
<name>.zarr/                 group; attrs["mosic"] = StoreMeta (spec, progress, failures)
  tracks      float32 [C, T, N, 2]  (x, y) pixels of the source frame, multiples of 1/coord_scale
  visibility  bool    [C, T, N]
  status      uint8   [C]           0 pending, 1 done, 2 failed
  clip_video  int32   [C]           index into attrs["video_ids"] of this array
  clip_frames int32   [C, T]        frame indices in the source video
  clip_size   int32   [C, 2]        (width, height) of the source frames
  failures/c<k>                     group per chunk k with failed clips: attrs["failures"]
```
All per-clip arrays are chunked along clips with the same number of clips per chunk, so one
chunk index names one file of each array and a chunk has exactly one writer.

Coordinates are compressed losslessly to 1/coord_scale pixel: quantised to int32 fixed point,
reordered so that a point's T positions are adjacent, delta-coded along time, byte-shuffled and
zstd-compressed (see ``bench/bench_store.py`` for the measurement behind this choice).
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from typing import Any

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
# an array's metadata. We chose them on purpose (see the module docstring), so say it once here.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")


def track_codecs(codec: str, coord_scale: int, level: int) -> dict[str, Any]:
    """create_array keyword arguments for the ``tracks`` array."""
    from zarr.codecs import TransposeCodec, ZstdCodec

    if codec == "zstd":  # float32 as is
        return {"compressors": ZstdCodec(level=level)}
    znc = _numcodecs()
    if codec == "fixed-delta-zstd":
        return {
            "filters": [
                TransposeCodec(order=(0, 2, 3, 1)),  # [C, N, 2, T]: a point's track is contiguous
                znc.FixedScaleOffset(offset=0, scale=coord_scale, dtype="<f4", astype="<i4"),
                znc.Delta(dtype="<i4"),
            ],
            "compressors": [znc.Shuffle(elementsize=4), znc.Zstd(level=level)],
        }
    if codec == "fixed-zstd":
        return {
            "filters": [znc.FixedScaleOffset(offset=0, scale=coord_scale, dtype="<f4", astype="<i4")],
            "compressors": [znc.Shuffle(elementsize=4), znc.Zstd(level=level)],
        }
    raise ValueError(f"unknown track codec {codec!r}")


TRACK_CODECS = ("fixed-delta-zstd", "fixed-zstd", "zstd")
DEFAULT_CODEC = "fixed-delta-zstd"


def quantize(tracks, coord_scale: int):
    """Round coordinates to the grid the store keeps (what a reader gets back)."""
    import numpy as np

    return (np.round(np.asarray(tracks, dtype=np.float64) * coord_scale) / coord_scale).astype(np.float32)
