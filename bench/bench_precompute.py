"""Precompute benchmark: end-to-end throughput of `mosic-precompute` (read frames, track, write
the store) per tracker on the synthetic set, in frames/s and clips/s, measured in one run.

    python bench/bench_precompute.py [--videos 12] [--trackers lk,oracle]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from results_file import write_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--trackers", default="lk,oracle")
    p.add_argument("--grid", type=int, default=16)
    a = p.parse_args()

    import torch

    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute
    from mosic.precompute.scoring import score_store
    from mosic.store_schema.reader import StoreReader, open_frame_source

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    t0 = time.perf_counter()
    generate(work / "synthetic", videos=a.videos, seed=7)
    gen_s = time.perf_counter() - t0
    n_frames = sum(len(list(d.iterdir())) for d in (work / "synthetic/train/JPEGImages").iterdir())
    print(f"synthetic set: {a.videos} videos, {n_frames} frames of 320x240 in {gen_s:.1f}s "
          f"= {n_frames / gen_s:.0f} frames/s (includes JPEG/PNG encoding)")
    results = {"generate_frames_per_s": n_frames / gen_s}
    print(f"\n{'tracker':10s} {'clips':>6s} {'frames/s':>9s} {'clips/s':>8s} {'delta_avg':>9s} {'AJ':>6s}")
    for name in a.trackers.split(","):
        cfg = load_pipeline(
            "synthetic",
            overrides={"dataset.root": str(work / "synthetic"), "stores": str(work / "stores"),
                       "tracker.name": name, "tracker.grid": a.grid, "clips.clips_per_video": 3},
        )
        res = precompute(cfg, progress=False)
        r = StoreReader(res.store)
        sc = score_store(r, open_frame_source(r))
        fps = res.frames_tracked / res.seconds
        results[name] = {"clips": res.done, "frames_per_s": fps, "clips_per_s": res.done / res.seconds,
                         "delta_avg": sc["delta_avg"], "average_jaccard": sc["average_jaccard"]}
        print(f"{name:10s} {res.done:6d} {fps:9.1f} {res.done / res.seconds:8.2f} "
              f"{sc['delta_avg']:9.1f} {sc['average_jaccard']:6.1f}")
    write_results("precompute", results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
