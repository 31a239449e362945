"""What a trajectory store says about itself: pydantic models stored in its Zarr attributes.

A store is identified by its :class:`StoreSpec`: the data set (kind, split, fingerprint), how clips
were cut, the query grid, the tracker (name, version, weights hash, settings) and how coordinates
are quantised. Two experiments that ask for the same spec share one store; different specs never
mix, because the store's folder name carries a hash of the spec and a reader compares the spec.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mosic.config import ClipSettings

#: Bump on any change to the layout or the meaning of a field. The version is part of the spec, so
#: of the store's name: stores of two layouts never share a name.
#: 3: Zarr v3 spec codecs only; tracks are int32 multiples of 1/coord_scale px (``scale_factor``).
#: 2: clip failures in one group per chunk; float32 tracks through numcodecs' codecs.
SCHEMA_VERSION = 3
#: versions this mosic reads, and resumes in their own layout (``layout`` writes both)
READABLE_SCHEMA_VERSIONS = (2, 3)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class DatasetSpec(BaseModel):
    model_config = _FROZEN

    kind: str
    split: str
    fingerprint: str = Field(description="hash of video ids, frame counts and frame sizes")
    num_videos: int


class TrackerSpec(BaseModel):
    model_config = _FROZEN

    name: str
    version: str
    checkpoint_sha256: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class StoreSpec(BaseModel):
    """Everything that determines a store's content."""

    model_config = _FROZEN

    schema_version: int = SCHEMA_VERSION
    dataset: DatasetSpec
    clips: ClipSettings
    grid: int = Field(ge=1)
    tracker: TrackerSpec
    coord_scale: int = Field(
        64, ge=1, description="coordinates are stored as multiples of 1/coord_scale pixel"
    )
    frame_numbering: Literal["index", "raw"] = Field(
        "index",
        description="what clips.step and clips.stride counted: 'raw' frames of the original video "
        "(read from YouTube-VOS file names; every store made since this field exists) or frame "
        "'index'es (stores made before it, which lack the field). They differ only on data sets "
        "that keep some raw frames, such as YouTube-VOS 'train'",
    )

    @property
    def num_points(self) -> int:
        return self.grid * self.grid

    def in_schema(self, version: int) -> "StoreSpec":
        """The same content in the layout of schema ``version`` (another identity, another name)."""
        return self.model_copy(update={"schema_version": version})

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def key(self) -> str:
        """A short, stable hash of the spec."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:10]

    def store_name(self) -> str:
        """A readable folder name: ``<data>-<split>-<tracker>-g<G>-T<T>-s<step>[-<W>x<H>]-<hash>.zarr``."""
        c = self.clips
        size = f"-{c.track_size[0]}x{c.track_size[1]}" if c.track_size else ""
        safe_split = "".join(ch if ch.isalnum() else "_" for ch in self.dataset.split)
        return (
            f"{self.dataset.kind}-{safe_split}-{self.tracker.name}-g{self.grid}"
            f"-T{c.length}-s{c.step}{size}-{self.key()}.zarr"
        )


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def spec_differences(have: StoreSpec, want: StoreSpec) -> list[str]:
    """Human-readable lines ``field: store has A, asked for B`` for every differing field."""
    a = flatten(have.model_dump(mode="json"))
    b = flatten(want.model_dump(mode="json"))
    return [
        f"{k}: store has {a.get(k)!r}, asked for {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
