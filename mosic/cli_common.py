"""Helpers shared by the typer command-line entry points."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

import typer

from mosic import MosicError


def friendly_errors(fn: Callable) -> Callable:
    """Print a MosicError as one line on stderr and exit with status 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MosicError as e:
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None

    return wrapper


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'320x240' -> (320, 240)."""
    if text is None or text.lower() in ("", "none", "native"):
        return None
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise MosicError(f"a size must look like WIDTHxHEIGHT (e.g. 512x384), got {text!r}") from None


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


DEVICE_HELP = "auto | cpu | cuda | cuda:N (auto: cuda when available, else cpu)"


def parse_device(text: str | None) -> str:
    """A --device value, the same on every command: ``auto`` (or nothing) is ``cuda`` when a GPU is
    there, else ``cpu``; ``cpu``; ``cuda`` / ``cuda:N`` only when that GPU exists."""
    import re

    t = (text or "auto").strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", t):
        raise MosicError(f"--device {text!r}: expected {DEVICE_HELP.split(' (')[0]}")
    import torch

    if t == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if t.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MosicError(f"--device {text}: no CUDA GPU is available on this machine (use --device cpu or auto)")
        n = torch.cuda.device_count()
        if ":" in t and int(t.split(":")[1]) >= n:
            raise MosicError(f"--device {text}: this machine has {n} CUDA GPU(s): cuda:0..cuda:{n - 1}")
    return t
