"""Which store a pipeline trains on, and whether it holds one global batch per epoch."""

from __future__ import annotations

import logging
from typing import Any

from mosic import MosicError
from mosic.config import PipelineConfig, TrainSettings
from mosic.store_schema.location import Location, as_location, list_stores
from mosic.train.summary import nearest_store, yaml_value

log = logging.getLogger("mosic.train")


def store_requirements(cfg: PipelineConfig, grid: bool = True) -> dict[str, Any]:
    """What a pipeline asks of its store (dotted StoreSpec fields). ``grid=False`` leaves the
    stored grid free: training takes a per-crop grid from any store dense enough, else the stored
    points inside each crop."""
    req = {
        "dataset.kind": cfg.dataset.kind,
        "dataset.split": cfg.dataset.split,
        "tracker.name": cfg.tracker.name,
    }
    if grid:
        req["grid"] = cfg.tracker.grid
    if cfg.tracker.name == "cotracker3" and cfg.tracker.precision != "auto":  # e.g. ytvos-official: fp32 tracks
        req["tracker.params.precision"] = cfg.tracker.precision
    req.update({f"clips.{k}": v for k, v in cfg.clips.model_dump(mode="json").items()})
    return req


def resolve_store(cfg: PipelineConfig, ts: TrainSettings) -> Location:
    """The store given explicitly, or the single complete store in ``cfg.stores`` that fits.
    Either may be a URL (``s3://bucket/stores``): a Path comes back for local stores, a URL else."""
    if ts.store:
        return as_location(ts.store)
    from mosic.store_schema.reader import StoreError, StoreReader

    stores = as_location(cfg.stores)
    req = store_requirements(cfg)
    fits, other_grid, others = [], [], []
    for p in list_stores(stores):
        try:
            StoreReader(p, require=req)
            fits.append(p)
        except StoreError:
            try:  # the same clips tracked on another grid (e.g. `mosic-precompute --grid 16`)
                other_grid.append((p, StoreReader(p, require=store_requirements(cfg, grid=False)).spec.grid))
            except StoreError:
                others.append(p.name)
    if len(fits) == 1:
        return fits[0]
    if not fits and len(other_grid) == 1:
        p, g = other_grid[0]
        log.warning("no store with the pipeline's %d x %d grid in %s; training on %s, tracked on a %d x %d grid",
                    cfg.tracker.grid, cfg.tracker.grid, stores, p.name, g, g)
        return p
    others += [p.name for p, _ in other_grid]
    want = ", ".join(f"{k}={v}" for k, v in req.items())
    if not fits:
        near = nearest_store(stores, req)
        if near is not None:
            p, diffs = near
            fields = ", ".join(f"{k} (store {have!r}, pipeline {want!r})" for k, have, want in diffs)
            sets = " ".join(f"--tracker {have}" if k == "tracker.name" else f"--set {k}={yaml_value(have)}"
                            for k, have, _ in diffs)  # --tracker: the shortcut mosic-precompute has too
            raise MosicError(
                f"no complete store in {stores}/ fits pipeline {cfg.name!r}; the nearest, {p.name}, differs in "
                f"{fields}: train on it with `{sets}`, or make the pipeline's store with "
                f"`mosic-precompute --pipeline {cfg.name}`")
        raise MosicError(
            f"no complete store in {stores}/ fits pipeline {cfg.name!r} ({want}); run "
            f"`mosic-precompute --pipeline {cfg.name}` first, or pass --store PATH"
            + (f". Stores there: {', '.join(others)}" if others else "")
        )
    raise MosicError(f"several stores in {stores}/ fit pipeline {cfg.name!r}: "
                     f"{', '.join(p.name for p in fits)}; choose one with --store PATH")


def check_batch_fits(items: int, stored_clips: int, global_batch: int, world: int, clip_sampling: str) -> None:
    """Refuse a global batch larger than an epoch's items, naming the two settings that fix it and
    the numbers that would work: a batch of at most ``items`` (a multiple of the process count),
    or every stored clip in every epoch (``clip_sampling: all``) when that gives enough items."""
    if items >= global_batch:
        return
    fits = items - items % world
    ways = []
    if fits >= 1:
        ways.append(f"--batch-size {fits} (train.batch_size; at most {items}"
                    + (f", a multiple of the {world} processes" if world > 1 else "") + ")")
    if clip_sampling != "all" and stored_clips >= global_batch:
        ways.append(f"--set train.clip_sampling=all (every one of the store's {stored_clips} clips in every epoch, "
                    f"not one per video)")
    if not ways:
        ways.append("a store with more clips (more videos, or a smaller clips.stride at precompute)")
    what = "videos" if clip_sampling == "per_video" else "clips"
    raise MosicError(f"the store gives {items} training items per epoch ({what}, train.clip_sampling={clip_sampling}), "
                     f"fewer than one global batch of {global_batch} clips (train.batch_size): use "
                     + ", or ".join(ways))
