"""Frame-pipeline benchmark: ClipDataset items (T frames, one random crop to S x S, tracks mapped)
per second on ONE core, from 320x240 and 1280x720 JPEGs, with the full-resolution decode (before)
and the reduced DCT-scale decode (after), measured in one run; plus where the time goes, the crop
difference between the two paths, and measured alternatives. "default" is what training reads
after `mosic-store cache-frames` (the 410 cache where the frames are larger than it, else the
reduced decode), with its frames handed over as uint8 (now) and as float32 normalised on the CPU
(before); the bytes of a 64-clip batch of each.

    python bench/bench_frames.py [--frames 12] [--img 224] [--repeats 3] [--quick]

Runs pinned to one CPU core (1 torch thread, 1 OpenCV thread). Random synthetic frames (the
built-in generator at both sizes, JPEG quality 90), oracle tracks. Prints a table and writes
bench/results/frames.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def pin_one_core() -> str:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        return f"core {cpu}"
    except (AttributeError, OSError):
        return "1 thread (affinity not settable)"


def rates(fn, n_items: int, repeats: int) -> list[float]:
    """Items per CPU-second of this (single-threaded) process: clips/s per core, robust to other
    processes sharing the core (wall-clock rates are lower when they do)."""
    fn(0)  # warm-up (file cache, imports)
    out = []
    for r in range(repeats):
        t = time.process_time()
        fn(r + 1)
        out.append(n_items / (time.process_time() - t))
    return out


def old_to_tensor(frames):
    """The normalisation as it was before this benchmark's changes (three passes), for "before"."""
    import torch

    from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


class OldPath:
    """Items with ``to_frames`` making the item's frames (instead of the uint8 ClipDataset hands
    over now): ``old_to_tensor`` for the path before any change (full-resolution decode and the
    three-pass normalisation), ``to_tensor`` for float32 normalised on the CPU (before frames
    travelled as uint8)."""

    def __init__(self, ds, to_frames=old_to_tensor):
        self.ds = ds
        self.to_frames = to_frames

    def __getitem__(self, key):
        import mosic.train.dataset as D

        new = D.to_uint8_chw
        D.to_uint8_chw = self.to_frames
        try:
            return self.ds[key]
        finally:
            D.to_uint8_chw = new


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def build(work: Path, size: tuple[int, int], videos: int, frames: int, T: int):
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute

    w, h = size
    root = work / f"syn{w}x{h}"
    generate(root, videos=videos, seed=5, num_frames=frames, width=w, height=h, exact_length=True)
    over = {"dataset.root": str(root), "stores": str(work / f"stores{w}"), "tracker.name": "oracle",
            "tracker.grid": 16, "clips.length": T, "clips.step": 3, "clips.clips_per_video": 2}
    res = precompute(load_pipeline("synthetic", overrides=over), progress=False)
    return root, res.store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=12, help="frames per clip (T)")
    p.add_argument("--img", type=int, default=224, help="crop output size")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer videos and repeats (a smoke run)")
    a = p.parse_args()
    if a.quick:
        a.videos, a.repeats = 2, 1
    where = pin_one_core()

    import cv2

    from mosic.data.decode import read_jpeg_bytes
    from mosic.store_schema.frame_cache import FrameCache, build_frame_cache, cache_side
    from mosic.train.augment import apply_crop, max_reduction, reduce_box, to_tensor
    from mosic.train.dataset import ClipDataset

    work = Path(tempfile.mkdtemp(prefix="mosic-bench-frames-"))
    results: dict = {"where": where, "T": a.frames, "img": a.img, "sizes": {}}
    try:
        for size in [(320, 240), (1280, 720)]:
            w, h = size
            root, store = build(work, size, a.videos, (a.frames - 1) * 3 + 8, a.frames)
            fast = ClipDataset(store, out_size=a.img, reduced_decode=True, frame_cache=None)
            slow = ClipDataset(store, out_size=a.img, reduced_decode=False, frame_cache=None)
            t = time.process_time()
            folder = build_frame_cache(store, cache_side(a.img))
            t_cache = time.process_time() - t
            cmeta = json.loads((folder / "cache.json").read_text())
            cached = ClipDataset(store, out_size=a.img, frame_cache=folder)
            # the official recipe's resolution: the frame squashed to img x img, crops upsampled
            small = build_frame_cache(store, a.img)
            smeta = json.loads((small / "cache.json").read_text())
            recipe = ClipDataset(store, out_size=a.img, frame_cache=None)
            recipe.frame_cache = FrameCache(small)
            # what training reads by default once the cache command ran: the 410 cache where it holds
            # the clips (frames larger than it), else the reduced decode
            default = ClipDataset(store, out_size=a.img)
            in_cache = default.frame_cache is not None and default.frame_cache.holds(w, h)
            default_f32 = OldPath(default, to_tensor)
            n = len(fast)
            before = OldPath(slow)
            # interleaved repeats: the paths see the same machine load
            r_slow, r_fast, r_cache, r_small, r_def, r_def32 = [], [], [], [], [], []
            for _ in range(a.repeats):
                r_slow += rates(lambda e: [before[(e, i)] for i in range(n)], n, 1)
                r_fast += rates(lambda e: [fast[(e, i)] for i in range(n)], n, 1)
                if in_cache:
                    r_cache += rates(lambda e: [cached[(e, i)] for i in range(n)], n, 1)
                if recipe.frame_cache.holds(w, h):
                    r_small += rates(lambda e: [recipe[(e, i)] for i in range(n)], n, 1)
                r_def += rates(lambda e: [default[(e, i)] for i in range(n)], n, 1)
                r_def32 += rates(lambda e: [default_f32[(e, i)] for i in range(n)], n, 1)
            # quality and what the decode chose, over a few epochs
            diffs, ps, factors, cdiffs, cps, sdiffs, sps = [], [], [], [], [], [], []
            for e in range(3):
                for i in range(n):
                    box = fast.crop(i, e)
                    _, red, s = fast.read_clip(i, max_factor=max_reduction(box))
                    _, full = slow.read_clip(i)
                    x, y = apply_crop(red, reduce_box(box, s)), apply_crop(full, box)
                    diffs.append(np.abs(x.astype(np.float64) - y).mean())
                    ps.append(psnr(x, y))
                    factors.append(s)
                    if in_cache:
                        _, cf, cbox = cached._read_cached(i, box)
                        z = apply_crop(cf, cbox)
                        cdiffs.append(np.abs(z.astype(np.float64) - y).mean())
                        cps.append(psnr(z, y))
                    if r_small:
                        _, sf, sbox = recipe._read_cached(i, box)
                        z = apply_crop(sf, sbox)
                        sdiffs.append(np.abs(z.astype(np.float64) - y).mean())
                        sps.append(psnr(z, y))
            # where the time goes (per clip): decode, full vs reduced; crop
            clip = fast.reader.clips[0]
            box = fast.crop(0, 0)

            def t_of(fn, reps=5):  # CPU ms of this thread, best of reps
                fn()
                ts = []
                for _ in range(reps):
                    t = time.process_time()
                    fn()
                    ts.append(time.process_time() - t)
                return 1e3 * min(ts)

            f_full = slow.source.read_frames(clip.video_id, clip.frames)
            f_red, s0 = fast.source.read_frames_reduced(clip.video_id, clip.frames, max_reduction(box))
            parts = {
                "decode_full_ms": t_of(lambda: slow.source.read_frames(clip.video_id, clip.frames)),
                "decode_reduced_ms": t_of(lambda: fast.source.read_frames_reduced(clip.video_id, clip.frames,
                                                                                  max_reduction(box))),
                "crop_full_ms": t_of(lambda: apply_crop(f_full, box)),
                "crop_reduced_ms": t_of(lambda: apply_crop(f_red, reduce_box(box, s0))),
                "factor": s0,
            }
            path0 = fast.source.frame_path(clip.video_id, clip.frames[0])
            data = read_jpeg_bytes(path0, clip.video_id, 0)
            # alternatives, per frame: entropy-decoding floor (1/8) and torchvision's decoder
            alts = {f"cv2_1/{k}_ms": t_of(lambda k=k: cv2.imdecode(data, {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                                                                    4: cv2.IMREAD_REDUCED_COLOR_4,
                                                                    8: cv2.IMREAD_REDUCED_COLOR_8}[k]), 20)
                    for k in (1, 2, 4, 8)}
            import torch
            from torchvision.io import decode_jpeg

            tdata = torch.from_numpy(data.copy())
            alts["torchvision_full_ms"] = t_of(lambda: decode_jpeg(tdata), 20)
            res = {
                "clips": n, "jpeg_kib": round(data.size / 1024, 1),
                "before_clips_s": r_slow, "after_clips_s": r_fast,
                "factors": {str(k): int(v) for k, v in zip(*np.unique(factors, return_counts=True))},
                "mad": float(np.mean(diffs)), "mad_max": float(np.max(diffs)),
                "psnr_db": float(np.mean([q for q in ps if math.isfinite(q)] or [float("inf")])),
                "cache_clips_s": r_cache, "cache_side": cmeta["side"], "cache_bytes_per_clip": cmeta["bytes"] / n,
                "cache_build_clips_s": n / t_cache if in_cache else None,
                "cache_mad": float(np.mean(cdiffs)) if cdiffs else None,
                "cache_psnr_db": float(np.mean(cps)) if cps else None,
                "small_cache_clips_s": r_small, "small_cache_side": smeta["side"],
                "small_cache_bytes_per_clip": smeta["bytes"] / n,
                "small_cache_mad": float(np.mean(sdiffs)) if sdiffs else None,
                "small_cache_psnr_db": float(np.mean(sps)) if sps else None,
                "default_path": "frame cache 410" if in_cache else "reduced decode",
                "default_clips_s": r_def, "default_float32_clips_s": r_def32,
                "per_clip": parts, "per_frame_alternatives": alts,
            }
            results["sizes"][f"{w}x{h}"] = res

        T, S = a.frames, a.img
        print(f"frame pipeline on {where}: ClipDataset items, {T} frames, crop to {S}, tracks mapped "
              f"(clips per CPU-second of one thread = clips/s per core; range over {a.repeats} repeats; "
              f"MAD in grey levels and PSNR against the full-resolution path's crops)")
        print(f"{'frames':>10} {'JPEG KiB':>9} {'before (full decode)':>22} {'after (reduced)':>18} {'speed-up':>9} "
              f"{'MAD':>5} {'PSNR dB':>8}  decode factors")
        for k, r in results["sizes"].items():
            b, f = r["before_clips_s"], r["after_clips_s"]
            print(f"{k:>10} {r['jpeg_kib']:>9} {min(b):>10.1f} - {max(b):<9.1f} {min(f):>8.1f} - {max(f):<7.1f} "
                  f"{np.median(f) / np.median(b):>8.2f}x {r['mad']:>5.2f} {r['psnr_db']:>8.1f}  {r['factors']}")
        print(f"{'frames':>10} {'frame cache':>14} {'clips/s':>16} {'vs before':>10} {'MAD':>5} {'PSNR dB':>8} "
              f"{'KiB/clip':>9} {'build clips/s':>14}")
        for k, r in results["sizes"].items():
            b = r["before_clips_s"]
            for pre in ("cache", "small_cache"):
                c = r[f"{pre}_clips_s"]
                if not c:
                    print(f"{k:>10} {r[f'{pre}_side']:>6} x {r[f'{pre}_side']:<5} not built: the frames are no larger")
                    continue
                print(f"{k:>10} {r[f'{pre}_side']:>6} x {r[f'{pre}_side']:<5} {min(c):>7.1f} - {max(c):<6.1f} "
                      f"{np.median(c) / np.median(b):>9.2f}x {r[f'{pre}_mad']:>5.2f} {r[f'{pre}_psnr_db']:>8.1f} "
                      f"{r[f'{pre}_bytes_per_clip'] / 1024:>9.0f} "
                      + (f"{r['cache_build_clips_s']:>14.1f}" if pre == "cache" else ""))
        B = 64
        u8 = B * T * 3 * S * S
        results["batch_bytes"] = {"batch": B, "uint8": u8, "float32": 4 * u8}
        print(f"default path (training, after mosic-store cache-frames); frames of a {B}-clip batch: "
              f"{u8 / 1e6:.0f} MB as uint8 (now), {4 * u8 / 1e6:.0f} MB as float32 (before)")
        print(f"{'frames':>10} {'path':>16} {'uint8 (now)':>16} {'float32 (before)':>18} {'CPU ms/clip':>16} "
              f"{'vs full decode':>15}")
        for k, r in results["sizes"].items():
            d, d32, b = r["default_clips_s"], r["default_float32_clips_s"], r["before_clips_s"]
            print(f"{k:>10} {r['default_path']:>16} {min(d):>7.1f} - {max(d):<6.1f} {min(d32):>8.1f} - {max(d32):<7.1f} "
                  f"{1e3 / np.median(d32):>6.1f} -> {1e3 / np.median(d):<6.1f} {np.median(d) / np.median(b):>14.2f}x")
        for k, r in results["sizes"].items():
            q = r["per_clip"]
            print(f"{k}: per clip decode {q['decode_full_ms']:.1f} ms full -> {q['decode_reduced_ms']:.1f} ms at "
                  f"1/{q['factor']}; crop {q['crop_full_ms']:.1f} -> {q['crop_reduced_ms']:.1f} ms")
            al = r["per_frame_alternatives"]
            print(f"{k}: per frame decode: " + ", ".join(f"{n_} {v:.2f} ms" for n_, v in al.items()))
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / "frames.json").write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
