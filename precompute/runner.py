"""The precompute job: plan clips, track them, write the store. Resumable, failure-tolerant.

A re-run with the same settings opens the same store and only does clips that are not written
yet (and, by default, clips that failed before). Work is written a chunk of clips at a time, so a
killed run loses at most the chunk in flight. A clip whose frames cannot be read, or whose
tracks come back non-finite, is recorded as failed with the reason and the run goes on.

Several processes started on one local store split its chunks (:mod:`mosic.precompute.claims`): each
works on a chunk only while it holds the chunk's claim, takes the free ones first, then waits for those
others hold and does what they left; ``--shard`` splits the chunks up front instead (any store, remote ones
included).
"""

from __future__ import annotations

import errno
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import mosic
from mosic import MosicError
from mosic.config import PipelineConfig
from mosic.data.base import ClipRef, FrameReadError, FrameSource, create_source, plan_clips
from mosic.data.grid import grid_queries
from mosic.precompute.claims import ChunkClaims
from mosic.precompute.trackers.base import Tracker, create_tracker
from mosic.store_schema import layout as L
from mosic.store_schema import location
from mosic.store_schema.layout import Failure
from mosic.store_schema.spec import READABLE_SCHEMA_VERSIONS, DatasetSpec, StoreSpec, TrackerSpec
from mosic.store_schema.writer import StoreWriter

log = logging.getLogger("mosic.precompute")


@dataclass
class PrecomputeResult:
    store: location.Location  # a Path, or a URL for a store on object storage
    clips: int
    written_now: int
    done: int
    failed: int
    complete: bool
    seconds: float
    frames_tracked: int
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.complete and not self.failures


def build_spec(cfg: PipelineConfig, source: FrameSource, tracker: Tracker) -> StoreSpec:
    return StoreSpec(
        dataset=DatasetSpec(
            kind=source.kind, split=source.split, fingerprint=source.fingerprint(),
            num_videos=len(source.videos()),
        ),
        clips=cfg.clips,
        grid=cfg.tracker.grid,
        frame_numbering="raw",
        tracker=TrackerSpec(
            name=tracker.name, version=tracker.version,
            checkpoint_sha256=tracker.checkpoint_hash(), params=tracker.params(),
        ),
    )


def store_path_for(cfg: PipelineConfig, spec: StoreSpec) -> location.Location:
    """``cfg.stores`` / the spec's store name; ``cfg.stores`` may be a URL prefix (s3://bucket/stores).
    Where no store of this layout is there but one of the same spec in an older layout (schema version)
    is, that one: an incomplete store is finished in its own layout, and a complete one is not tracked
    again (``mosic-store convert`` rewrites it in the current layout)."""
    path = location.join(cfg.stores, spec.store_name())
    if location.exists(path):
        return path
    for version in sorted((v for v in READABLE_SCHEMA_VERSIONS if v < spec.schema_version), reverse=True):
        older = location.join(cfg.stores, spec.in_schema(version).store_name())
        if location.exists(older):
            log.warning("using %s, the store of these settings in the older layout of store schema %d; "
                        "`mosic-store convert %s` rewrites it for any Zarr v3 reader", older, version, older)
            return older
    return path


def _grid_failures(clips: list[ClipRef], grid: int, track_size) -> tuple[list[ClipRef], list[Failure]]:
    keep, bad, seen = [], [], set()
    for c in clips:
        w, h = track_size or (c.width, c.height)
        if grid > min(w, h):
            if c.video_id not in seen:
                bad.append(Failure(video_id=c.video_id, reason=f"grid {grid} x {grid} is larger than the "
                                   f"{w} x {h} image it is tracked at"))
                seen.add(c.video_id)
        else:
            keep.append(c)
    return keep, bad


class _ChunkWork:
    """Tracks the clips of one chunk and collects their outcomes."""

    def __init__(self, writer: StoreWriter, a: int, b: int, T: int, N: int):
        self.a, self.b = a, b
        n = b - a
        self.tracks = np.zeros((n, T, N, 2), np.float32)
        self.vis = np.zeros((n, T, N), bool)
        self.failures: list[Failure] = []
        # clips of this chunk that are already written keep their data; only this chunk's status
        # is read (not the whole array once per chunk)
        st = writer.status(a, b)
        if np.any(st == L.DONE):
            self.tracks[:], self.vis[:] = writer.read(a, b)
        self.status = np.where(st == L.DONE, L.DONE, L.PENDING).astype(np.uint8)

    def fail(self, i: int, clip: ClipRef, reason: str) -> None:
        self.status[i - self.a] = L.FAILED
        self.failures.append(Failure(video_id=clip.video_id, clip=int(i), reason=reason))


def precompute(
    cfg: PipelineConfig,
    store: str | Path | None = None,
    retry_failed: bool = True,
    progress: bool = True,
    source: FrameSource | None = None,
    tracker: Tracker | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> PrecomputeResult:
    """Run the precompute job described by ``cfg``; returns what happened. ``shard=(i, n)``: this
    process writes only its share of the chunks; n processes (Slurm array tasks, torchrun ranks)
    fill one store together, and whichever finishes last marks it complete."""
    t0 = time.perf_counter()
    source = source or create_source(cfg.dataset.kind, cfg.dataset.root, cfg.dataset.split)
    videos = source.videos()
    clips, plan_fail = plan_clips(videos, cfg.clips)
    unreadable = getattr(source, "unreadable", {}) or {}  # video files the decoder could not open: say why
    plan_failures = [Failure(video_id=f.video_id, reason=f"unreadable ({unreadable[f.video_id]})"
                             if f.video_id in unreadable else f.reason) for f in plan_fail]
    clips, grid_fail = _grid_failures(clips, cfg.tracker.grid, cfg.clips.track_size)
    plan_failures += grid_fail
    if not clips:
        reasons = "; ".join(f"{f.video_id}: {f.reason}" for f in plan_failures[:5])
        raise MosicError(f"no clip can be cut from the {len(videos)} videos under {source.root} ({reasons})")
    tracker = tracker or create_tracker(cfg.tracker, source)
    spec = build_spec(cfg, source, tracker)
    path = location.as_location(store) if store else store_path_for(cfg, spec)
    writer = StoreWriter.open_or_create(
        path, spec, clips, plan_failures,
        clips_per_chunk=cfg.store.clips_per_chunk, compression_level=cfg.store.compression_level,
        made_with={"mosic": mosic.__version__, "root": str(source.root), "pipeline": cfg.name},
    )
    todo = writer.todo(retry_failed=retry_failed, shard=shard)
    total = sum(len(idx) for _, _, idx in todo)
    T, N = spec.clips.length, spec.num_points
    claims = ChunkClaims.of(path)
    job = _Job(cfg, source, tracker, clips, writer, T, N, planned_status=writer.status())

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="clip", desc=f"tracking ({tracker.name})", dynamic_ncols=True)
    try:
        # Frames for the next batch are decoded in threads while the tracker works on this one.
        with ThreadPoolExecutor(max_workers=2) as pool:
            held_elsewhere = []
            for a, b, idx in todo:  # the chunks no other process holds
                claim = claims.take(a) if claims is not None else None
                if claims is not None and claim is None:
                    held_elsewhere.append((a, b, idx))
                    continue
                _claimed_chunk(job, pool, claim, a, b, idx, bar, on_chunk)
            if held_elsewhere:
                log.info("%d chunk(s) are being written by another process: waiting for them", len(held_elsewhere))
            for a, b, idx in held_elsewhere:  # then what the others leave (a crashed one's chunk included)
                _claimed_chunk(job, pool, claims.wait(a), a, b, idx, bar, on_chunk)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        raise Interrupted(_interrupted_message(writer, path)) from None
    if bar is not None:
        bar.close()
    complete = writer.finalize()
    if complete and claims is not None:
        claims.remove()
    st = writer.status()
    failures = writer.failures()
    return PrecomputeResult(
        store=path, clips=len(clips), written_now=job.written, done=int((st == L.DONE).sum()),
        failed=int((st == L.FAILED).sum()), complete=complete,
        seconds=time.perf_counter() - t0, frames_tracked=job.frames_tracked, failures=failures,
    )


@dataclass
class _Job:
    """What every chunk of one precompute run uses, and what it has done so far."""

    cfg: PipelineConfig
    source: FrameSource
    tracker: Tracker
    clips: list[ClipRef]
    writer: StoreWriter
    T: int
    N: int
    planned_status: np.ndarray  # every clip's status when the run planned its work
    written: int = 0
    frames_tracked: int = 0

    def read(self, i: int):
        try:
            return i, self.source.read_clip(self.clips[i]), None
        except FrameReadError as e:
            return i, None, str(e)
        except Exception as e:  # noqa: BLE001 - a decoder crash on one video must not stop the run
            return i, None, f"video {self.clips[i].video_id!r}: {type(e).__name__}: {e}"

    def read_batch(self, ids: list[int]) -> list:
        return [self.read(i) for i in ids]


def _claimed_chunk(job: _Job, pool: ThreadPoolExecutor, claim, a: int, b: int, planned: np.ndarray, bar,
                   on_chunk) -> None:
    """Track and write chunk ``a:b`` while holding its ``claim`` (None: nothing to claim, a remote store or a
    shard): only the ``planned`` clips whose status is still what it was when the run planned them (another
    process may have written the chunk meanwhile)."""
    try:
        idx = planned
        if claim is not None:  # what another process wrote meanwhile is not done again
            idx = planned[job.writer.status(a, b)[planned - a] == job.planned_status[planned]]
        if len(idx):
            _do_chunk(job, pool, a, b, idx)
    finally:
        if claim is not None:
            claim.release()
    if bar is not None:  # clips count once their chunk is on disk
        bar.update(len(planned))
    if on_chunk is not None:
        on_chunk(a, b)


def _do_chunk(job: _Job, pool: ThreadPoolExecutor, a: int, b: int, idx: np.ndarray) -> None:
    """Track clips ``idx`` of chunk ``a:b`` and write the chunk."""
    work = _ChunkWork(job.writer, a, b, job.T, job.N)
    bs = max(1, job.tracker.batch_size)
    batches = _batches_by_size([job.clips[i] for i in idx], list(idx), bs)
    for got in _prefetch(pool, job.read_batch, batches):
        ok = []
        for i, frames, err in got:
            if err is not None:
                work.fail(i, job.clips[i], err)
            else:
                ok.append((i, frames))
        if ok:
            job.frames_tracked += _track_batch(job.tracker, job.cfg, job.clips, ok, work)
    _write(job.writer, a, b, work)
    job.written += int((work.status[idx - a] == L.DONE).sum())


class Interrupted(KeyboardInterrupt):
    """The run was stopped (Ctrl-C or SIGTERM); the message says what was kept and how to go on."""


def _interrupted_message(writer: StoreWriter, path) -> str:
    st = writer.status()
    return (f"interrupted: {int((st == L.DONE).sum())} of {len(st)} clips are saved in {path} (the clips of "
            "the chunk in flight are not); run the same command again to go on from there")


def _write(writer: StoreWriter, a: int, b: int, work: "_ChunkWork") -> None:
    """Write one chunk; a full disk or a read-only store stops the run with a clear error, and the
    chunks written before stay valid (each chunk file is replaced atomically, status last)."""
    try:
        writer.write_chunk(a, work.tracks, work.vis, work.status, work.failures)
    except OSError as e:
        what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "the file system is read-only"}.get(e.errno, f"{type(e).__name__}: {e}")
        done = int((writer.status() == L.DONE).sum())
        raise MosicError(
            f"cannot write clips {a}..{b - 1} to {writer.path}: {what} ({e.filename or e}). "
            f"The {done} clips written before are intact; fix this and re-run the same command to go on"
        ) from None


def _prefetch(pool: ThreadPoolExecutor, fn, items: list, depth: int = 1):
    """Yield ``fn(item)`` for each item in order, computing up to ``depth`` items ahead."""
    futures = [pool.submit(fn, it) for it in items[: depth + 1]]
    for k in range(len(items)):
        if k + depth + 1 < len(items):
            futures.append(pool.submit(fn, items[k + depth + 1]))
        yield futures[k].result()
        futures[k] = None


def _batches_by_size(clips: Sequence[ClipRef], idx: list[int], bs: int) -> list[list[int]]:
    """Group clip indices into batches of at most ``bs`` clips with equal frame sizes."""
    groups: dict[tuple[int, int], list[int]] = {}
    for c, i in zip(clips, idx):
        groups.setdefault((c.width, c.height), []).append(i)
    out = []
    for ids in groups.values():
        out += [ids[k:k + bs] for k in range(0, len(ids), bs)]
    return out


def _track_batch(tracker: Tracker, cfg: PipelineConfig, clips, ok, work: _ChunkWork) -> int:
    ids = [i for i, _ in ok]
    frames = np.stack([f for _, f in ok])
    batch_clips = [clips[i] for i in ids]
    c0 = batch_clips[0]
    queries = grid_queries(cfg.tracker.grid, c0.width, c0.height)
    try:
        res = tracker.run(frames, queries, batch_clips, cfg.clips.track_size)
        results = [(i, res.tracks[k], res.visibility[k]) for k, i in enumerate(ids)]
    except MosicError:
        raise
    except Exception as e:  # noqa: BLE001
        if len(ids) == 1:
            work.fail(ids[0], clips[ids[0]], f"tracker {tracker.name} failed: {type(e).__name__}: {e}")
            return 0
        log.warning("tracker failed on a batch of %d clips (%s); retrying them one by one", len(ids), e)
        return sum(_track_batch(tracker, cfg, clips, [item], work) for item in ok)
    for i, tr, vis in results:
        if not np.isfinite(tr).all():
            work.fail(i, clips[i], f"tracker {tracker.name} returned non-finite coordinates")
            continue
        work.tracks[i - work.a] = tr
        work.vis[i - work.a] = vis
        work.status[i - work.a] = L.DONE
    return int(frames.shape[0] * frames.shape[1])
