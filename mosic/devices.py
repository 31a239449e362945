"""Devices and precision, resolved once for every command, the training and the trackers.

- :func:`resolve_device`: a ``--device`` / ``device:`` value (``auto``, ``cpu``, ``cuda``, ``cuda:N``)
  -> a ``torch.device`` that exists on this machine, or one line saying what to pass instead;
- :func:`resolve_precision`: ``auto | fp32 | bf16 | fp16`` -> what runs on that device (``auto`` is bf16
  autocast on a CUDA GPU that supports it, else fp32; the CPU always runs fp32);
- :func:`autocast`: the autocast context of a resolved precision.

torch is imported inside the functions so that every command's ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext
from typing import TYPE_CHECKING

from mosic import MosicError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("mosic")

DEVICE_HELP = "auto | cpu | cuda | cuda:N (auto: cuda when available, else cpu)"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(text: str | None, flag: str = "--device") -> "torch.device":
    """``auto`` (or nothing) is ``cuda`` when a GPU is there, else ``cpu``; ``cpu``; ``cuda`` /
    ``cuda:N`` only when that GPU exists. ``flag`` names the option in the error."""
    import torch

    t = (text or "auto").strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", t):
        raise MosicError(f"{flag} {text!r}: expected {DEVICE_HELP.split(' (')[0]}")
    if t == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if t.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MosicError(f"{flag} {text}: no CUDA GPU is available on this machine (use {flag} cpu or auto)")
        n = torch.cuda.device_count()
        if ":" in t and int(t.split(":")[1]) >= n:
            raise MosicError(f"{flag} {text}: this machine has {n} CUDA GPU(s): cuda:0..cuda:{n - 1}")
    return torch.device(t)


def resolve_precision(precision: str, device: "torch.device", who: str = "mosic") -> str:
    """``fp32 | bf16 | fp16`` for ``device``: ``auto`` is bf16 on a CUDA GPU that supports it, else fp32;
    on the CPU every precision runs fp32 (a warning names ``who`` when another was asked for)."""
    import torch

    if precision not in PRECISIONS:
        raise MosicError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if precision not in ("auto", "fp32"):
            log.warning("%s: precision %s is for CUDA; running fp32 on %s", who, precision, device)
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise MosicError(f"precision bf16 is not supported on {device}: use fp16 or fp32")
    return precision


def autocast(device: "torch.device", precision: str):
    """The autocast context of a precision from :func:`resolve_precision` (fp32: none)."""
    import torch

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
