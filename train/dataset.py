"""The training data set: one clip per video (or every clip) of a trajectory store per epoch, its
frames, one random crop per clip and epoch, and the G x G trajectories nearest to the crop's grid;
the checks that the frames on disk are the store's; :func:`collate_clips`, which stacks items into
a batch. The loader that feeds it to training is :mod:`mosic.train.loader`.

```python
ds = ClipDataset("stores/ytvos-...zarr", require={"grid": 30, "clips.length": 12},
                 clips="per_video", grid=16)
item = ds[(epoch, i)]        # frames uint8 [T,3,S,S], tracks [T,N,2], visibility [T,N], index, video_id
```

Frames travel as uint8 (a quarter of float32's bytes through the workers' shared memory and the
host-to-device copy) and are normalised on the device
(:func:`~mosic.train.augment.normalize_frames`).

Reproducibility: the clip of item ``i`` (a video) in epoch ``e`` is ``pick_clip(seed, e, i, ...)``
and its crop comes from ``np.random.default_rng([seed, e, i])``, and nothing else, so neither
depends on the number of workers, on which worker reads the item, or on what was read before.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mosic import MosicError
from mosic.data.base import FrameReadError, plan_clips
from mosic.store_schema.reader import StoreError, StoreReader, open_frame_source
from mosic.train.augment import (CropBox, apply_crop, map_tracks, max_reduction, reduce_box, sample_crop,
                                 to_uint8_chw)
from mosic.train.ops import crop_grid, min_store_grid, pick_clip, select_grid_points


log = logging.getLogger("mosic.train")


def check_epoch(epoch) -> int:
    """``epoch`` as an int, or MosicError unless it is a non-negative integer."""
    if int(epoch) != epoch or epoch < 0:
        raise MosicError(f"epoch must be a non-negative integer, got {epoch!r}")
    return int(epoch)


class ClipDataset(Dataset):
    """The DONE clips of a store. Item ``i`` (or ``(epoch, i)``) is a dict: ``frames`` uint8
    [T, 3, S, S] (RGB; :func:`~mosic.train.augment.normalize_frames` on the device), ``tracks`` float32 [T, N, 2] in crop pixels, ``visibility``
    bool [T, N] (false outside the crop), ``index`` (the store's clip index), ``video_id``.

    ``clips="per_video"``: item i is the i-th video (of those with a done clip, in the store's
    order), and epoch e reads the clip :func:`~mosic.train.ops.pick_clip` draws from (seed, e, i):
    one clip per video per epoch, a new one every epoch, as the official loader. ``"all"``: item
    i is the i-th done clip, the same in every epoch."""

    def __init__(
        self,
        store_path: str | Path,
        source_root: str | Path | None = None,
        require: Mapping[str, Any] | None = None,
        out_size: int = 224,
        scale: tuple[float, float] = (0.4, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        seed: int = 0,
        max_clips: int | None = None,
        antialias: bool = True,
        clips: str = "all",
        grid: int | None = None,
        reduced_decode: bool = True,
        frame_cache: str | Path | None = "auto",
        holdout: float = 0.0,
        grid_layout: str = "cotracker",
    ):
        if int(seed) != seed or seed < 0:
            raise MosicError(f"seed must be a non-negative integer, got {seed!r}")
        if max_clips is not None and max_clips < 1:
            raise MosicError(f"max_clips must be at least 1, got {max_clips}")
        self.reader = StoreReader(store_path, require=require)
        self.source = _open_source(self.reader, source_root)
        self.out_size = int(out_size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.flip_p = float(flip_p)
        self.seed = int(seed)
        self.antialias = antialias
        #: decode JPEGs at the largest 1/2, 1/4, 1/8 scale that still covers the crop (exact map)
        self.reduced_decode = bool(reduced_decode)
        #: frames pre-resized per clip (mosic-store cache-frames), used instead of the JPEGs when present
        self.frame_cache = _open_cache(self.reader, frame_cache, self.out_size, self.scale, self.ratio)
        #: clips read from their source because their cache file was damaged (this process)
        self.cache_fallbacks = 0
        self._damaged: set[int] = set()
        self.epoch = 0
        check_frame_numbering(self.reader, self.source)
        done = np.asarray(self.reader.done, dtype=np.int64)
        if holdout:  # videos kept for evaluation (mosic.data.holdout) never train
            from mosic.data.holdout import is_heldout

            done = np.asarray([c for c in done.tolist() if not is_heldout(self.reader.clips[c].video_id, holdout)],
                              dtype=np.int64)
        self.indices = done if max_clips is None else done[:max_clips]
        if len(self.indices) == 0:
            raise MosicError(f"store {self.reader.path} has no clip with tracks: nothing to train on")
        if clips not in ("per_video", "all"):
            raise MosicError(f"clips must be 'per_video' or 'all', got {clips!r}")
        self.clips = clips
        # per_video: the done clips of each video, in store order ([[i]] per clip for "all")
        if clips == "per_video":
            by_video: dict[str, list[int]] = {}
            for c in self.indices.tolist():
                by_video.setdefault(self.reader.clips[c].video_id, []).append(c)
            self.groups = [np.asarray(v, dtype=np.int64) for v in by_video.values()]
        else:
            self.groups = [np.asarray([c], dtype=np.int64) for c in self.indices.tolist()]
        sample_crop(np.random.default_rng(0), 2, 2, self.scale, self.ratio, self.flip_p, self.out_size)  # checks
        # points: a grid x grid selection of the stored trajectories in every crop where the store
        # is dense enough, else every stored point (those outside the crop marked invisible)
        self.grid = grid
        self.grid_layout = grid_layout  # where a crop's grid points lie (mosic.train.ops.crop_grid)
        crop_grid(self.out_size, 2, grid_layout)  # checks the name
        self.select_grid = False
        if grid is not None:
            if int(grid) != grid or grid < 1:
                raise MosicError(f"grid must be a positive integer, got {grid!r}")
            need = min_store_grid(grid, self.scale, self.ratio, self.out_size)
            have = self.reader.spec.grid
            self.select_grid = have >= need
            if not self.select_grid:
                log.warning(
                    "store grid %d x %d is too sparse for a full %d x %d grid in every crop (that needs %d x %d "
                    "on the full frame): training uses the stored points that fall inside each crop", have, have,
                    grid, grid, need, need)

    # -- epochs and crops ---------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """The epoch used for plain integer indices (the loader passes ``(epoch, i)`` instead)."""
        self.epoch = check_epoch(epoch)

    def clip_index(self, i: int, epoch: int | None = None) -> int:
        """The store's index of the clip item ``i`` reads in ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else check_epoch(epoch)
        g = self.groups[int(i)]
        return int(g[0]) if len(g) == 1 else int(g[pick_clip(self.seed, e, int(i), len(g))])

    def crop(self, i: int, epoch: int | None = None) -> CropBox:
        """The crop box of item ``i`` in ``epoch`` (default: the current epoch), in source pixels."""
        e = self.epoch if epoch is None else check_epoch(epoch)
        clip = self.reader.clips[self.clip_index(i, e)]
        rng = np.random.default_rng([self.seed, e, int(i)])
        return sample_crop(rng, clip.width, clip.height, self.scale, self.ratio, self.flip_p, self.out_size)

    # -- items --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.groups)

    def _key(self, key) -> tuple[int, int]:
        if isinstance(key, (tuple, list)):
            e, i = key
        else:
            e, i = self.epoch, key
        i = int(i)
        if not 0 <= i < len(self.groups):
            what = "videos" if self.clips == "per_video" else "clips"
            raise IndexError(f"item {i} out of range (the dataset has {len(self.groups)} {what})")
        return check_epoch(e), i

    def read_clip(self, i: int, epoch: int | None = None, max_factor: float | None = None):
        """(ClipTracks, frames uint8 [T, H, W, 3]) of item ``i`` in ``epoch``, with the frames
        checked against the size the store recorded for the clip. With ``max_factor``:
        (ClipTracks, frames, s), the frames decoded reduced by s <= max_factor
        (:meth:`FrameSource.read_frames_reduced`)."""
        item = self.reader[self.clip_index(i, epoch)]
        clip = item.clip
        factor = 1
        if max_factor is None:
            frames = self.source.read_frames(clip.video_id, clip.frames)  # FrameReadError names video + frame
        else:
            frames, factor = self.source.read_frames_reduced(clip.video_id, clip.frames, max_factor)
        want = (len(clip.frames), -(-clip.height // factor), -(-clip.width // factor), 3)
        if frames.shape != want or frames.dtype != np.uint8:
            raise FrameReadError(
                clip.video_id,
                f"frames on disk are {frames.dtype} {frames.shape}, the store {self.reader.path.name} "
                f"recorded {want} uint8 for clip {item.index}: the data set changed after the tracks "
                "were computed; rebuild the store",
            )
        if item.tracks.shape[0] != len(clip.frames):
            raise StoreError(
                f"store {self.reader.path}: clip {item.index} has {item.tracks.shape[0]} frames of "
                f"tracks for {len(clip.frames)} frames"
            )
        return (item, frames) if max_factor is None else (item, frames, factor)

    def __getitem__(self, key) -> dict[str, Any]:
        epoch, i = self._key(key)
        box = self.crop(i, epoch)
        damaged = self.cache_fallbacks
        cached = self._read_cached(i, box, epoch) if self.frame_cache is not None else None
        if cached is not None:
            item, frames, fbox = cached
        else:
            item, frames, factor = self.read_clip(i, epoch, max_reduction(box) if self.reduced_decode else 1.0)
            fbox = reduce_box(box, factor)
        tracks, vis = map_tracks(item.tracks, item.visibility, box)
        if self.select_grid:  # the trajectories nearest to the crop's own grid cells
            sel, _ = select_grid_points(tracks[0], self.out_size, self.grid, self.grid_layout)
            tracks, vis = tracks[:, sel], vis[:, sel]
        return {
            "frames": to_uint8_chw(apply_crop(frames, fbox, antialias=self.antialias)),
            "tracks": torch.from_numpy(tracks),
            "visibility": torch.from_numpy(vis),
            "index": int(item.index),
            "video_id": item.clip.video_id,
            "cache_fallback": self.cache_fallbacks > damaged,  # its cache file was damaged: read from source
        }

    def _read_cached(self, i: int, box: CropBox, epoch: int | None = None):
        """(ClipTracks, cache frames [T, side, side, 3], the box in their pixels), or None where the
        clip is not in the cache (its source is no larger than the cache) or its file is damaged:
        then the clip is read from its source. A damaged file is named once per process and counted
        in ``cache_fallbacks`` (the training log shows the count); `mosic-store cache-frames`
        rebuilds it."""
        item = self.reader[self.clip_index(i, epoch)]
        fc = self.frame_cache
        if not fc.holds(item.clip.width, item.clip.height):
            return None
        try:
            frames = fc.read(item.index)
            if frames.shape[0] != item.tracks.shape[0]:
                raise FrameReadError(str(fc.clip_file(item.index)), f"{frames.shape[0]} frames in the cache file, "
                                     f"{item.tracks.shape[0]} in the store")
        except FrameReadError as e:
            self.cache_fallbacks += 1
            if item.index not in self._damaged:
                self._damaged.add(item.index)
                log.warning("frame cache: %s; clip %d is read from its source frames (rebuild the damaged files "
                            "with mosic-store cache-frames %s)", e, item.index, self.reader.path)
            return None
        side = fc.side
        return item, frames, reduce_box(box, item.clip.width / side, item.clip.height / side)


def _open_cache(reader: StoreReader, frame_cache, out_size, scale, ratio):
    """The frame cache to read: "auto" takes one beside a local store if it fits and is large
    enough for these crops; a path must fit; None reads the JPEGs."""
    from mosic.store_schema.frame_cache import FrameCache, cache_side

    if frame_cache is None or not isinstance(reader.path, Path):
        return None
    need = cache_side(out_size, scale[0], ratio)
    fp = reader.spec.dataset.fingerprint
    if frame_cache == "auto":
        return FrameCache.find(reader.path, fp, need)
    fc = FrameCache(frame_cache)
    if not fc.fits(reader.path.name, fp):
        raise MosicError(f"frame cache {fc.folder} was made for store {fc.meta.get('store')!r} "
                         f"(fingerprint {fc.meta.get('fingerprint')}), not {reader.path.name}")
    if fc.side < need:
        raise MosicError(f"frame cache {fc.folder} has {fc.side} px frames; crops at {out_size} px with "
                         f"scale >= {scale[0]} need {need} px (mosic-store cache-frames --side {need})")
    return fc


# ------------------------------------------------------------------------------------------------
# opening the frames, with a diagnosis when they are not the store's
# ------------------------------------------------------------------------------------------------
def _open_source(reader: StoreReader, root):
    """The store's frame source, verified; on a fingerprint mismatch the error names the videos."""
    try:
        return open_frame_source(reader, root, verify=True)
    except StoreError as e:
        try:
            source = open_frame_source(reader, root, verify=False)
            if source.fingerprint() == reader.spec.dataset.fingerprint:
                raise e from None  # not a mismatch: the original error as it is
            lines = explain_mismatch(reader, source)
        except StoreError:
            raise e from None
        except MosicError as e2:
            lines = [f"(the frames could not be listed: {e2})"]
        detail = "\n  ".join(lines) if lines else (
            "(no video can be named: the store keeps only a hash of the frame counts, so a count "
            "that changed without changing any clip, or an added video, shows only there; restore "
            "the frames or rebuild the store)"
        )
        raise StoreError(f"{e}\n  {detail}") from None


def check_frame_numbering(reader: StoreReader, source) -> None:
    """Refuse a store whose steps counted frame indices (made before steps counted raw frames)
    when the data set's frames are not every raw frame: there the two meanings differ."""
    if reader.spec.frame_numbering == "raw":
        return
    for v in source.videos():
        if v.frame_numbers is not None and list(v.frame_numbers) != list(range(v.num_frames)):
            c = reader.spec.clips
            raise StoreError(
                f"store {reader.path} was made when clips.step ({c.step}) and clips.stride counted stored "
                f"frames, but the frames of {source.kind} {source.split!r} are not every raw frame (video "
                f"{v.video_id!r}: {', '.join(map(str, v.frame_numbers[:3]))}, ...): steps now count raw frames. "
                "Rebuild the store with mosic-precompute")


def explain_mismatch(reader: StoreReader, source) -> list[str]:
    """Which of the store's videos differ on disk: missing, other frame size, too few frames, or a
    frame count that cuts other clips than the store holds (the store keeps only a hash of the
    frame counts, so a changed count is found only where it changes the clips)."""
    infos = {v.video_id: v for v in source.videos()}
    by_video: dict[str, list] = defaultdict(list)
    for c in reader.clips:
        by_video[c.video_id].append(c)
    lines: list[str] = []
    unsure = []
    for vid, clips in by_video.items():
        v = infos.get(vid)
        c = clips[0]
        if v is None:
            lines.append(f"video {vid!r}: not on disk")
        elif (v.width, v.height) != (c.width, c.height):
            lines.append(f"video {vid!r}: frames are {v.width}x{v.height} on disk, {c.width}x{c.height} in the store")
        elif v.num_frames <= max(max(k.frames) for k in clips):
            lines.append(f"video {vid!r}: {v.num_frames} frames on disk, the store's clips use frame "
                         f"{max(max(k.frames) for k in clips)}")
        else:
            unsure.append(vid)
    if unsure:
        planned, _ = plan_clips([infos[v] for v in unsure], reader.spec.clips)
        got: dict[str, set] = defaultdict(set)
        for c in planned:
            got[c.video_id].add(c.frames)
        for vid in unsure:
            if got[vid] != {c.frames for c in by_video[vid]}:
                lines.append(f"video {vid!r}: its frame count changed ({infos[vid].num_frames} frames on "
                             "disk cut other clips than the store holds): a frame was added or deleted?")
    return lines


# ------------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------------
def collate_clips(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of items: frames uint8 [B, T, 3, S, S], tracks [B, T, N, 2], visibility [B, T, N],
    index int64 [B], video_id list[str], cache_fallback bool [B]."""
    if not batch:
        raise ValueError("empty batch")
    return {
        "frames": torch.stack([b["frames"] for b in batch]),
        "tracks": torch.stack([b["tracks"] for b in batch]),
        "visibility": torch.stack([b["visibility"] for b in batch]),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.int64),
        "video_id": [b["video_id"] for b in batch],
        "cache_fallback": torch.tensor([bool(b.get("cache_fallback", False)) for b in batch]),
    }
