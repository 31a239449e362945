"""`cotracker3` through the real package (random-weight checkpoint), bf16, 16 x 16 and the
default 30 x 30 grid: batch 1 vs batched clips/s; the batched tracks (positions and
visibility, every point and frame) equal to batch 1 within a stated tolerance, a fall
back to batch 1 counted as a failure, and the tolerance shown to tell clips apart

Skipped where the cotracker package is not installed (bench/gpu_wheels.sh carries a wheel of it).
CoTracker initialises its output heads at std 0.001: with random weights every track would stay
within a hundredth of a pixel of its query, so the heads are scaled by HEAD_SCALE and the
comparison requires neighbouring clips' tracks to lie well apart (clip_separation)."""

from __future__ import annotations

import time
from pathlib import Path

from gpu_parts.common import Ctx, sync

#: the CoTracker comparison: batched vs batch 1, every point of every frame
COTRACKER_TOL = {"p99_px": 1.0, "vis_agree": 0.99}
HEAD_SCALE = 300.0  # random CoTracker output heads at std 0.3 instead of 0.001 (see run)


def compare_tracks(ref, got) -> dict:
    """Batched ``got`` against batch-1 ``ref`` (TrackResults of the same clips): distances over every
    point of every frame, visibility agreement over the same."""
    import numpy as np

    d = np.linalg.norm(got.tracks.astype(np.float64) - ref.tracks, axis=-1)
    finite = bool(np.isfinite(got.tracks).all() and np.isfinite(ref.tracks).all())
    return {"p99_px": float(np.percentile(d, 99)) if finite else float("nan"),
            "max_px": float(d.max()) if finite else float("nan"),
            "vis_agree": float((got.visibility == ref.visibility).mean()), "finite": finite}


def clip_separation(ref) -> float:
    """99th percentile distance between the batch-1 tracks of neighbouring clips after frame 0: what
    a batched call that mixed clips up would at least be off by. The comparison means something
    only when this is well above the tolerance."""
    import numpy as np

    tr = ref.tracks
    if len(tr) < 2 or tr.shape[1] < 2:
        return float("nan")
    d = np.linalg.norm(tr[1:, 1:].astype(np.float64) - tr[:-1, 1:], axis=-1)
    return float(np.percentile(d, 99))


def batched_row(cmp: dict, separation: float, fell_back: bool) -> tuple[bool, str]:
    """(ok, why not) of one batched-vs-batch-1 comparison."""
    if fell_back:
        return False, "the batched call failed and the tracker fell back to batch 1"
    if not cmp["finite"]:
        return False, "non-finite tracks"
    if not separation > 2 * COTRACKER_TOL["p99_px"]:
        return False, (f"neighbouring clips' tracks differ by only {separation:.2f} px (p99): the comparison "
                       "cannot tell clips apart")
    if cmp["p99_px"] > COTRACKER_TOL["p99_px"] or cmp["vis_agree"] < COTRACKER_TOL["vis_agree"]:
        return False, (f"batched tracks differ from batch 1: p99 {cmp['p99_px']:.2f} px, visibility agrees on "
                       f"{100 * cmp['vis_agree']:.1f}%")
    return True, ""


def random_checkpoint(path: Path) -> Path:
    """A CoTracker3 (offline) checkpoint with random weights at ``path``, its output heads scaled up."""
    import torch

    from mosic.precompute.trackers.cotracker import import_predictor_class

    torch.manual_seed(0)
    pred = import_predictor_class()(checkpoint=None, offline=True, v2=False, window_len=60)
    # CoTracker initialises its output heads at std 0.001: with random weights every track would stay
    # within a hundredth of a pixel of its query, and a batched call that mixed clips up would pass.
    # Scaled up, the random tracks and visibilities differ from clip to clip (clip_separation shows it)
    sd = pred.model.state_dict()
    for k in sd:
        if k.endswith(("flow_head.weight", "vis_conf_head.weight")):
            sd[k] = sd[k] * HEAD_SCALE
    torch.save(sd, path)
    return path


def make_tracker(checkpoint: Path, cfg: dict, batch_size: int):
    """mosic's CoTracker adapter at ``batch_size`` on the run's device and precision."""
    from mosic.precompute.trackers.cotracker import CoTrackerTracker

    return CoTrackerTracker(checkpoint=checkpoint, batch_size=batch_size, device=cfg["device"],
                            precision=cfg["precision"])


def run(ctx: Ctx) -> dict:
    import numpy as np
    import torch

    try:
        import cotracker  # noqa: F401
    except ImportError:
        return {"status": "skipped", "reason": "the cotracker package is not installed (see bench/gpu_wheels.sh)"}
    from mosic.data.grid import grid_queries
    from mosic.store_schema.reader import StoreReader, open_frame_source

    cfg = ctx.cfg
    ck = random_checkpoint(ctx.work / "cotracker_random.pth")
    out: dict = {"status": "ok", "precision": cfg["precision"],
                 "tolerance": f"batched vs batch 1 over every point and frame: p99 <= {COTRACKER_TOL['p99_px']} px, "
                              f"visibility agreeing on >= {100 * COTRACKER_TOL['vis_agree']:.0f}%; no fall-back "
                              "to batch 1; neighbouring clips' tracks > 2x the tolerance apart"}
    errors = []
    warm = cfg["device"] != "cpu"  # warm-up calls (CUDA kernels, allocator); on the CPU: time
    for size in cfg["sizes"][: cfg["cot_sizes"]]:
        root, _, store = ctx.data(size)
        r = StoreReader(store)
        src = open_frame_source(r, None, verify=False)
        clips = [r.clips[i] for i in r.done]
        clips = [clips[k % len(clips)] for k in range(cfg["cot_clips"])]
        frames = np.stack([src.read_clip(c) for c in clips])
        for grid in cfg["cot_grids"]:
            q = grid_queries(grid, size[0], size[1])
            row: dict = {"points": int(len(q))}
            tr1 = make_tracker(ck, cfg, 1)
            if warm:
                tr1.track(frames[:1], q)
            sync(cfg["device"])
            t = time.perf_counter()
            res1 = tr1.track(frames, q)
            sync(cfg["device"])
            row["batch1_clips_s"] = len(clips) / (time.perf_counter() - t)
            row["clip_separation_p99_px"] = sep = clip_separation(res1)
            del tr1
            for bs in cfg["cot_batches"]:
                trb = make_tracker(ck, cfg, bs)  # a fresh tracker: a fall-back to batch 1 is permanent in one
                if warm:
                    trb.track(frames[:bs], q)
                sync(cfg["device"])
                t = time.perf_counter()
                resb = trb.track(frames, q)
                sync(cfg["device"])
                row[f"batch{bs}_clips_s"] = len(clips) / (time.perf_counter() - t)
                cmp = compare_tracks(res1, resb)
                fell_back = not trb._batched_ok
                ok, why = batched_row(cmp, sep, fell_back)
                row.update({f"batch{bs}_{k}": v for k, v in cmp.items()})
                row[f"batch{bs}_fell_back"] = fell_back
                row[f"batch{bs}_view_fixes_used"] = trb.view_fixes_used
                row[f"batch{bs}_ok"] = ok
                if not ok:
                    errors.append(f"{size[0]}x{size[1]} grid {grid} batch {bs}: {why}")
                del trb
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            out[f"{size[0]}x{size[1]} grid {grid}"] = row
    if errors:
        out["status"] = "failed"
        out["error"] = "; ".join(errors)
    return out
