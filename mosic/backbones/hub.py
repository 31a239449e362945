"""The Hugging Face hub, tried once: when it cannot be reached, cached weights are used offline (no
retry storm) or one line names the options that need no hub."""

from __future__ import annotations

import os
import socket

from mosic import MosicError


def check_hub(name: str, timeout: float = 5.0) -> None:
    """One attempt to reach the Hugging Face hub for model ``name``'s pretrained weights. When it
    fails: cached weights are used offline (no retries); without them, one line naming the options."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if repo:
        check_hub_repo(repo, f"the weights of {name!r}", timeout)


def check_hub_repo(repo: str, what: str, timeout: float = 5.0) -> None:
    """One attempt to reach the hub for repository ``repo`` (``what`` names it in the error): when it fails,
    a cached copy is used offline (no retries); without one, one line naming the options."""
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    host = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0]
    try:
        socket.create_connection((host.split(":")[0], int(host.split(":")[1]) if ":" in host else 443),
                                 timeout=timeout).close()
        return
    except OSError as e:
        reason = f"{type(e).__name__}: {e}"
    cached = any(isinstance(huggingface_hub.try_to_load_from_cache(repo, f), str)
                 for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))
    if cached:
        constants.HF_HUB_OFFLINE = True  # read at each call: the cached copy, without network retries
        os.environ["HF_HUB_OFFLINE"] = "1"
        return
    raise MosicError(f"cannot reach the Hugging Face hub at {host} ({reason}) and {what} ({repo}) are not in the "
                     "local cache: pass a local file or folder with --weights PATH, or --no-pretrained for a random "
                     "initialisation")
