"""``make demo``: the whole pipeline, end to end, on the built-in synthetic data.

Today: generate the synthetic set -> precompute tracks with ``lk`` and ``oracle`` -> inspect the
stores and score them against the exact ground truth -> draw one clip. Training and evaluation
join this script as they land.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mosic import MosicError


def _banner(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def run(data: Path, stores: Path, videos: int, seed: int, out: Path) -> dict:
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from precompute.runner import precompute
    from precompute.scoring import score_store
    from precompute.visualize import draw_tracks, save_frames
    from store_schema.reader import StoreReader, open_frame_source

    out.mkdir(parents=True, exist_ok=True)
    _banner(f"1. synthetic data: {videos} videos -> {data}")
    t = time.perf_counter()
    if (data / "train" / "meta.json").is_file():
        print(f"(already there; delete {data} to regenerate)")
    else:
        generate(data, videos=videos, seed=seed, progress=True)
        print(f"generated in {time.perf_counter() - t:.1f}s")

    results = {}
    for pipe in ("synthetic", "synthetic-oracle"):
        cfg = load_pipeline(pipe, overrides={"dataset.root": str(data), "stores": str(stores)})
        _banner(f"2. tracks: pipeline {pipe!r} (tracker {cfg.tracker.name}, grid {cfg.tracker.grid})")
        res = precompute(cfg)
        print(f"store {res.store}: {res.done} clips done, {res.failed} failed, "
              f"{res.frames_tracked / max(res.seconds, 1e-9):.0f} frames/s")
        reader = StoreReader(res.store)
        source = open_frame_source(reader)
        scores = score_store(reader, source)
        results[cfg.tracker.name] = {
            "store": str(res.store),
            "clips": res.done,
            "visibility_rate": round(100 * reader.visibility_rate(), 1),
            **{k: round(scores[k], 1) for k in ("delta_avg", "occlusion_accuracy", "average_jaccard")},
        }
        item = reader[0]
        pic = save_frames(draw_tracks(source.read_clip(item.clip), item.tracks, item.visibility),
                          out / f"tracks-{cfg.tracker.name}.png")
        print(f"drew clip 0 to {pic}")

    _banner("3. tracking quality against the exact ground truth (TAP-Vid, percent)")
    print(f"{'tracker':10s} {'clips':>6s} {'visible%':>9s} {'delta_avg':>10s} {'OA':>6s} {'AJ':>6s}")
    for name, r in results.items():
        print(f"{name:10s} {r['clips']:6d} {r['visibility_rate']:9.1f} {r['delta_avg']:10.1f} "
              f"{r['occlusion_accuracy']:6.1f} {r['average_jaccard']:6.1f}")
    (out / "demo-results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults saved to {out / 'demo-results.json'}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/synthetic"))
    p.add_argument("--stores", type=Path, default=Path("stores"))
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    a = p.parse_args(argv)
    try:
        run(a.data, a.stores, a.videos, a.seed, a.out)
    except MosicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
