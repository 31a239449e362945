"""Generating and writing the set: YouTube-VOS layout, ground truth, the generation spec, resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mosic import MosicError
from mosic.data.sources import list_jpegs, voc_colormap
from mosic.data.synthetic.drawing import CLASSES
from mosic.data.synthetic.ground_truth import GENERATOR, _split_dir
from mosic.data.synthetic.motion import _video_length, _video_rng
from mosic.data.synthetic.scene import Scene, make_scene

JPEG_QUALITY = 90
MIN_SIZE = 32


_PALETTE = voc_colormap().ravel().tolist()  # the DAVIS/YouTube-VOS annotation palette


def generation_spec(videos: int, seed: int, split: str, num_frames: int, width: int, height: int, exact_length: bool) -> dict:
    return {
        "generator": GENERATOR,
        "videos": int(videos),
        "seed": int(seed),
        "split": split,
        "num_frames": int(num_frames),
        "exact_length": bool(exact_length),
        "width": int(width),
        "height": int(height),
    }


def read_spec(root: Path | str, split: str = "train") -> dict | None:
    """The settings a synthetic split was generated with (with "complete": bool), or None."""
    p = _split_dir(root, split) / "synthetic.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


_OUR_ENTRIES = ("JPEGImages", "Annotations", "GroundTruth", "meta.json", "synthetic.json")


def _prepare_split_dir(split_dir: Path, spec: dict, overwrite: bool) -> None:
    existing = read_spec(split_dir.parent, split_dir.name)
    present = [n for n in _OUR_ENTRIES if (split_dir / n).exists()]
    if not present:
        return
    same = existing is not None and {k: v for k, v in existing.items() if k != "complete"} == spec
    if not same and not overwrite:
        what = (
            "a different synthetic set (" + ", ".join(f"{k}={existing.get(k)}, not {spec[k]}" for k in spec if existing.get(k) != spec[k]) + ")"
            if existing
            else "other data (" + ", ".join(present) + ")"
        )
        raise MosicError(f"{split_dir} already holds {what}; choose another --out or pass --overwrite to replace it")
    for n in present:
        p = split_dir / n
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _is_complete(split_dir: Path, spec: dict, ids: list[str], lengths: list[int]) -> bool:
    existing = read_spec(split_dir.parent, split_dir.name)
    if not existing or not existing.get("complete"):
        return False
    if {k: v for k, v in existing.items() if k != "complete"} != spec or not (split_dir / "meta.json").is_file():
        return False
    return all(
        len(list_jpegs(split_dir / "JPEGImages" / vid)) == n and (split_dir / "GroundTruth" / f"{vid}.json").is_file()
        for vid, n in zip(ids, lengths)
    )


def is_generated(
    out: Path | str, videos: int, seed: int = 0, split: str = "train", num_frames: int = 80,
    width: int = 320, height: int = 240, *, exact_length: bool = False,
) -> bool:
    """Whether ``out/<split>`` already holds, complete, the set these arguments would generate."""
    spec = generation_spec(videos, seed, split, num_frames, width, height, exact_length)
    ids = [f"syn{i:05d}" for i in range(videos)]
    lengths = [_video_length(_video_rng(seed, split, i), num_frames, exact_length) for i in range(videos)]
    return _is_complete(Path(out) / split, spec, ids, lengths)


def _write_json(path: Path, obj, compact: bool = False) -> None:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")) if compact else json.dumps(obj, indent=1, sort_keys=True)
    path.write_text(text + "\n")


def write_video(scene: Scene, split_dir: Path) -> dict:
    """Render and write one video; returns its meta.json entry."""
    vid = scene.video_id
    jdir = split_dir / "JPEGImages" / vid
    adir = split_dir / "Annotations" / vid
    jdir.mkdir(parents=True, exist_ok=True)
    adir.mkdir(parents=True, exist_ok=True)
    seen: dict[int, list[str]] = {L.id: [] for L in scene.layers[1:]}
    for t in range(scene.num_frames):
        rgb, mask = scene.render(t)
        name = f"{t:05d}"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:  # pragma: no cover
            raise MosicError(f"could not encode frame {t} of {vid}")
        (jdir / f"{name}.jpg").write_bytes(buf.tobytes())
        im = Image.fromarray(mask, mode="P")
        im.putpalette(_PALETTE)
        im.save(adir / f"{name}.png", compress_level=1)
        for i in np.unique(mask):
            if i:
                seen[int(i)].append(name)
    _write_json(split_dir / "GroundTruth" / f"{vid}.json", scene.to_json(), compact=True)
    return {
        "objects": {
            str(L.id): {"category": CLASSES[L.class_index], "frames": seen[L.id]} for L in scene.layers[1:]
        }
    }


def generate(
    out: Path | str,
    videos: int,
    seed: int = 0,
    split: str = "train",
    num_frames: int = 80,
    width: int = 320,
    height: int = 240,
    progress: bool = False,
    *,
    exact_length: bool = False,
    overwrite: bool = False,
    reuse: bool = True,
) -> list[str]:
    """Write ``videos`` synthetic videos under ``out/<split>`` (YouTube-VOS layout); returns their ids.

    Each video has about ``num_frames`` frames (uniformly 75%..125% of it, per video), or exactly
    ``num_frames`` with ``exact_length``. The same arguments give byte-identical files; the split
    name is part of the seed, so train and valid sets differ. A split folder that already holds a
    different set is refused unless ``overwrite``; one that already holds this very set, complete,
    is left as it is when ``reuse`` (see :func:`is_generated`)."""
    if videos < 1:
        raise MosicError(f"videos must be at least 1, got {videos}")
    if num_frames < 2:
        raise MosicError(f"num_frames must be at least 2, got {num_frames}")
    if width < MIN_SIZE or height < MIN_SIZE:
        raise MosicError(f"frames must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got {width}x{height}")
    if not split or "/" in split or "\\" in split or split.startswith("."):
        raise MosicError(f"invalid split name {split!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MosicError(f"{out} exists and is not a folder")
    split_dir = out / split
    spec = generation_spec(videos, seed, split, num_frames, width, height, exact_length)
    ids = [f"syn{i:05d}" for i in range(videos)]
    lengths = [_video_length(_video_rng(seed, split, i), num_frames, exact_length) for i in range(videos)]
    if reuse and not overwrite and _is_complete(split_dir, spec, ids, lengths):
        return ids
    _prepare_split_dir(split_dir, spec, overwrite)
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "GroundTruth").mkdir(exist_ok=True)
    classes_file = out / "classes.json"
    if classes_file.exists() and json.loads(classes_file.read_text()) != list(CLASSES) and not overwrite:
        raise MosicError(f"{classes_file} lists other classes; choose another --out or pass --overwrite")
    _write_json(classes_file, list(CLASSES))
    _write_json(split_dir / "synthetic.json", {**spec, "complete": False})

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(lengths), unit="frame", desc=f"synthetic {split}", dynamic_ncols=True)
    meta = {"videos": {}}
    try:
        for i, vid in enumerate(ids):
            scene = make_scene(i, seed, split, num_frames, width, height, exact_length, video_id=vid)
            meta["videos"][vid] = write_video(scene, split_dir)
            if bar is not None:
                bar.update(scene.num_frames)
    finally:
        if bar is not None:
            bar.close()
    _write_json(split_dir / "meta.json", meta, compact=True)
    _write_json(split_dir / "synthetic.json", {**spec, "complete": True})
    return ids
