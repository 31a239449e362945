"""Checkpoint files and the exported backbone: atomic writes, the random states of every rank,
and a plain timm state dict of the backbone."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mosic.train.model import MoSiCModel


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    """This process's Python, NumPy, torch (and CUDA) random states."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def all_rng_states(world: int | None) -> dict | list[dict]:
    """This process's :func:`rng_state`, or, under DDP (``world`` processes), every rank's, gathered
    on every rank (a collective: every rank calls it)."""
    rng = rng_state()
    if world is None:
        return rng
    gathered = [None] * world
    dist.all_gather_object(gathered, rng)
    return gathered


def latest_checkpoint(run_folder: Path) -> Path:
    """The last checkpoint of the run in ``run_folder``, the one ``--resume`` reads."""
    return run_folder / "checkpoints" / "latest.pt"


def write_checkpoint(ck: dict, run_folder: Path, step: int, keep: int | None = None) -> None:
    """``checkpoints/step_<step>.pt``, then ``checkpoints/latest.pt``, each written atomically; then, with
    ``keep``, the step checkpoints but the last ``keep`` are deleted (``latest.pt`` is always kept)."""
    latest = latest_checkpoint(run_folder)
    atomic_save(ck, latest.with_name(f"step_{step:07d}.pt"))
    atomic_save(ck, latest)
    if keep is not None:
        for old in step_checkpoints(run_folder)[:-keep]:
            old.unlink(missing_ok=True)


def step_checkpoints(run_folder: Path) -> list[Path]:
    """The run's ``checkpoints/step_<step>.pt`` files, oldest step first."""
    return sorted(latest_checkpoint(run_folder).parent.glob("step_*.pt"))


def export_backbone(model: MoSiCModel, path: Path) -> Path:
    """A plain timm state dict of the backbone: load it with
    ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``."""
    sd = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(sd, path)
    return path
