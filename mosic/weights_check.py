"""Pre-flight checks before a backbone's weights are loaded: one clear line for a weights file that
is not a usable state dict, and a single attempt at the model hub instead of a retry storm.

:func:`preflight` is called where a backbone is created. A weights file is refused when it is empty,
is not a PyTorch checkpoint, is a mosic training checkpoint (``checkpoints/*.pt``: the backbone is
``backbone.pth`` beside them), or is a state dict in timm's layout for another architecture (the
first mismatching shapes are named). Files in other layouts (official checkpoints that the loader
converts) pass on to the loader. Hub weights: when the hub cannot be reached in one attempt, the
weights come from the local cache (offline, no retries) or the error names the command's options.
"""

from __future__ import annotations

import functools
import json
import os
import pickletools
import socket
import zipfile
from pathlib import Path
from typing import Any

from mosic import MosicError

#: top-level keys of a mosic training checkpoint (train/train.py)
_TRAINING_KEYS = {"student", "teacher", "optimizer", "step"}


def preflight(name: str, weights: str | Path | None = None, pretrained: bool = False,
              kwargs: dict[str, Any] | None = None) -> None:
    """Raise MosicError (one line) when ``weights`` cannot give model ``name`` its weights, or when
    hub weights are wanted and can be had neither from the hub nor from the local cache."""
    if weights is not None:
        check_weights_file(weights, name, kwargs)
    elif pretrained:
        check_hub(name)


def check_weights_file(path: str | Path | None, model: str | None = None, kwargs: dict[str, Any] | None = None) -> None:
    """One line naming ``path`` and what it is, unless it is a usable state dict for ``model``."""
    if path is None:
        return
    p = Path(path)
    if not p.is_file():
        raise MosicError(f"weights file not found: {p}")
    st = p.stat()
    try:
        kw = json.dumps(kwargs or {}, sort_keys=True)
    except TypeError:  # arguments that are objects (a layer class): the loader checks the architecture
        kw, model = "{}", None
    _check_cached(str(p.resolve()), st.st_size, st.st_mtime_ns, model, kw)


@functools.lru_cache(maxsize=16)
def _check_cached(path: str, size: int, mtime: int, model: str | None, kwargs_json: str) -> None:
    p = Path(path)
    if size == 0:
        raise MosicError(f"weights file {p} is empty (0 bytes): the download or copy did not finish")
    state = _load_state(p)
    if model is not None:
        _check_architecture(p, state, model, json.loads(kwargs_json))


def _load_state(p: Path) -> dict:
    import torch

    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(p))
        except Exception as e:  # noqa: BLE001 - a damaged file raises many kinds of error
            raise MosicError(f"weights file {p} is not a readable safetensors file ({_first_line(e)})") from None
    if _is_training_checkpoint(p):
        raise MosicError(f"weights file {p} is a mosic training checkpoint, not a backbone: use the run's "
                         f"backbone.pth ({p.parent.parent / 'backbone.pth'}), or pass the checkpoint's run "
                         "folder to mosic-train with --resume to continue training")
    try:
        try:  # memory-mapped: the tensors are not read, only their shapes are looked at
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(p, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except Exception as e:  # noqa: BLE001
        what = _what_is(p)
        if what == "a text file":
            what += f" starting {p.read_bytes()[:24].decode('utf-8', 'replace')!r}"
        if what.startswith(("a text file", "binary data")):
            raise MosicError(f"weights file {p} is not a PyTorch checkpoint ({what})") from None
        raise MosicError(f"weights file {p} ({what}) is not a plain state dict: torch.load with weights_only "
                         f"refuses it ({_last_line(e)})") from None
    for key in ("state_dict_ema", "model_ema", "state_dict", "model", "teacher"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MosicError(f"weights file {p} holds a {type(obj).__name__} without tensors, not a state dict")
    return obj


def _is_training_checkpoint(p: Path) -> bool:
    """Whether ``p`` is a zip checkpoint whose pickle names the top-level keys of a mosic training
    checkpoint (read without unpickling anything)."""
    if not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return False
            data = z.read(name)
        strings = {arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    except Exception:  # noqa: BLE001 - not ours to judge: torch.load will say
        return False
    return _TRAINING_KEYS <= strings


def _what_is(p: Path) -> str:
    head = p.read_bytes()[:512]
    if head.startswith(b"PK"):
        return "a zip archive"
    if head.startswith(b"\x80"):
        return "a pickle"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}".rstrip(": ")


def _check_architecture(p: Path, state: dict, model: str, kwargs: dict) -> None:
    """Compare a timm-layout state dict with the model's parameters; files in another layout pass."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            net = timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
    except Exception:  # noqa: BLE001 - the loader reports an unknown model or bad arguments itself
        return
    from mosic.train.backbones import detect_layout

    if detect_layout(state, net) not in ("timm", "dino", None):  # "dino": timm's own VisionTransformer names
        return  # an official layout (DINOv3, DINOv2, EVA, EVA-CLIP): the loader converts and checks it
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    common = set(want) & set(have)
    if len(common) < 0.5 * min(len(want), len(have)):
        return  # another key layout (e.g. an official checkpoint the loader converts)
    skip = {"pos_embed"}  # resampled to the input size by the loader
    bad = [k for k in want if k in have and k not in skip and want[k] != have[k]]
    missing = [k for k in want if k not in have and not k.startswith("head")]
    extra = [k for k in have if k not in want and k.startswith("blocks.")]
    if not bad and not missing and not extra:
        return
    file_arch, model_arch = _arch(have), _arch(want)
    where = (f"{bad[0]} is {list(have[bad[0]])} in the file but {list(want[bad[0]])} in the model"
             + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")) if bad else \
        (f"the file lacks {len(missing)} of the model's tensors, e.g. {missing[0]}" if missing else
         f"the file has {len(extra)} tensors the model lacks, e.g. {extra[0]}")
    hint = (f"the file is a {file_arch}, the model a {model_arch}" if file_arch != model_arch else "")
    cfg = p.parent / "config.json"
    fix = ("evaluate the run with --run " + str(p.parent) if cfg.is_file() else
           "give the model name and arguments the weights were trained with (--model, --model-kwargs)")
    raise MosicError(f"weights file {p} is for another architecture than {model!r}"
                     + (f" {kwargs}" if kwargs else "") + f": {where}" + (f"; {hint}" if hint else "") + f": {fix}")


def _last_line(e: BaseException) -> str:
    """The most specific line of an error (torch.load's weights-only errors end with the cause)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    cause = next((ln for ln in lines if any(w in ln.lower() for w in ("unsupported global", "invalid load key"))), None)
    return f"{type(e).__name__}: {(cause or (lines[-1] if lines else ''))[:160]}".rstrip(": ")


def _arch(shapes: dict) -> str:
    depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    dim = shapes.get("cls_token", shapes.get("pos_embed", (None,)))[-1]
    return f"ViT with depth {depth}, embed_dim {dim}"


# ------------------------------------------------------------------------------------------------
# the hub
# ------------------------------------------------------------------------------------------------
def check_hub(name: str, timeout: float = 5.0) -> None:
    """One attempt to reach the Hugging Face hub for model ``name``'s pretrained weights. When it
    fails: cached weights are used offline (no retries); without them, one line naming the options."""
    try:
        import huggingface_hub
        from huggingface_hub import constants
        from timm.models import get_pretrained_cfg
    except ImportError:
        return
    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo or constants.HF_HUB_OFFLINE:
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
    raise MosicError(f"cannot reach the Hugging Face hub at {host} ({reason}) and the weights of {name!r} "
                     f"({repo}) are not in the local cache: pass a local file with --weights PATH, or "
                     "--no-pretrained for a random initialisation")
