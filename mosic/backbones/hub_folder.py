"""A backbone as a Hugging Face / timm folder: ``config.json`` (timm's architecture, model arguments and
``pretrained_cfg`` with mean, std and input size), ``model.safetensors`` and a ``README.md`` model card.

timm writes and reads the folder itself (``timm.models.save_for_hf``; ``timm.create_model("local-dir:PATH",
pretrained=True)`` or ``"hf-hub:org/name"``), so anyone loads a mosic backbone with plain timm, and mosic's
``--weights`` takes such a folder or hub id as well as a state-dict file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch.nn as nn

from mosic import MosicError

CARD = "README.md"
RESULTS_START = "<!-- mosic-eval results -->"
RESULTS_END = "<!-- /mosic-eval results -->"
_HUB_ID = re.compile(r"hf-hub:[\w.-]+/[\w.-]+(@[\w./-]+)?")


def hub_source(weights: str | os.PathLike | None) -> str | None:
    """The timm model name that loads ``weights`` when they are a hub folder or hub id (``local-dir:PATH``,
    ``hf-hub:org/name``), else None (a weights file, or nothing)."""
    if weights is None:
        return None
    text = str(weights)
    if text.startswith("hf-hub:"):
        if not _HUB_ID.fullmatch(text):
            raise MosicError(f"--weights {text}: a hub id looks like hf-hub:ORG/NAME (optionally @REVISION)")
        return text
    p = Path(text[len("local-dir:"):] if text.startswith("local-dir:") else text)
    if p.is_dir():
        missing = [f for f in ("config.json", "model.safetensors") if not (p / f).is_file()]
        if missing:
            raise MosicError(f"weights folder {p} has no {' and no '.join(missing)}: a Hugging Face / timm folder "
                             "holds both (a training run writes one as RUN/hub/)")
        return f"local-dir:{p}"
    return None


def write_hub_folder(backbone: nn.Module, folder: str | os.PathLike, card: dict[str, Any]) -> Path:
    """``backbone`` (a timm ViT without classifier) as a hub folder at ``folder``, with a model card made of
    ``card`` (``base_model``, ``recipe``, ``store``, ``steps`` and any other key: value lines)."""
    from timm.models import save_for_hf

    folder = Path(folder)
    save_for_hf(backbone, str(folder), safe_serialization=True)
    (folder / CARD).write_text(model_card(backbone, card))
    return folder


def model_card(backbone: nn.Module, card: dict[str, Any]) -> str:
    """The README.md of a hub folder: the hub's metadata header, then what the backbone is and how it was made."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    base = str(card.get("base_model") or cfg.get("architecture") or type(backbone).__name__)
    licence = str(cfg.get("license") or "other")
    head = ["---", "library_name: timm", f"license: {licence}", "tags:", "- image-feature-extraction", "- timm",
            "- mosic", "- dense-features", "---", ""]
    arch = cfg.get("architecture") or base
    body = [f"# {card.get('name') or arch} post-trained with MoSiC", "",
            f"A `{arch}` backbone (base model `{base}`, licence `{licence}`: the base model's) post-trained with "
            "MoSiC (dense self-supervised learning on video: clusters carried along point tracks) by mosic.", "",
            "```python", "import timm", "",
            "model = timm.create_model(\"local-dir:PATH\", pretrained=True)  # or \"hf-hub:ORG/NAME\"",
            "tokens = model.forward_features(images)  # normalised with pretrained_cfg's mean and std", "```", "",
            "## How it was made", ""]
    body += [f"- {k}: {v}" for k, v in card.items() if k not in ("name",) and v is not None]
    return "\n".join(head + body) + "\n"


def add_results_to_card(folder: str | os.PathLike, table_markdown: str) -> Path:
    """Put ``table_markdown`` (mosic-eval's results table) into the folder's model card, replacing the table an
    earlier evaluation put there."""
    path = Path(folder) / CARD
    if not path.is_file():
        raise MosicError(f"{path} not found: the folder has no model card to add the results to")
    text = path.read_text()
    block = f"{RESULTS_START}\n## Evaluation (mosic-eval)\n\n{table_markdown.strip()}\n{RESULTS_END}\n"
    if RESULTS_START in text and RESULTS_END in text:
        a, b = text.index(RESULTS_START), text.index(RESULTS_END) + len(RESULTS_END)
        text = text[:a] + block.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
    return path
