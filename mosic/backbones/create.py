"""A backbone by timm name, with its weights from a local file, the hub or a random initialisation:
the one place where training and evaluation create a backbone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn

from mosic import MosicError
from mosic.backbones.families import check_backbone
from mosic.backbones.hub import check_hub, check_hub_repo
from mosic.backbones.hub_folder import hub_source
from mosic.backbones.weights import check_weights_file, load_weights


def preflight(name: str, weights: str | Path | None = None, pretrained: bool = False,
              kwargs: dict[str, Any] | None = None) -> None:
    """Raise MosicError (one line) when ``weights`` cannot give model ``name`` its weights, or when
    hub weights are wanted and can be had neither from the hub nor from the local cache."""
    source = hub_source(weights)
    if source is not None:
        if source.startswith("hf-hub:"):
            check_hub_repo(source[len("hf-hub:"):].split("@")[0], f"--weights {source}")
        return
    if weights is not None:
        check_weights_file(weights, name, kwargs)
    elif pretrained:
        check_hub(name)


def create_backbone(
    name: str,
    pretrained: bool = True,
    weights: str | Path | None = None,
    img_size: int = 224,
    **kwargs: Any,
) -> nn.Module:
    """A timm ViT (VisionTransformer or Eva family) by name. Weights: a local file (``weights``: a
    timm state dict or an official DINOv3, DINOv2, DINO, EVA-02 / EVA-CLIP checkpoint, converted
    by timm's checkpoint filter, see :mod:`mosic.backbones.weights`), a Hugging Face / timm folder or
    hub id (``weights``: a folder with config.json and model.safetensors, or ``hf-hub:ORG/NAME``: the
    architecture and its arguments are the folder's, see :mod:`mosic.backbones.hub_folder`), the hub's
    pretrained weights of ``name`` (``pretrained``), or random init."""
    import timm

    preflight(name, weights, pretrained and weights is None, kwargs)
    source = hub_source(weights)
    if source is not None:
        return _from_hub_folder(source, name, img_size, kwargs)
    try:
        model = timm.create_model(name, pretrained=pretrained and weights is None, img_size=img_size,
                                  num_classes=0, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise MosicError(f"timm has no model named {name!r}") from None
        raise
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        if pretrained and weights is None and _looks_like_network_error(e):
            raise MosicError(
                f"could not download pretrained weights for {name!r} ({type(e).__name__}: {str(e)[:200]}). "
                "Pass a local file with --weights PATH, or --no-pretrained for a random init"
            ) from None
        raise
    check_backbone(model)
    if weights is not None:
        try:
            load_weights(model, weights)
        except RuntimeError as e:  # size mismatches
            first = str(e).strip().splitlines()
            raise MosicError(
                f"weights {weights} do not fit model {name!r} ({' '.join(first[:2])[:200]} ...): "
                "give the timm name of the architecture the weights were trained for"
            ) from None
    return model


def _looks_like_network_error(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(w in text for w in ("connection", "resolve", "network", "offline", "timed out", "urlopen",
                                    "huggingface", "hub", "http", "localentrynotfound"))


def _from_hub_folder(source: str, name: str, img_size: int, kwargs: dict[str, Any]) -> nn.Module:
    """A backbone from a hub folder or hub id (timm reads its config.json and model.safetensors); ``name``
    must be the folder's architecture (its pretrained tag aside)."""
    import timm

    if source.startswith("local-dir:"):
        arch = json.loads((Path(source[len("local-dir:"):]) / "config.json").read_text()).get("architecture", "")
        if arch and name.split(".")[0] != arch.split(".")[0]:
            raise MosicError(f"--weights {source[len('local-dir:'):]} holds a {arch!r} backbone, not {name!r}: "
                             f"pass --model {arch} (or leave the model to the folder)")
    try:
        model = timm.create_model(source, pretrained=True, num_classes=0, img_size=img_size, **kwargs)
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        if source.startswith("hf-hub:") and _looks_like_network_error(e):
            raise MosicError(f"could not download {source} ({type(e).__name__}: {str(e)[:200]}): pass a local "
                             "folder or file with --weights PATH") from None
        raise
    check_backbone(model)
    return model
