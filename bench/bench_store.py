"""Store benchmark: bytes on disk per codec, write throughput, and random-clip read throughput
from a fresh process against a plain numpy memmap of the same arrays, measured in one run.

    python bench/bench_store.py [--videos 16] [--epochs 8]

Tracks are real: the synthetic set's exact ground-truth tracks (oracle) on many clips per video,
so their smoothness and occlusion statistics are those of moving scenes, not of random numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


READ_STORE = r"""
import sys, time, numpy as np
t0 = time.perf_counter()
from mosic.store_schema.reader import StoreReader
r = StoreReader(sys.argv[1])
n, epochs = len(r), int(sys.argv[2])
get = lambda i: r[i].tracks
""" + "{TIMED}"

READ_MEMMAP = r"""
import sys, time, numpy as np
t0 = time.perf_counter()
tr = np.load(sys.argv[1] + "/tracks.npy", mmap_mode="r")
vis = np.load(sys.argv[1] + "/visibility.npy", mmap_mode="r")
n, epochs = len(tr), int(sys.argv[2])
def get(i):
    v = np.array(vis[i])
    return np.array(tr[i])
""" + "{TIMED}"

# Epochs of random clip order, as a training DataLoader reads them: the first epoch decodes every
# chunk once (cold), later epochs hit the reader's chunk cache (warm).
TIMED = r"""
rng = np.random.default_rng(1)
t1 = time.perf_counter()
times = []
for e in range(epochs):
    order = rng.permutation(n)
    a = time.perf_counter()
    for i in order:
        x = get(int(i))
    times.append(time.perf_counter() - a)
print(t1 - t0, times[0], sum(times[1:]) / max(1, len(times) - 1))
"""
READ_STORE = READ_STORE.replace("{TIMED}", TIMED)
READ_MEMMAP = READ_MEMMAP.replace("{TIMED}", TIMED)


def fresh_process(code: str, *args: str) -> tuple[float, float, float]:
    """(open seconds, first-epoch seconds, mean later-epoch seconds) from a new interpreter."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    a, b, c = out.stdout.split()
    return float(a), float(b), float(c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8, help="passes over the clips (MoSiC trains 8 epochs)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    a = p.parse_args()

    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute
    from mosic.store_schema import layout as L
    from mosic.store_schema.reader import StoreReader
    from mosic.store_schema.writer import StoreWriter

    work = a.work or Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    data = work / "synthetic"
    if not (data / "train" / "meta.json").exists():
        generate(data, videos=a.videos, seed=123)
    # many overlapping clips per video: T=12 frames, 16 x 16 grid = 256 points (the paper's clip)
    cfg = load_pipeline(
        "synthetic-oracle",
        overrides={"dataset.root": str(data), "stores": str(work / "stores"), "clips.stride": 2,
                   "clips.step": 2, "tracker.grid": 16},
    )
    res = precompute(cfg, progress=False)
    src = StoreReader(res.store)
    tracks = np.stack([src[i].tracks for i in src.done])
    vis = np.stack([src[i].visibility for i in src.done])
    C, T, N, _ = tracks.shape
    raw = tracks.nbytes  # float32 tracks; visibility reported separately
    print(f"tracks: {C} clips x {T} frames x {N} points (oracle tracks of {a.videos} synthetic videos)")
    results: dict = {"clips": C, "T": T, "N": N}

    print("\n-- bytes on disk, tracks array only, against raw float32 --")
    for codec in L.TRACK_CODECS:
        path = work / f"codec-{codec}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        w = StoreWriter.open_or_create(path, src.spec, [src.clips[i] for i in src.done], codec=codec,
                                       clips_per_chunk=cfg.store.clips_per_chunk)
        t0 = time.perf_counter()
        for s, e, _ in w.todo():
            w.write_chunk(s, tracks[s:e], vis[s:e], np.full(e - s, L.DONE, np.uint8))
        w.finalize()
        dt = time.perf_counter() - t0
        tb = disk_bytes(path / "tracks")
        vb = disk_bytes(path / "visibility")
        back = np.stack([StoreReader(path)[i].tracks for i in range(C)])
        err = float(np.abs(back - tracks).max())
        results[codec] = {"tracks_ratio": tb / raw, "visibility_bytes_per_clip": vb / C,
                          "write_clips_per_s": C / dt, "max_abs_error_px": err}
        print(f"{codec:18s} tracks {tb / raw:.3f}x raw float32 | visibility {vb / C:7.1f} B/clip "
              f"({vb / vis.size * 8:.2f} bits/flag) | write {C / dt:7.0f} clips/s | max error {err:.4f} px")

    print(f"\n-- random-clip reads: {a.epochs} epochs over the {C} clips in random order, one clip = "
          f"{T} x {N} tracks + visibility, each reader in a fresh process --")
    mm = work / "memmap"
    mm.mkdir(exist_ok=True)
    np.save(mm / "tracks.npy", tracks)
    np.save(mm / "visibility.npy", vis)
    s_open, s_cold, s_warm = fresh_process(READ_STORE, str(work / f"codec-{L.DEFAULT_CODEC}.zarr"), str(a.epochs))
    m_open, m_cold, m_warm = fresh_process(READ_MEMMAP, str(mm), str(a.epochs))
    rate = lambda t: C / t  # noqa: E731
    print(f"{'':24s} {'open':>8s} {'epoch 1 (cold)':>16s} {'later epochs':>14s} {'all epochs':>12s}")
    tot_s = (s_cold + (a.epochs - 1) * s_warm) / a.epochs
    tot_m = (m_cold + (a.epochs - 1) * m_warm) / a.epochs
    print(f"{'store (' + L.DEFAULT_CODEC + ')':24s} {s_open * 1e3:6.0f}ms {rate(s_cold):10.0f} clip/s "
          f"{rate(s_warm):8.0f} clip/s {rate(tot_s):6.0f} clip/s")
    print(f"{'numpy memmap':24s} {m_open * 1e3:6.0f}ms {rate(m_cold):10.0f} clip/s "
          f"{rate(m_warm):8.0f} clip/s {rate(tot_m):6.0f} clip/s")
    print(f"ratio store / memmap (goal >= 0.5): epoch 1 {m_cold / s_cold:.2f}, later epochs "
          f"{m_warm / s_warm:.2f}, over {a.epochs} epochs {tot_m / tot_s:.2f}")
    results["read"] = {"epochs": a.epochs, "store_open_s": s_open, "memmap_open_s": m_open,
                       "store_cold_clips_per_s": rate(s_cold), "store_warm_clips_per_s": rate(s_warm),
                       "memmap_cold_clips_per_s": rate(m_cold), "memmap_warm_clips_per_s": rate(m_warm),
                       "ratio_cold": m_cold / s_cold, "ratio_warm": m_warm / s_warm,
                       "ratio_all_epochs": tot_m / tot_s}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "store.json").write_text(json.dumps(results, indent=2))
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
