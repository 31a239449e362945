"""Grid benchmark: how many of a clip's trajectories a crop keeps, and what a denser stored grid costs.

The official code tracks a 16 x 16 grid on the clip AFTER cropping, so every crop holds 256
trajectories on its own grid. mosic tracks once, on the full frame, and crops afterwards:

* full-frame grid 16, cropped (mosic before): the points that fall inside the crop;
* full-frame grid 30 (the training pipelines' default), the 16 x 16 trajectories nearest to the
  crop's grid cells: how many lie inside the crop, and how far their first-frame points are from
  the ideal grid, in crop pixels (224 px crop, 14 px cells).

Crops: RandomResizedCrop(224, scale 0.4-1, ratio 3/4-4/3) on the squashed frame, as training draws
them (``mosic.train.augment.sample_crop``), on 1280 x 720 frames (the crop is drawn in the squashed
frame, so the figures do not depend on the frame size). The cost side:
precompute (lk on this CPU: read frames, track, write) and the store's size on disk, grid 16 vs 30,
on a small synthetic set.

    python bench/bench_grid.py [--crops 5000] [--videos 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from results_file import write_results


def crop_stats(width: int, height: int, crops: int, store_grid: int, grid: int, select: bool) -> dict:
    from mosic.data.grid import grid_queries
    from mosic.train.augment import map_tracks, sample_crop
    from mosic.train.ops import crop_grid, select_grid_points

    q = grid_queries(store_grid, width, height)[None]  # the first frame's points [1, N, 2]
    ideal = crop_grid(224, grid)
    inside, dist, repeats = [], [], 0
    rng = np.random.default_rng(0)
    for _ in range(crops):
        box = sample_crop(rng, width, height, (0.4, 1.0), (3 / 4, 4 / 3), 0.5, 224)
        tr, vis = map_tracks(q, np.ones(q.shape[:2], bool), box)
        if select:
            idx, d = select_grid_points(tr[0], 224, grid)
            inside.append(int(vis[0, idx].sum()))
            dist.append(d)
            repeats += len(set(idx.tolist())) < len(idx)
            assert np.allclose(d, np.linalg.norm(tr[0, idx] - ideal, axis=1), atol=1e-3)
        else:
            inside.append(int(vis[0].sum()))
    inside = np.asarray(inside)
    out = {"mean_inside": float(inside.mean()), "p10_inside": float(np.percentile(inside, 10)),
           "min_inside": int(inside.min())}
    if dist:
        d = np.concatenate(dist)
        out.update(mean_px=float(d.mean()), p90_px=float(np.percentile(d, 90)), max_px=float(d.max()),
                   crops_with_a_repeated_point=repeats)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", type=int, default=5000)
    p.add_argument("--videos", type=int, default=6)
    a = p.parse_args()

    import torch

    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute

    torch.set_num_threads(2)
    results: dict = {"crops": {}, "store": {}}
    print(f"points of a 16 x 16 training grid in a crop ({a.crops} crops; official: 256 inside, 0 px)")
    print(f"{'frame':>9s} {'stored grid':>12s} {'selection':>16s} {'mean in':>8s} {'p10 in':>7s} {'min in':>7s} "
          f"{'mean px':>8s} {'p90 px':>7s} {'max px':>7s}")
    for (w, h) in ((1280, 720),):
        for store_grid, select in ((16, False), (30, True), (32, True)):
            s = crop_stats(w, h, a.crops, store_grid, 16, select)
            results["crops"][f"{w}x{h}-g{store_grid}"] = s
            how = "nearest to cells" if select else "inside the crop"
            px = (f"{s['mean_px']:8.2f} {s['p90_px']:7.2f} {s['max_px']:7.2f}" if select else f"{'-':>8s} {'-':>7s} {'-':>7s}")
            print(f"{w}x{h:<4d} {store_grid:>12d} {how:>16s} {s['mean_inside']:8.1f} {s['p10_inside']:7.0f} "
                  f"{s['min_inside']:7d} {px}" + (f"  (crops with a repeated point: "
                                                 f"{s['crops_with_a_repeated_point']})" if select else ""))

    work = Path(tempfile.mkdtemp(prefix="mosic-bench-grid-"))
    generate(work / "synthetic", videos=a.videos, seed=11)
    print(f"\nprecompute and store size ({a.videos} synthetic videos, 320 x 240, lk on this CPU, T = 12):")
    print(f"{'grid':>5s} {'points':>7s} {'clips':>6s} {'seconds':>8s} {'clips/s':>8s} {'bytes/clip':>11s} {'vs g16':>7s}")
    base = None
    for g in (16, 30):
        cfg = load_pipeline("synthetic", overrides={"dataset.root": str(work / "synthetic"),
                                                    "stores": str(work / "stores"), "tracker.grid": g})
        t0 = time.perf_counter()
        res = precompute(cfg, progress=False)
        sec = time.perf_counter() - t0
        size = sum(f.stat().st_size for sub in ("tracks", "visibility")
                   for f in (Path(res.store) / sub).rglob("*") if f.is_file())
        per = size / res.done
        base = base or per
        results["store"][f"g{g}"] = {"clips": res.done, "seconds": sec, "bytes_per_clip": per}
        print(f"{g:5d} {g * g:7d} {res.done:6d} {sec:8.1f} {res.done / sec:8.1f} {per:11.0f} {per / base:6.2f}x")
    write_results("grid", results)


if __name__ == "__main__":
    main()
