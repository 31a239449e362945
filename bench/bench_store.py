"""Store benchmark: bytes on disk per layout and codec (the current one, store schema 3 with Zarr v3
spec codecs only, and the older schema 2 with numcodecs' codecs), the spec-codec chains the current
one was chosen from, write throughput, and random-clip read throughput of both schemas' default
stores from a fresh process against a plain numpy memmap of the same arrays, all in one run.

    python bench/bench_store.py [--videos 16] [--epochs 8]

Tracks are real: the synthetic set's exact ground-truth tracks (oracle) on many clips per video,
so their smoothness and occlusion statistics are those of moving scenes, not of random numbers;
``--tracker lk`` measures Lucas-Kanade's tracks of the same clips instead (a tracker's noise).
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


#: spec-codec chains for int32 tracks [C, T, N, 2] that the current layout was chosen from: the
#: order a chunk is stored in (a transpose codec) and blosc's shuffle (over zstd)
CANDIDATE_ORDERS = {
    "[C,T,N,xy] as is": None,
    "[C,N,xy,T] time innermost": (0, 2, 3, 1),
    "[C,xy,N,T] time innermost": (0, 3, 2, 1),
    "[C,xy,T,N] points innermost": (0, 3, 1, 2),
}


def candidates(work: Path, tracks: np.ndarray, coord_scale: int, cpc: int, raw: int) -> dict:
    """Bytes of the tracks array under each candidate chain of spec codecs (no mosic store around it)."""
    import zarr
    from zarr.codecs import BloscCodec, TransposeCodec, ZstdCodec

    from mosic.store_schema import layout as L

    fixed = L.fixed_point(tracks, coord_scale).astype(np.int32)
    chunk = (cpc,) + fixed.shape[1:]
    block = 4 * int(np.prod(chunk))
    rows = {}
    for oname, order in CANDIDATE_ORDERS.items():
        for shuffle in ("shuffle", "bitshuffle"):
            rows[f"int32 {oname}, blosc {shuffle} zstd"] = (fixed, order, BloscCodec(
                cname="zstd", clevel=L.blosc_level(5), shuffle=shuffle, typesize=4, blocksize=block))
    rows["int32 [C,xy,T,N], zstd (no shuffle)"] = (fixed, (0, 3, 1, 2), ZstdCodec(level=5))
    q = L.quantize(tracks, coord_scale)
    rows["float32 [C,xy,T,N], blosc shuffle zstd"] = (q, (0, 3, 1, 2), BloscCodec(
        cname="zstd", clevel=L.blosc_level(5), shuffle="shuffle", typesize=4, blocksize=block))
    print("\n-- spec-codec chains for the tracks (bytes against raw float32; zstd level 5 inside blosc) --")
    out = {}
    for name, (data, order, compressor) in rows.items():
        path = work / "candidates.zarr"
        shutil.rmtree(path, ignore_errors=True)
        arr = zarr.open_group(path, mode="w").create_array(
            "t", shape=data.shape, chunks=chunk, dtype=data.dtype, fill_value=0, compressors=compressor,
            filters=[TransposeCodec(order=order)] if order else None)
        arr[:] = data
        out[name] = disk_bytes(path / "t") / raw
        print(f"{name:52s} {out[name]:.3f}x")
    shutil.rmtree(work / "candidates.zarr", ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8, help="passes over the clips (MoSiC trains 8 epochs)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--tracker", default="oracle", choices=("oracle", "lk"),
                   help="whose tracks: the exact ground truth, or Lucas-Kanade's (a tracker's noise and lost points)")
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
                   "tracker.name": a.tracker,
                   "clips.step": 2, "tracker.grid": 16},
    )
    res = precompute(cfg, progress=False)
    src = StoreReader(res.store)
    tracks = np.stack([src[i].tracks for i in src.done])
    vis = np.stack([src[i].visibility for i in src.done])
    C, T, N, _ = tracks.shape
    raw = tracks.nbytes  # float32 tracks; visibility reported separately
    print(f"tracks: {C} clips x {T} frames x {N} points ({a.tracker} tracks of {a.videos} synthetic videos)")
    results: dict = {"clips": C, "T": T, "N": N, "tracker": a.tracker}

    print("\n-- bytes on disk, tracks array only, against raw float32 --")
    stores = {}
    for version, codecs in sorted(L.TRACK_CODECS.items(), reverse=True):
        for codec in codecs:
            path = work / f"schema{version}-{codec}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            w = StoreWriter.open_or_create(path, src.spec.in_schema(version), [src.clips[i] for i in src.done],
                                           codec=codec, clips_per_chunk=cfg.store.clips_per_chunk)
            t0 = time.perf_counter()
            for s, e, _ in w.todo():
                w.write_chunk(s, tracks[s:e], vis[s:e], np.full(e - s, L.DONE, np.uint8))
            w.finalize()
            dt = time.perf_counter() - t0
            tb = disk_bytes(path / "tracks")
            vb = disk_bytes(path / "visibility")
            back = np.stack([StoreReader(path)[i].tracks for i in range(C)])
            err = float(np.abs(back - tracks).max())
            name = f"{codec} ({version})" + (" *" if codec == L.default_codec(version) else "")
            stores[version, codec] = path
            results[codec] = {"schema": version, "tracks_ratio": tb / raw, "visibility_bytes_per_clip": vb / C,
                              "write_clips_per_s": C / dt, "max_abs_error_px": err}
            print(f"{name:26s} tracks {tb / raw:.3f}x raw float32 | visibility {vb / C:7.1f} B/clip "
                  f"({vb / vis.size * 8:.2f} bits/flag) | write {C / dt:7.0f} clips/s | max error {err:.4f} px")
    print("(schema in brackets; * the schema's default; schema 3 is what mosic writes now)")
    results["candidates"] = candidates(work, tracks, src.spec.coord_scale, cfg.store.clips_per_chunk, raw)

    print(f"\n-- random-clip reads: {a.epochs} epochs over the {C} clips in random order, one clip = "
          f"{T} x {N} tracks + visibility, each reader in a fresh process --")
    mm = work / "memmap"
    mm.mkdir(exist_ok=True)
    np.save(mm / "tracks.npy", tracks)
    np.save(mm / "visibility.npy", vis)
    rate = lambda t: C / t  # noqa: E731
    print(f"{'':30s} {'open':>8s} {'epoch 1 (cold)':>16s} {'later epochs':>14s} {'all epochs':>12s}")
    results["read"] = {"epochs": a.epochs}
    timed = {}
    for version in sorted(L.TRACK_CODECS, reverse=True):
        codec = L.default_codec(version)
        timed[f"store {codec} ({version})"] = fresh_process(READ_STORE, str(stores[version, codec]), str(a.epochs))
    timed["numpy memmap"] = fresh_process(READ_MEMMAP, str(mm), str(a.epochs))
    m_open, m_cold, m_warm = timed["numpy memmap"]
    tot_m = (m_cold + (a.epochs - 1) * m_warm) / a.epochs
    for name, (t_open, cold, warm) in timed.items():
        tot = (cold + (a.epochs - 1) * warm) / a.epochs
        print(f"{name:30s} {t_open * 1e3:6.0f}ms {rate(cold):10.0f} clip/s {rate(warm):8.0f} clip/s "
              f"{rate(tot):6.0f} clip/s")
        results["read"][name] = {"open_s": t_open, "cold_clips_per_s": rate(cold), "warm_clips_per_s": rate(warm),
                                 "all_epochs_clips_per_s": rate(tot), "ratio_cold": m_cold / cold,
                                 "ratio_warm": m_warm / warm, "ratio_all_epochs": tot_m / tot}
    for name, r in results["read"].items():
        if name.startswith("store"):
            print(f"ratio {name} / memmap (goal >= 0.5): epoch 1 {r['ratio_cold']:.2f}, later epochs "
                  f"{r['ratio_warm']:.2f}, over {a.epochs} epochs {r['ratio_all_epochs']:.2f}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / ("store.json" if a.tracker == "oracle" else f"store-{a.tracker}.json")).write_text(json.dumps(results, indent=2))
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
