"""Clip-stride benchmark: precompute cost against clip variety, for the default clip settings
(T = 12 frames every 6th raw frame: a clip spans 67 raw frames).

The official loader draws a new random start (any raw frame) for every video in every epoch, and
tracks that clip inside the training step: 8 tracker runs per video over 8 epochs, every one on a
different clip. mosic tracks a video's clips once, with starts every ``stride`` raw frames, and
training draws one of them per video per epoch. For each stride this prints:

* clips/video and clips to track (precompute cost is proportional to the clips tracked);
* distinct clips a video shows over 8 epochs (drawn exactly as training draws them, ``pick_clip``);
* the mean distance, in raw frames, from an official random start to the nearest stored start.

Video lengths: a YouTube-VOS root if given (``--root``, raw frame numbers from the file names);
otherwise N lengths drawn uniformly from 90-180 raw frames (YouTube-VOS videos are 3-6 s at 30 fps).

    python bench/bench_clips.py [--root /data/youtube-vos --split train_all_frames] [--videos 3471]
"""

from __future__ import annotations

import argparse

import numpy as np

from results_file import write_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None)
    p.add_argument("--split", default="train_all_frames")
    p.add_argument("--videos", type=int, default=3471)
    p.add_argument("--epochs", type=int, default=8)
    a = p.parse_args()

    from mosic.config import ClipSettings
    from mosic.data.base import VideoInfo, create_source, plan_clips
    from mosic.train.ops import pick_clip

    if a.root:
        videos = create_source("ytvos", a.root, a.split).videos()
        where = f"{a.root} ({a.split})"
    else:
        rng = np.random.default_rng(0)
        videos = [VideoInfo(f"v{i}", int(n), 1280, 720) for i, n in enumerate(rng.integers(90, 181, a.videos))]
        where = f"{a.videos} videos of 90-180 raw frames (uniform)"
    print(f"{where}; T = 12, step 6 (67 raw frames per clip), {a.epochs} epochs")
    print(f"{'stride':>7s} {'clips':>7s} {'clips/video':>12s} {'x official':>11s} {'distinct/8 ep':>14s} "
          f"{'start gap':>10s}")
    rows = {}
    rng = np.random.default_rng(1)
    for stride in (None, 48, 24, 12, 6, 3, 1):
        cs = ClipSettings(length=12, step=6, stride=stride, clips_per_video=1)
        clips, _ = plan_clips(videos, cs)
        by_video: dict[str, list[int]] = {}
        for c in clips:
            by_video.setdefault(c.video_id, []).append(c.frames[0])
        distinct, gaps = [], []
        for v, (vid, starts) in enumerate(by_video.items()):
            distinct.append(len({pick_clip(0, e, v, len(starts)) for e in range(a.epochs)}))
            info = next(x for x in videos if x.video_id == vid) if a.root else videos[int(vid[1:])]
            raw = info.raw_numbers()
            span = 67 if raw[-1] - raw[0] + 1 >= 67 else (raw[-1] - raw[0] + 1) // 12 * 11 + 1
            official = rng.integers(raw[0], raw[-1] - span + 2, 64)  # the official's random starts
            st = np.asarray([raw[s] for s in starts])
            gaps.append(np.abs(official[:, None] - st[None]).min(1).mean())
        n = len(by_video)
        rows[str(stride)] = {"clips": len(clips), "clips_per_video": len(clips) / n,
                             "vs_official_runs": len(clips) / (a.epochs * n),
                             "distinct_in_epochs": float(np.mean(distinct)), "start_gap_raw": float(np.mean(gaps))}
        r = rows[str(stride)]
        print(f"{str(stride or '1/vid'):>7s} {len(clips):7d} {r['clips_per_video']:12.1f} {r['vs_official_runs']:10.2f}x "
              f"{r['distinct_in_epochs']:14.2f} {r['start_gap_raw']:10.1f}")
    print(f"official: {a.epochs} tracker runs per video inside training, ~{a.epochs} distinct clips, gap 0")
    write_results("clips", rows)


if __name__ == "__main__":
    main()
