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

Weights (:func:`load_weights`): a file's layout is recognised from its key names (timm, official
DINOv3, DINOv2 / DINOv2 with registers, DINO, EVA-02 / EVA-CLIP) and converted by the checkpoint
filter of the model's timm module; a layout that does not fit the model, or fits none, is a clear
error.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn as nn

from mosic import MosicError

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


# ---------------------------------------------------------------------------------------------
# weights files

# layouts a weights file can have: what loads it, and which family it fits
LAYOUTS = {
    "timm": "a timm state dict (mosic's backbone.pth, timm's own files)",
    "dinov3": "an official DINOv3 checkpoint (facebookresearch/dinov3)",
    "dinov2": "an official DINOv2 checkpoint, with or without registers (facebookresearch/dinov2)",
    "dino": "an official DINO checkpoint (facebookresearch/dino)",
    "eva": "an official EVA-02 checkpoint (baaivision/EVA)",
    "eva-clip": "an official EVA-CLIP checkpoint (baaivision/EVA, its visual tower)",
}
_FAMILY_OF = {"dinov3": "eva", "dinov2": "vit", "dino": "vit", "eva": "eva", "eva-clip": "eva"}
_EXAMPLE = {"dinov3": "vit_small_patch16_dinov3", "dinov2": "vit_small_patch14_reg4_dinov2 or vit_small_patch14_dinov2",
            "dino": "vit_small_patch16_224", "eva": "eva02_small_patch14_224", "eva-clip": "eva02_base_patch16_clip_224"}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (``.safetensors`` or a torch file of tensors only), taken out
    of the usual containers (``model``, ``state_dict``, ``module``, ``teacher`` ...) and with a
    ``module.`` / ``backbone.`` prefix common to all keys removed."""
    path = Path(path)
    if not path.is_file():
        raise MosicError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle, zip and safetensors errors come in many types
        raise MosicError(f"weights {path} could not be read as a torch or safetensors file of tensors "
                         f"({type(e).__name__}: {str(e)[:200]})") from None
    for key in ("model_ema", "state_dict_ema", "model", "state_dict", "module", "teacher"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and obj[key]:
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise MosicError(f"weights {path} hold no state dict of tensors (top-level keys: "
                         f"{', '.join(list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__})")
    for pre in ("module.", "backbone.", "teacher.backbone.", "student.backbone."):
        if all(k.startswith(pre) for k in obj):
            obj = {k[len(pre):]: v for k, v in obj.items()}
    return obj


def detect_layout(sd: dict[str, torch.Tensor], model: nn.Module | None = None) -> str | None:
    """Which of :data:`LAYOUTS` a state dict has (None: none of them). A file whose keys are
    exactly ``model``'s own (less its classifier) is ``timm``."""
    keys = set(sd)
    if model is not None:
        own = {k for k in model.state_dict() if not k.startswith("head.")}
        if own and own <= keys and all(k in own or k.startswith("head.") for k in keys):
            return "timm"
    if "storage_tokens" in keys:
        return "dinov3"
    if any(k.startswith("visual.") for k in keys) and ("visual.pos_embed" in keys or "visual.trunk.pos_embed" in keys):
        return "eva-clip"
    if "register_tokens" in keys or ("mask_token" in keys and "blocks.0.ls1.gamma" in keys):
        return "dinov2"
    if any(".mlp.w12." in k or ".mlp.w1." in k or ".mlp.ffn_ln." in k or ".attn.q_bias" in k
           or ".attn.q_proj." in k for k in keys):
        return "eva"
    if {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight"} <= keys:
        return "dino"  # the DeiT / DINO key names, which are timm's VisionTransformer's
    return None


def convert_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, source: str = "weights") -> dict:
    """``sd`` in the model's own key names: recognised (:func:`detect_layout`), checked against the
    model's family, and passed through the checkpoint filter of the model's timm module
    (``checkpoint_filter_fn``: DINOv3's, DINOv2's and EVA's key names, position embeddings
    resampled to the model's grid, patch embeddings to its patch)."""
    fam = family(model)
    layout = detect_layout(sd, model)
    if layout is None:
        sample = ", ".join(sorted(sd)[:6])
        raise MosicError(
            f"{source} fit no known layout (keys: {sample}, ...): mosic loads a timm state dict or an official "
            "DINOv3, DINOv2, DINO, EVA-02 or EVA-CLIP checkpoint; convert other files to timm's key names")
    if layout != "timm" and _FAMILY_OF[layout] != fam:
        raise MosicError(f"{source} is {LAYOUTS[layout]}, which does not fit {type(model).__name__} model "
                         f"{_model_name(model)!r}: give a timm name of that architecture, e.g. {_EXAMPLE[layout]}")
    if layout == "dinov3" and "blocks.0.attn.q_bias" not in model.state_dict():
        # the S/16 (and distilled) files carry all-zero q/k/v biases that timm's model leaves out;
        # a non-zero one needs the timm variant with biases (``..._qkvb``)
        biases = [k for k in sd if k.endswith(".attn.qkv.bias")]
        if any(bool(sd[k].any()) for k in biases):
            raise MosicError(f"{source} has non-zero q/k/v biases, which {_model_name(model)!r} has no place for: "
                             "use the timm variant with biases (its name ends in _qkvb)")
        sd = {k: v for k, v in sd.items() if k not in biases}
    filt = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filt is not None:
        sd = filt(sd, model)
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Load a weights file into ``model`` (strict but for the classifier head); returns its layout."""
    sd = read_state_dict(path)
    layout = detect_layout(sd, model)
    sd = convert_state_dict(sd, model, source=f"weights {path}")
    res = model.load_state_dict(sd, strict=False)
    missing = [k for k in res.missing_keys if not k.startswith(("head.", "fc_norm."))]
    unexpected = list(res.unexpected_keys)
    if missing or unexpected:
        what = (f"missing {', '.join(missing[:4])}" if missing else "") + \
               ("; " if missing and unexpected else "") + \
               (f"unexpected {', '.join(unexpected[:4])}" if unexpected else "")
        raise MosicError(f"weights {path} ({LAYOUTS.get(layout or '', 'unknown layout')}) do not fit model "
                         f"{_model_name(model)!r} ({what}): give the timm name of the architecture the weights "
                         "were trained for")
    return layout or "timm"


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)
