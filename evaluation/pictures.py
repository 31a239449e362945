"""Cluster pictures: cluster maps drawn in colour over the frames they were computed on
(``mosic-eval show``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mosic import MosicError


def palette(n: int, seed: int = 3) -> np.ndarray:
    """n distinct-ish RGB colours [n, 3] uint8 (a fixed start, then seeded random)."""
    base = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                     [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
                     [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128]], np.uint8)
    if n <= len(base):
        return base[:n]
    rng = np.random.default_rng(seed)
    return np.concatenate([base, rng.integers(0, 256, (n - len(base), 3), dtype=np.uint8)])


def overlay(frame: np.ndarray, cluster_map: np.ndarray, alpha: float = 0.5, skip: Sequence[int] = (255,),
            colours: np.ndarray | None = None) -> np.ndarray:
    """One frame [H, W, 3] uint8 with cluster colours blended in (map resized nearest to the frame;
    ids in ``skip`` left uncoloured)."""
    from PIL import Image

    frame = np.asarray(frame, np.uint8)
    H, W = frame.shape[:2]
    cm = np.asarray(cluster_map).astype(np.int64)
    if cm.shape != (H, W):
        cm = np.asarray(Image.fromarray(cm.astype(np.int32)).resize((W, H), Image.NEAREST)).astype(np.int64)
    colours = palette(int(cm.max()) + 1) if colours is None else colours
    out = frame.astype(np.float32)
    mask = ~np.isin(cm, list(skip)) & (cm >= 0)
    col = colours[np.clip(cm, 0, len(colours) - 1)].astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * col[mask]
    return out.round().clip(0, 255).astype(np.uint8)


def cluster_visualisation(frames: np.ndarray, cluster_maps: np.ndarray, out: str | Path, alpha: float = 0.5,
                          skip: Sequence[int] = (255,), duration_ms: int = 500) -> Path:
    """Cluster colours over frames: ``out`` .png = frames on top, overlays below; .gif = an
    animation of [frame | overlay]. frames [F, H, W, 3] uint8, cluster_maps [F, h, w] ints."""
    from PIL import Image

    frames = np.asarray(frames)
    maps = np.asarray(cluster_maps)
    if frames.ndim == 3:
        frames, maps = frames[None], maps[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or maps.ndim != 3 or len(maps) != len(frames):
        raise MosicError(f"cluster_visualisation: need frames [F, H, W, 3] and maps [F, h, w], got "
                         f"{frames.shape} and {maps.shape}")
    out = Path(out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise MosicError(f"cluster_visualisation: output must end in .png or .gif, got {out.name}")
    valid = maps[~np.isin(maps, list(skip))]
    colours = palette(int(valid.max()) + 1 if valid.size else 1)
    overlays = [overlay(f, m, alpha, skip, colours) for f, m in zip(frames, maps)]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        img = np.concatenate([np.concatenate(list(frames), 1), np.concatenate(overlays, 1)], 0)
        Image.fromarray(img.astype(np.uint8)).save(out)
    else:
        pics = [Image.fromarray(np.concatenate([f, o], 1).astype(np.uint8)) for f, o in zip(frames, overlays)]
        pics[0].save(out, save_all=True, append_images=pics[1:], duration=duration_ms, loop=0)
    return out
