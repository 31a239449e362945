"""Typed training settings: the ``train:`` section of a pipeline in ``pipelines.yaml``.

Defaults are the published MoSiC recipe (the paper and the official training script): ViT-S/14 DINOv2, last two blocks,
K = 100 prototypes, EMA 0.99, temperature 0.1, Sinkhorn eps 0.06 x 3 iterations, AdamW (backbone
1e-5, head 1e-4, weight decay 0.01), cosine to 0, a global batch of 64 clips, 8 epochs, 224 px crops.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from mosic import MosicError
from mosic.config.strict import validation_line

_STRICT = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(BaseModel):
    model_config = _STRICT

    name: str = "vit_small_patch14_dinov2.lvd142m"
    pretrained: bool = True
    weights: str | None = Field(None, description="local weights: timm state dict or official DINOv3 / DINOv2 / DINO / EVA-02 / EVA-CLIP checkpoint")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model arguments")
    img_size: int = Field(224, ge=14)
    train_blocks: int = Field(2, ge=0, description="train the last N blocks (train_blocks_rule: last)")
    train_blocks_rule: Literal["last", "official_names"] = Field(
        "last", description="last: the last train_blocks blocks; official_names: the blocks whose parameter names "
        "contain blocks.10 / blocks.11 (the official rule: blocks 10-11 of ViT-L's 24)")
    head_hidden: tuple[int, ...] = (1024, 1024, 512)
    head_dim: int = 256
    num_prototypes: int = Field(100, ge=2)
    prototype_grad: Literal["raw", "normalized"] = Field(
        "raw", description="raw: scores multiply by the prototype parameter (renormalised at the start of each "
        "step), its gradient keeps its radial part (official); normalized: scores through F.normalize(prototypes)")


class LossSettings(BaseModel):
    model_config = _STRICT

    temperature: float = Field(0.1, gt=0)
    sinkhorn_eps: float = Field(0.06, gt=0)
    sinkhorn_iters: int = Field(3, ge=1)
    hard: bool = Field(True, description="one-hot teacher targets (argmax of Sinkhorn); False: soft")
    symmetric: bool = Field(False, description="add student(frame t) vs teacher(first frame) term")
    symmetric_weight: float = 1.0
    normalize: Literal["visible", "all"] = Field(
        "visible", description="divide by the visible (and unmasked) terms, or by B*T*N as the official code"
    )
    marginals: Literal["visible", "all"] = Field(
        "visible", description="points in the Sinkhorn marginals: visible only, or all (official)"
    )
    teacher_sampling: Literal["bilinear", "nearest"] = "bilinear"
    student_sampling: Literal["bilinear", "nearest"] = "nearest"


class OptimSettings(BaseModel):
    model_config = _STRICT

    lr_backbone: float = 1e-5
    lr_head: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    clip_grad: float = Field(0.0, ge=0, description="max gradient norm; 0 = off")


class ValidateSettings(BaseModel):
    """In-training validation (train/validate.py)."""

    model_config = _STRICT

    every: int = Field(55, ge=0, description="validate every N optimiser steps (step 0 included) and at the end; "
                       "0: off; 55: about once per epoch of YouTube-VOS at batch 64")
    protocols: tuple[Literal["clustering", "incontext"], ...] = Field(
        ("clustering",), min_length=1, description="quick protocols: clustering (K-means, K = classes) and/or "
        "incontext (a small Hummingbird memory)")
    dataset: Literal["voc", "ade20k", "synthetic"] | None = Field(
        "voc", description="held-out image set; None: the synthetic pipelines' own data, Pascal VOC otherwise")
    root: str | None = Field("data/VOCdevkit/VOC2012", description="its folder; None: the pipeline's data "
                             "(synthetic only)")
    split: str | None = Field(None, description="scored split; None: val (voc), validation (ade20k), valid (synthetic)")
    train_split: str | None = Field(None, description="in-context memory split; None: trainaug, training, train")
    max_images: int | None = Field(100, ge=1, description="validation images (a fixed draw); None: all")
    memory_size: int = Field(10_240, ge=1, description="in-context memory patches (the official validation: 102,400)")
    memory_images: int | None = Field(None, ge=1, description="in-context memory images (a fixed draw); None: "
                                      "enough to hold memory_size (memory_size / patches per image: 40 at 10,240 "
                                      "and 224 px at patch 14, 400 at 102,400)")
    network: Literal["teacher", "student"] = Field("teacher", description="the backbone scored")


class WandbSettings(BaseModel):
    """Weights & Biases beside TensorBoard, as the official training logs (train/wandb_log.py)."""

    model_config = _STRICT

    project: str | None = Field(None, description="wandb project; None: wandb off (--set train.wandb.project=NAME "
                                "turns it on)")
    entity: str | None = Field(None, description="wandb entity (user or team); None: wandb's default")
    name: str | None = Field(None, description="run name; None: the run folder's name")


class TrainSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    store: str | None = Field(None, description="store path; default: the one in `stores` that fits")
    source_root: str | None = Field(None, description="frames folder if it moved since precompute")
    out: str = "runs"
    model: ModelSettings = ModelSettings()
    loss: LossSettings = LossSettings()
    optim: OptimSettings = OptimSettings()
    batch_size: int = Field(
        64, ge=1, description="global batch: clips per optimiser step over all processes, split evenly over them")
    micro_batch: int | None = Field(
        None, ge=1, description="clips per student forward/backward on one process (gradients accumulate; "
        "the teacher's Sinkhorn still sees the whole batch); None = all of the process's clips at once")
    teacher_chunk: int | None = Field(
        16, ge=1, description="clips per teacher forward (memory only: the result is the same); None = all")
    epochs: int = Field(8, ge=1, description="passes over the videos (clip_sampling per_video) or the clips (all)")
    clip_sampling: Literal["per_video", "all"] = Field(
        "per_video", description="per_video: one of a video's stored clips per epoch, drawn from (seed, epoch, "
        "video), as the official loader; all: every stored clip in every epoch")
    holdout: float = Field(
        0.0, ge=0, lt=1, description="fraction of videos left out of training, chosen by a hash of the video id "
        "(mosic.data.holdout), for evaluation on videos not trained on; the ytvos pipeline: 0.05, the videos "
        "mosic-eval scores as YouTube-VOS split 'heldout'")
    max_steps: int | None = Field(None, ge=1)
    mask_ratio: float = Field(0.1, ge=0, lt=1)
    ema: float = Field(0.99, ge=0, le=1)
    grid: Annotated[int, Field(ge=1)] | Literal["patch"] | None = Field(
        "patch", description="G: the loss uses the G x G stored trajectories nearest to each crop's grid cells "
        "(needs a store grid of at least mosic.train.ops.min_store_grid(G), 30 for 16); 'patch': one per patch "
        "of the crop, img_size // patch size (16 for patch 14 at 224 px and for patch 16 at 256 px); a sparser "
        "store: the points inside the crop; None: every stored point")
    grid_layout: Literal["cotracker", "cells"] = Field(
        "cotracker", description="where a crop's grid points lie: cotracker, the grid CoTracker queries on the crop "
        "(a margin of 1/64 of its 512 px input: 3.5 to 219.9 px at 224, as the official code tracks); cells, the "
        "centres of a grid x grid partition (the patch centres)")
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = Field(
        None, description="normalisation std of the frames; None: the backbone's own (its pretrained_cfg, with its "
        "mean); the official training uses (0.228, 0.224, 0.225)")
    drop_last: bool = Field(
        False, description="drop each epoch's last partial batch (False: keep it, as the official loader: 55 steps "
        "per epoch on 3,471 videos at batch 64, 440 in 8 epochs)")
    crop_scale: tuple[float, float] = (0.4, 1.0)
    flip_p: float = Field(0.5, ge=0, le=1)
    num_workers: int = Field(4, ge=0, description="loader processes per training process")
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(3, ge=1, description="step checkpoints kept in RUN/checkpoints (the last ones; "
                                  "latest.pt is always kept)")
    log_every: int = Field(10, ge=1)
    tensorboard: bool = False
    wandb: WandbSettings = Field(WandbSettings(), description="Weights & Biases logging (rank 0 only; files in the "
                                 "run folder; a resumed run logs under the same wandb run)")
    export: Literal["teacher", "student"] = Field("teacher", description="which backbone to export")
    validate_: ValidateSettings = Field(ValidateSettings(), alias="validate",
                                        description="in-training validation (validate.every, ...)")


def train_settings(raw: dict[str, Any]) -> TrainSettings:
    """A ``train:`` mapping as typed settings, or one line naming the first bad key."""
    try:
        return TrainSettings.model_validate(raw or {})
    except ValidationError as e:
        raise MosicError(f"invalid train settings: {validation_line(e, TrainSettings)}") from None
