"""Weights files: one reader for the pre-flight and the loader, so both judge the same dict.

- :func:`read_weights`: the tensors of a file (``.safetensors`` or a torch file of tensors only), taken
  out of the container that holds them (``model``, ``state_dict``, ``module``, ``teacher`` ...) with a
  ``module.`` / ``backbone.`` prefix common to all keys removed; a file holding several copies of the
  backbone (``student`` and ``teacher``, nested or as flat key prefixes; ``state_dict`` and
  ``state_dict_ema``) is refused naming them unless ``FILE#NAME`` picks one, never a silent choice; a file
  that is empty, not a PyTorch checkpoint, a mosic training checkpoint (``checkpoints/*.pt``: the backbone
  is ``backbone.pth`` beside them) or holds no state dict is one line naming it and what it is;
- :func:`fit_prefix`: any dotted prefix common to all keys (``feature_extractor.model.``) is removed when the
  rest fits the model exactly;
- :func:`detect_layout`, :func:`convert_state_dict`, :func:`load_weights`: a file's layout is
  recognised from its key names (timm, official DINOv3, DINOv2 / DINOv2 with registers, DINO,
  EVA-02 / EVA-CLIP) and converted by the checkpoint filter of the model's timm module; a layout
  that does not fit the model, or fits none, is a clear error;
- :func:`check_weights_file`: the pre-flight before a model is built: the file is read (memory-mapped,
  once per file and model) and a state dict in timm's layout for another architecture is refused with
  the first mismatching shapes; official layouts pass on to the loader, which converts them.
"""

from __future__ import annotations

import functools
import json
import pickletools
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from mosic import MosicError
from mosic.backbones.families import family
from mosic.backbones.hub_folder import hub_source

#: top-level keys of a mosic training checkpoint (train/train.py)
_TRAINING_KEYS = {"student", "teacher", "optimizer", "step"}
#: a state dict nested in a checkpoint holds at least this many tensors (an optimiser's per-parameter state
#: holds fewer)
_MIN_TENSORS = 4
#: prefixes common to all keys that are removed
_PREFIXES = ("module.", "backbone.", "teacher.backbone.", "student.backbone.")

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


def split_copy(path: str | Path) -> tuple[Path, str | None]:
    """``FILE#NAME`` -> (FILE, NAME): the backbone copy ``NAME`` of a file that holds several (a released
    checkpoint with ``student`` and ``teacher``); a file whose own name holds a ``#`` is taken whole."""
    text = str(path)
    if "#" in Path(text).name and not Path(text).is_file():
        base, name = text.rsplit("#", 1)
        return Path(base), name or None
    return Path(text), None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a weights file (see the module's docstring), or one line naming the file and
    what it is. A file holding several backbone copies (nested ``{"student": ..., "teacher": ...}`` or flat
    ``student.*`` / ``teacher.*`` keys) is refused, naming the copies, unless ``FILE#NAME`` picks one. Torch
    files are memory-mapped: tensors are read when they are used."""
    p, pick = split_copy(path)
    if not p.is_file():
        raise MosicError(f"weights file not found: {p}")
    if p.stat().st_size == 0:
        raise MosicError(f"weights file {p} is empty (0 bytes): the download or copy did not finish")
    obj = _read_safetensors(p) if p.suffix == ".safetensors" else _read_torch(p)
    copies = _copies(obj)
    if pick is not None:
        if pick not in copies:
            raise MosicError(f"weights file {p} has no backbone copy {pick!r}; it holds "
                             + (", ".join(repr(c) for c in copies) or "no state dict of tensors"))
        obj = copies[pick]
    elif len(copies) > 1:
        names = list(copies)
        raise MosicError(f"weights file {p} holds {len(names)} backbone copies ({', '.join(names)}): pick one with "
                         f"--weights {p}#{names[-1]} (model.weights in pipelines.yaml), e.g. the teacher, which "
                         "MoSiC exports")
    elif copies:
        obj = next(iter(copies.values()))
    else:
        what = (f"a dict whose top-level keys are {', '.join(map(str, list(obj)[:8]))}" if isinstance(obj, dict) and obj
                else f"a {type(obj).__name__}" + (" without tensors" if isinstance(obj, dict) else ""))
        raise MosicError(f"weights file {p} holds {what}, not a state dict of tensors")
    for pre in _PREFIXES:
        if all(k.startswith(pre) for k in obj):
            obj = {k[len(pre):]: v for k, v in obj.items()}
    return obj


def _copies(obj: Any, name: str = "weights", depth: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts of tensors ``obj`` holds, by name: ``obj`` itself, the containers it nests (``model``,
    ``state_dict``, ``module``, ``student``, ``teacher``, ...), and the copies of one network side by side in a
    flat dict (keys ``student.*`` and ``teacher.*`` with the same remainders)."""
    if not isinstance(obj, dict) or not obj:
        return {}
    if all(isinstance(k, str) for k in obj) and all(torch.is_tensor(v) for v in obj.values()):
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in obj.items():
            head, _, rest = k.partition(".")
            groups.setdefault(head, {})[rest] = v
        if len(groups) > 1 and all(len(g) >= _MIN_TENSORS for g in groups.values()) \
                and len({frozenset(g) for g in groups.values()}) == 1:
            return groups
        return {name: obj} if depth == 0 or len(obj) >= _MIN_TENSORS else {}
    if depth >= 3:
        return {}
    found: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in obj.items():
        if isinstance(k, str):
            found.update(_copies(v, k, depth + 1))
    return found


def _read_safetensors(p: Path) -> dict:
    try:
        from safetensors.torch import load_file

        return load_file(str(p))
    except Exception as e:  # noqa: BLE001 - a damaged file raises many kinds of error
        raise MosicError(f"weights file {p} is not a readable safetensors file ({_first_line(e)})") from None


def _read_torch(p: Path):
    if _is_training_checkpoint(p):
        raise MosicError(f"weights file {p} is a mosic training checkpoint, not a backbone: use the run's "
                         f"backbone.pth ({p.parent.parent / 'backbone.pth'}), or pass the checkpoint's run "
                         "folder to mosic-train with --resume to continue training")
    try:
        try:  # memory-mapped: the tensors are read when used
            return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(p, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except Exception as e:  # noqa: BLE001 - pickle, zip and torch errors come in many types
        what = _what_is(p)
        if what == "a text file":
            what += f" starting {p.read_bytes()[:24].decode('utf-8', 'replace')!r}"
        if what.startswith(("a text file", "binary data")):
            raise MosicError(f"weights file {p} is not a PyTorch checkpoint ({what})") from None
        raise MosicError(f"weights file {p} ({what}) is not a plain state dict: torch.load with weights_only "
                         f"refuses it ({_last_line(e)})") from None


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


def fit_prefix(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``sd`` without the dotted prefix common to all its keys (``feature_extractor.model.``, ``model.``, ...)
    when the rest fits ``model`` exactly (its timm key names, the classifier aside); else ``sd`` unchanged.
    The pre-flight and the loader both call it, so they judge the same dict."""
    if detect_layout(sd, model) is not None:
        return sd
    parts = [k.split(".") for k in sd]
    common = 0
    while all(len(q) > common + 1 and q[common] == parts[0][common] for q in parts):
        common += 1
    for n in range(common, 0, -1):
        rest = {".".join(q[n:]): v for q, v in zip(parts, sd.values())}
        if detect_layout(rest, model) == "timm":
            return rest
    return sd


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
    sd = fit_prefix(read_weights(path), model)
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


# ------------------------------------------------------------------------------------------------
# the pre-flight
# ------------------------------------------------------------------------------------------------
def check_weights_file(path: str | Path | None, model: str | None = None, kwargs: dict[str, Any] | None = None) -> None:
    """One line naming ``path`` and what it is, unless it is a usable state dict for ``model``."""
    if path is None or hub_source(path) is not None:  # a hub folder or id: timm reads it (hub_folder)
        return
    p, pick = split_copy(path)
    if not p.is_file():
        raise MosicError(f"weights file not found: {p}")
    st = p.stat()
    try:
        kw = json.dumps(kwargs or {}, sort_keys=True)
    except TypeError:  # arguments that are objects (a layer class): the loader checks the architecture
        kw, model = "{}", None
    _check_cached(str(p.resolve()), pick, st.st_size, st.st_mtime_ns, model, kw)


@functools.lru_cache(maxsize=16)
def _check_cached(path: str, pick: str | None, size: int, mtime: int, model: str | None, kwargs_json: str) -> None:
    p = Path(path)
    state = read_weights(f"{p}#{pick}" if pick else p)
    if model is not None:
        _check_architecture(p, state, model, json.loads(kwargs_json))


def _check_architecture(p: Path, state: dict, model: str, kwargs: dict) -> None:
    """Compare a timm-layout state dict with the model's parameters; files in another layout pass."""
    import timm

    try:
        with torch.device("meta"):
            net = timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
    except Exception:  # noqa: BLE001 - the loader reports an unknown model or bad arguments itself
        return
    state = fit_prefix(state, net)
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


def _last_line(e: BaseException) -> str:
    """The most specific line of an error (torch.load's weights-only errors end with the cause)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    cause = next((ln for ln in lines if any(w in ln.lower() for w in ("unsupported global", "invalid load key"))), None)
    return f"{type(e).__name__}: {(cause or (lines[-1] if lines else ''))[:160]}".rstrip(": ")


def _arch(shapes: dict) -> str:
    depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    dim = shapes.get("cls_token", shapes.get("pos_embed", (None,)))[-1]
    return f"ViT with depth {depth}, embed_dim {dim}"
