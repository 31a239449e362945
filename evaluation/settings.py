"""The settings of every evaluation protocol, typed: one pydantic model per protocol whose defaults
are the ``paper`` preset (the settings of the reference implementations, docs/evaluation.md), the
``quick`` preset as data (what it changes), and the resolution a run uses: the paper defaults,
then the preset, then the run's own options, then ``--set PROTOCOL.KEY=VALUE``. The protocol
functions take their keyword defaults from these models, so a setting has one default; the
settings a figure was computed with, as ``OUT.json`` records them, are a model's dump.

Protocols and the models: ``linear`` :class:`LinearSettings`, ``clustering``
:class:`ClusteringSettings`, ``incontext`` :class:`IncontextSettings`, ``video``
:class:`VideoSettings`, ``consistency`` :class:`ConsistencySettings`.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mosic import MosicError
from mosic.config.strict import check_setting, validation_line

PROTOCOLS = ("linear", "clustering", "incontext", "video", "consistency")
PRESETS = ("paper", "quick")
#: what video segmentation clusters together: each frame, each clip, or the whole data set
VIDEO_MODES = ("frame", "clip", "dataset")

#: the standard deviation open-hummingbird-eval normalises with (its blue channel reads 0.255, a
#: typo of 0.225 that the published in-context figures were computed with)
HUMMINGBIRD_STD = (0.229, 0.224, 0.255)
#: the standard deviation TimeTuning's video evaluation normalises with (0.228, not ImageNet's 0.229)
TIMETUNING_STD = (0.228, 0.224, 0.225)


class ProtocolSettings(BaseModel):
    """A protocol's settings (every keyword of its function but the device and the progress bar)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LinearSettings(ProtocolSettings):
    """:func:`mosic.evaluation.protocols.linear.linear_segmentation` (NeCo ``linear_finetune.py``)."""

    img_size: int = 448
    feat_size: int = 100
    epochs: int = 25
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    step_at: int = 20
    batch_size: int = 128
    augment: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    flip: bool = True
    val_mask_size: int | None = 100
    seed: int = 0
    max_train: int | None = None
    class_rows: str = "reference"


class ClusteringSettings(ProtocolSettings):
    """:func:`mosic.evaluation.protocols.clustering.frozen_clustering` (NeCo ``eval_overcluster.py``)."""

    ks: tuple[int, ...] | None = None
    img_size: int = 448
    pca_dim: int | None = 50
    niter: int = 100
    nredo: int = 5
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    l2_normalize: bool = False
    mask_size: int | None = 100
    batch_size: int = 32
    matching: str = "reference"
    absent_classes: str = "zero"
    class_rows: str = "reference"
    resize: str = "reference"
    std_ddof: int = 0
    drop_last: tuple[str, ...] = ("voc",)


class IncontextSettings(ProtocolSettings):
    """:func:`mosic.evaluation.protocols.incontext.incontext_segmentation` (open-hummingbird-eval 2.0.0)."""

    fraction: float = 1.0
    img_size: int = 504
    memory_size: int | None = 10_240_000
    k: int = 30
    temperature: float = 0.02
    augment_passes: int = 2
    seed: int = 0
    batch_size: int = 16
    subsets: str = "reference"
    sampling: str = "reference"
    augmentation: str = "reference"
    crop_scale: tuple[float, float] = (0.5, 2.0)
    std: tuple[float, float, float] = HUMMINGBIRD_STD
    memory_ignore: str = "auto"
    memory_dtype: str = "float16"
    search: str = "auto"
    val_resolution: str = "input"
    matching: str = "hungarian"
    absent_classes: str = "zero"
    class_rows: str = "reference"


class VideoSettings(ProtocolSettings):
    """:func:`mosic.evaluation.protocols.video.video_segmentation` (TimeTuning's evaluation)."""

    mode: str = "frame"
    img_size: int = 224
    eval_size: int | None = None
    pca_dim: int = 50
    niter: int = 50
    nredo: int = 5
    seed: int = 0
    batch: int = 32
    max_clips: int | None = None
    ignore_index: int = 255  # the masks' void label, not scored (mosic.evaluation.datasets.IGNORE)
    k: int | None = 10
    pca_clips: int = 16
    normalize: bool = False
    dataset_img_size: int | None = 112
    aggregate: str = "batch"
    upsample_dtype: str = "float64"
    std: tuple[float, float, float] | None = TIMETUNING_STD


class ConsistencySettings(ProtocolSettings):
    """:func:`mosic.evaluation.protocols.video.temporal_consistency` (mosic's, on the synthetic set)."""

    split: str = "valid"
    img_size: int = 112
    frames_per_video: int = 4
    step: int = 6
    max_videos: int | None = None
    clusters: int = 24
    seed: int = 0


class EvalSettings(BaseModel):
    """Every protocol's settings under its name: the keys of ``--set PROTOCOL.KEY=VALUE``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    linear: LinearSettings = LinearSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    incontext: IncontextSettings = IncontextSettings()
    video: VideoSettings = VideoSettings()
    consistency: ConsistencySettings = ConsistencySettings()


#: protocol -> its settings model
SETTINGS: dict[str, type[ProtocolSettings]] = {p: EvalSettings.model_fields[p].annotation for p in PROTOCOLS}

#: what each preset changes from the paper defaults; ``quick``: scaled down for a CPU demo
PRESET_CHANGES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    "quick": {
        "linear": dict(img_size=112, feat_size=28, epochs=3, step_at=2, batch_size=16, augment=False, val_mask_size=28),
        "clustering": dict(img_size=112, niter=10, nredo=1, seeds=(0,)),
        "incontext": dict(img_size=112, memory_size=10_240, augment_passes=1),
        "video": dict(img_size=112, eval_size=56, niter=10, nredo=1),
        "consistency": dict(img_size=112, max_videos=6),
    },
}


def check_sets(protocol: str, user: dict[str, Any]) -> None:
    """Refuse a ``--set PROTOCOL.KEY=VALUE`` of ``protocol`` whose key the protocol does not have
    (naming the nearest) or whose value does not fit the setting's type, in one line."""
    for key, value in user.items():
        check_setting(EvalSettings, f"{protocol}.{key}", value)


def resolve(protocol: str, preset: str = "paper", fixed: dict[str, Any] | None = None,
            user: dict[str, Any] | None = None) -> ProtocolSettings:
    """The settings ``protocol`` runs with: its paper defaults, then the preset's changes, then
    ``fixed`` (the run's own options, e.g. the seed; keys the protocol does not have and None
    values left out), then ``user`` (``--set``)."""
    if preset not in PRESETS:
        raise MosicError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    model = SETTINGS[protocol]
    values = dict(PRESET_CHANGES[preset].get(protocol, {}))
    values.update({k: v for k, v in (fixed or {}).items() if k in model.model_fields and v is not None})
    values.update(user or {})
    try:
        return model(**values)
    except ValidationError as e:
        raise MosicError(f"{protocol} settings: {validation_line(e, model)}") from None


def recorded(settings: ProtocolSettings) -> dict[str, Any]:
    """The settings as a results row records them (JSON values: tuples become lists)."""
    return settings.model_dump(mode="json")


def settings_yaml(protocols: list[str], preset: str, user: dict[str, dict[str, Any]]) -> str:
    """The settings of ``protocols`` (in the order they run) after the preset and ``--set``, as YAML
    headed by a comment saying what a run still sets from its own options (``--print-config``)."""
    data = {"preset": preset}
    data.update({p: recorded(resolve(p, preset, None, user.get(p))) for p in PROTOCOLS if p in protocols})
    head = (f"# mosic-eval run: the protocols' settings, preset {preset!r} and --set applied. Where --set does not\n"
            "# set them, a run also takes img_size from --img-size (rounded to the backbone's patch), the seeds\n"
            "# from --seed, clustering.ks from --ks, incontext.fraction and seed from --fractions and\n"
            "# --fraction-seeds, video.mode from --video-modes and consistency.split from the synthetic set.\n")
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
