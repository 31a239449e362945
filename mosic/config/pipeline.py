"""Typed pipeline configuration, loaded from ``pipelines.yaml``.

A pipeline names a data set, how clips are cut from its videos, the tracker and the stores folder.
Every field can be overridden from the command line with a dotted key (``tracker.grid=8``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mosic import MosicError
from mosic.config.strict import load_yaml, validation_line
from mosic.config.slurm import SlurmSettings
from mosic.config.train import TrainSettings

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ClipSettings(BaseModel):
    """How clips are cut from a video (all in frames of the source video)."""

    model_config = _FROZEN

    length: int = Field(12, ge=2, description="frames per clip (T)")
    step: int = Field(6, ge=1, description="take every step-th frame")
    clips_per_video: int = Field(1, ge=1, description="clips per video, starts spread evenly")
    stride: int | None = Field(
        12, ge=1, description="frames between clip starts (training reads one of a video's clips per epoch, "
        "train.clip_sampling); when set, overrides clips_per_video"
    )
    short_videos: Literal["adapt", "skip"] = Field(
        "adapt",
        description="video shorter than one clip at `step`: 'adapt' uses step = frames // length "
        "(the official recipe), 'skip' records it as a failure",
    )
    track_size: tuple[int, int] | None = Field(
        None, description="(width, height) frames are resized to for tracking; None = as stored"
    )

    @field_validator("track_size")
    @classmethod
    def _positive_size(cls, v):
        if v is not None and (v[0] < 8 or v[1] < 8):
            raise ValueError("track_size must be at least 8 x 8 pixels")
        return v


class DatasetSettings(BaseModel):
    model_config = _FROZEN

    kind: str = Field("synthetic", description="frame source: ytvos | davis | videos | synthetic")
    root: str = Field("data/synthetic", description="the data set's folder")
    split: str = Field("train", description="split (ytvos/synthetic: train|valid; davis: 480p)")


class TrackerSettings(BaseModel):
    model_config = _FROZEN

    name: str = Field("cotracker3", description="cotracker3 (frozen CoTracker-v3 offline, an optional extra that "
                      "needs weights) | lk | oracle")
    grid: int = Field(30, ge=1, description="G: a G x G grid of query points on the first frame (30: dense enough "
                      "that every crop holds the 16 x 16 grid the loss uses, train.grid)")
    batch_size: int = Field(8, ge=1, description="clips per tracker call")
    checkpoint: str | None = Field(None, description="tracker weights file (cotracker3)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    visibility_threshold: float = Field(0.9, gt=0, lt=1, description="cotracker3 visibility cut")


class StoreLayout(BaseModel):
    model_config = _FROZEN

    clips_per_chunk: int = Field(16, ge=1, description="clips in one Zarr chunk (one file)")
    compression_level: int = Field(5, ge=1, le=22, description="zstd level")


class PipelineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    stores: str = Field("stores", description="folder that holds the trajectory stores")
    dataset: DatasetSettings = DatasetSettings()
    clips: ClipSettings = ClipSettings()
    tracker: TrackerSettings = TrackerSettings()
    store: StoreLayout = StoreLayout()
    train: TrainSettings = Field(TrainSettings(), description="training settings (mosic.config.train)")
    slurm: SlurmSettings = Field(SlurmSettings(), description="Slurm jobs of --slurm (mosic.config.slurm)")


def packaged_pipelines_file() -> Path:
    """The default pipelines that ship inside the package (a copy of the repository's file)."""
    return Path(str(resources.files("mosic") / "pipelines.yaml"))


def find_pipelines_file(path: str | os.PathLike | None = None) -> Path:
    """The pipelines file, first found of: an explicit path (``--config``), $MOSIC_PIPELINES,
    ``./pipelines.yaml`` in the working folder, the defaults shipped with the package."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MosicError(f"pipelines file not found: {p}")
        return p
    candidates = []
    if os.environ.get("MOSIC_PIPELINES"):
        env = Path(os.environ["MOSIC_PIPELINES"])
        if not env.is_file():
            raise MosicError(f"MOSIC_PIPELINES names a file that does not exist: {env}")
        return env
    candidates.append(Path.cwd() / "pipelines.yaml")
    candidates.append(packaged_pipelines_file())
    for c in candidates:
        if c.is_file():
            return c
    raise MosicError(
        "no pipelines.yaml found (looked at: " + ", ".join(str(c) for c in candidates) + "); "
        "pass --config PATH or set MOSIC_PIPELINES"
    )


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def read_pipelines(path: str | os.PathLike | None = None) -> dict[str, Any]:
    p = find_pipelines_file(path)
    try:
        data = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise MosicError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data.get("pipelines"), dict) or not data["pipelines"]:
        raise MosicError(f"{p}: expected a 'pipelines:' mapping with at least one pipeline")
    return data


def pipeline_names(path: str | os.PathLike | None = None) -> list[str]:
    return sorted(read_pipelines(path)["pipelines"])


def describe_pipelines(path: str | os.PathLike | None = None) -> str:
    """Which pipelines file is in force and the pipelines it holds (for ``--list-pipelines``)."""
    p = find_pipelines_file(path)
    pipes = read_pipelines(p)["pipelines"]
    lines = [f"pipelines file: {p}"]
    for name in sorted(pipes):
        ds = (pipes[name] or {}).get("dataset") or {}
        lines.append(f"  {name:<20} {ds.get('kind', '?')}: {ds.get('root', '')}")
    return "\n".join(lines)


def load_pipeline(
    name: str,
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> PipelineConfig:
    """Pipeline ``name`` from the pipelines file: its ``defaults`` merged with the pipeline's entry,
    then ``overrides`` (dotted keys, e.g. ``{"tracker.grid": 8}``; ``None`` values are ignored)."""
    data = read_pipelines(path)
    pipes = data["pipelines"]
    if name not in pipes:
        raise MosicError(
            f"unknown pipeline {name!r}; {find_pipelines_file(path)} has: {', '.join(sorted(pipes))}"
        )
    merged = _deep_merge(data.get("defaults") or {}, pipes[name] or {})
    merged["name"] = name
    return _validated(merged, overrides or {}, f"pipeline {name!r} is not valid")


def with_overrides(cfg: PipelineConfig, overrides: dict[str, Any]) -> PipelineConfig:
    """A copy of ``cfg`` with dotted-key overrides applied (``None`` values are ignored)."""
    return _validated(cfg.model_dump(), overrides, "invalid settings")


def _validated(raw: dict, overrides: dict[str, Any], what: str) -> PipelineConfig:
    """``raw`` with dotted-key ``overrides`` applied (``None`` values are ignored), as a PipelineConfig,
    or one line: ``what`` and the first bad field."""
    for k, v in overrides.items():
        if v is not None:
            _set_dotted(raw, k, v)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise MosicError(f"{what}: {validation_line(e, PipelineConfig)}") from None
