"""Synthetic-set benchmark: how fast one core renders and JPEG-encodes synthetic frames (320 x 240,
quality 90), the cost of `mosic-data synthetic` per frame. Best of several repeats, measured in one run.

    python bench/bench_synthetic.py [--frames 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    import cv2

    from mosic.data.synthetic import make_scene

    cv2.setNumThreads(1)
    rates = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        scene = make_scene(0, seed=0, num_frames=a.frames, exact_length=True)
        for t in range(scene.num_frames):
            rgb, _ = scene.render(t)
            cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90])
        rates.append(scene.num_frames / (time.perf_counter() - t0))
    print(f"synthetic frames, render + JPEG encode on one core: best {max(rates):.0f} frames/s, "
          f"worst {min(rates):.0f} frames/s over {a.repeats} repeats of {a.frames} frames")


if __name__ == "__main__":
    main()
