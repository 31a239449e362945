"""Backbone families: how mosic runs any timm ViT of the VisionTransformer or Eva families
(DINOv2, DINOv2 with registers, DINO, DINOv3, EVA-02 / EVA-CLIP), and how the official checkpoint
files of these models load.

A forward is split into the backbone's own parts, so that the training can drop tokens between
them and keep the frozen blocks out of autograd:

- :func:`embed`: the patch embedding and the model's own ``_pos_embed`` (absolute position
  embedding and prefix tokens; the Eva family's also returns the rotary embedding of the patch
  grid, RoPE), then ``norm_pre``;
- :func:`keep_tokens`: the prefix tokens and the kept patch tokens, each with its own rotary
  position (timm's ``apply_keep_indices_nlc``, as its own patch dropout does);
- :func:`run_blocks`: blocks ``start:stop`` (Eva blocks take the rotary embedding as ``rope``);
- then the model's final ``norm``, as ``forward_features`` does.

How a weights file is read and converted: :mod:`mosic.backbones.weights`; how a backbone is
created: :mod:`mosic.backbones.create`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from mosic import MosicError

#: ImageNet statistics (RGB, on 0..1 values): the normalisation of DINOv2, DINOv3 (web) and DINO
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# families


def family(bb: nn.Module) -> str:
    """``"vit"`` (timm VisionTransformer: absolute positions) or ``"eva"`` (timm Eva: RoPE, with
    or without absolute positions); anything else is an error naming what is missing."""
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(bb, Eva):
        return "eva"
    if isinstance(bb, VisionTransformer):
        return "vit"
    missing = [a for a in ("patch_embed", "_pos_embed", "blocks", "norm", "num_prefix_tokens") if not hasattr(bb, a)]
    raise MosicError(
        f"{type(bb).__name__} is not a timm VisionTransformer or Eva model"
        + (f" (it has no {', '.join(missing)})" if missing else "")
        + ": mosic runs ViTs of these two families (DINOv2, DINO, DINOv3, EVA-02, ...)")


def check_backbone(bb: nn.Module) -> str:
    """The family, after checking that the model can be run piecewise: no patch dropout of its
    own (mosic drops tokens itself) and a square patch."""
    fam = family(bb)
    pd = getattr(bb, "patch_drop", None)
    if pd is not None and not isinstance(pd, nn.Identity) and getattr(pd, "prob", 0.0) > 0:
        raise MosicError("the backbone was created with patch_drop_rate > 0: mosic drops tokens itself "
                         "(train.mask_ratio); leave patch_drop_rate at 0")
    ph, pw = bb.patch_embed.patch_size
    if ph != pw:
        raise MosicError(f"the backbone's patch is {ph} x {pw}: mosic needs square patches")
    return fam


def patch_size(bb: nn.Module) -> int:
    return int(bb.patch_embed.patch_size[0])


def model_patch_size(name: str, **kwargs) -> int:
    """The patch size of timm model ``name`` (built on the meta device: no weights, no memory)."""
    import timm

    try:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise MosicError(f"timm has no model named {name!r}") from None
        raise
    return patch_size(m)


def crop_grid_size(grid: int | str | None, img_size: int, patch: int) -> int | None:
    """The per-crop track grid G of the training (``train.grid``): ``"patch"`` is one trajectory
    per patch of the crop, img_size // patch (16 x 16 for patch 14 at 224 px, and for patch 16 at
    256 px), after checking that the crop is a whole number of patches; an integer or None as given."""
    if img_size % patch:
        raise MosicError(f"img_size {img_size} is not a multiple of the backbone's patch size {patch}: use "
                         f"{img_size // patch * patch} or {(img_size // patch + 1) * patch}")
    if grid == "patch":
        return img_size // patch
    if isinstance(grid, str):
        raise MosicError(f"grid must be a positive integer, 'patch' or null, got {grid!r}")
    return grid


def round_to_patch(size: int, patch: int) -> int:
    """The multiple of ``patch`` nearest to ``size`` (a tie rounds up; at least one patch): the
    evaluation input sizes of patch-14 protocols for other patches (504 -> 512 for patch 16)."""
    return max(patch, int(math.floor(size / patch + 0.5)) * patch)


def mean_std(bb: nn.Module) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The input normalisation the weights were trained with: the mean and std of the model's
    ``pretrained_cfg`` (ImageNet's when it gives none). DINOv2, DINOv3 (web) and DINO use ImageNet's,
    EVA-02 / EVA-CLIP OpenAI CLIP's, DINOv3's satellite weights their own."""
    cfg = getattr(bb, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise MosicError(f"the model's pretrained_cfg gives mean {mean} and std {std}: mosic needs 3 channels")
    return mean, std  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# the forward, in parts


def embed(bb: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x [B, 3, H, W] -> (tokens [B, prefix + h * w, D] with their position embedding and
    ``norm_pre``, the rotary embedding of the patch grid or None)."""
    out = bb._pos_embed(bb.patch_embed(x))
    t, rope = out if isinstance(out, tuple) else (out, None)
    return bb.norm_pre(t), rope


def keep_tokens(bb: nn.Module, t: torch.Tensor, rope: torch.Tensor | None,
                idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prefix tokens and the patch tokens ``idx`` [B, n] (indices into the h * w patches) of
    ``t``, and the rotary embedding of those patches (a batch dimension added, as timm's patch
    dropout does)."""
    npre = bb.num_prefix_tokens
    patches = torch.gather(t[:, npre:], 1, idx[..., None].expand(-1, -1, t.shape[-1]))
    t = torch.cat([t[:, :npre], patches], dim=1)
    if rope is not None:
        from timm.layers import apply_keep_indices_nlc

        rope = apply_keep_indices_nlc(t, rope, idx)
        # [B, depth, heads, n, d] -> [depth, B, heads, n, d] (mixed mode: one per block), else
        # [B, n, d] -> [B, 1, n, d] (a singleton head dimension)
        rope = rope.transpose(0, 1) if getattr(bb, "rope_mixed", False) else rope.unsqueeze(1)
    return t, rope


def run_blocks(bb: nn.Module, t: torch.Tensor, rope: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    """Blocks ``start:stop`` of the backbone on tokens ``t``."""
    mixed = rope is not None and getattr(bb, "rope_mixed", False)
    for i in range(start, stop):
        blk = bb.blocks[i]
        if rope is None:
            t = blk(t)
        else:
            t = blk(t, rope=rope[i] if mixed else rope)
    return t
