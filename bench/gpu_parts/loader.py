"""nvJPEG decode, and decode + crop on the GPU (mosic.train.device_crop); the DataLoader with
W workers (320x240 and 1280x720 JPEGs, and the frame cache) against the step: clips/s
delivered vs consumed, GPU busy fraction

The frame cache is built only where it is faster than the source (frames larger than it); the
batches must arrive as uint8, pinned on CUDA; each DataLoader has a timeout (LOADER_TIMEOUT_S)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gpu_parts.common import Ctx, sync
from gpu_parts.train import Step, to_device

#: seconds a DataLoader waits for a batch before it fails
LOADER_TIMEOUT_S = 60


def run(ctx: Ctx) -> dict:
    import torch
    import torch.multiprocessing as tmp

    from mosic.store_schema.frame_cache import build_frame_cache, cache_side, worth_caching
    from mosic.train.dataset import ClipDataset
    from mosic.train.loader import batch_bytes, make_loader

    cfg = ctx.cfg
    dev = torch.device(cfg["device"])
    root, pfile, store0 = ctx.data(cfg["sizes"][0])
    step = Step(ctx, store0, pfile)
    out: dict = {"status": "ok"}
    side = cache_side(cfg["img"])
    for size in cfg["sizes"]:
        root, pfile, store = ctx.data(size)
        out[f"{size[0]}x{size[1]} decode_jpeg on {dev.type}"] = jpeg_decode_rate(root, dev)
        out[f"{size[0]}x{size[1]} decode+crop on {dev.type}"] = device_pipeline_rate(store, cfg, dev)
        # the frame cache is built only where it is faster than the source (frames larger than it)
        caching = [False] + ([True] if worth_caching(*size, side) else [])
        for cached in caching:
            if cached:
                t = time.perf_counter()
                build_frame_cache(store, side, workers=os.cpu_count() or 1)
                out[f"{size[0]}x{size[1]} cache build s"] = time.perf_counter() - t
            for W in cfg["workers"]:
                key = f"{size[0]}x{size[1]}{' cache' if cached else ''} W={W}"
                # 2 W + 1 batches per epoch (the set's clips repeated, each item with its own crop): the
                # first W are made in parallel at start-up, the other W + 1 show the steady rate
                nb = 2 * W + 1
                ds = ClipDataset(store, out_size=cfg["img"], seed=0, frame_cache="auto" if cached else None)
                if cached and ds.frame_cache is None:
                    raise RuntimeError(f"the frame cache of {store.name} was built but not found")
                ds.groups = [ds.groups[k % len(ds.groups)] for k in range(nb * cfg["batch"])]
                loader = make_loader(ds, batch_size=cfg["batch"], num_workers=W, shuffle=True, seed=0,
                                     pin_memory=dev.type == "cuda", prefetch_factor=2, timeout=LOADER_TIMEOUT_S)
                if len(loader) != nb:
                    raise RuntimeError(f"the loader gives {len(loader)} batches, not {nb}")
                loader.set_epoch(0)
                arrivals = []
                t0 = time.perf_counter()
                for b in loader:
                    arrivals.append(time.perf_counter())
                    if b["frames"].dtype != torch.uint8 or (dev.type == "cuda" and not b["frames"].is_pinned()):
                        raise RuntimeError(f"the loader's frames are {b['frames'].dtype}, pinned: "
                                           f"{b['frames'].is_pinned()} (want uint8, pinned on CUDA)")
                if len(arrivals) != nb:
                    raise RuntimeError(f"the loader delivered {len(arrivals)} of {nb} batches")
                got = (nb - W) * cfg["batch"]
                delivered = got / (arrivals[-1] - arrivals[W - 1])
                # together: step after step on what the loader delivers
                steps, busy = 0, 0.0
                loader.set_epoch(1)
                t1 = time.perf_counter()
                for b in loader:
                    b = to_device(b, dev)
                    ts_ = time.perf_counter()
                    step.full(b, steps)
                    sync(dev)
                    busy += time.perf_counter() - ts_
                    steps += 1
                wall = time.perf_counter() - t1
                step_alone = ctx.step_s or busy / max(1, steps)
                out[key] = {"delivered_clips_s": delivered, "consumed_clips_s": cfg["batch"] / step_alone,
                            "busy_fraction": busy / wall, "steps": steps, "batches_per_epoch": nb,
                            "first_batches_s": arrivals[W - 1] - t0,
                            "note": "delivered: after the first W batches; busy: including worker start-up"}
                del loader
    out["batch_mb"] = batch_bytes(ds, cfg["batch"]) / 1e6
    out["sharing_strategy"] = tmp.get_sharing_strategy()
    return out


def jpeg_decode_rate(root: Path, dev, n: int = 96) -> dict:
    """torchvision.io.decode_jpeg of a batch of the set's JPEGs on ``dev`` (nvJPEG on CUDA): frames/s,
    and the mean abs difference to the CPU decode (grey levels)."""
    import numpy as np
    import torch
    from torchvision.io import decode_jpeg

    files = sorted((root / "train" / "JPEGImages").rglob("*.jpg"))[:n]
    datas = [torch.from_numpy(np.fromfile(f, np.uint8)) for f in files]
    decode_jpeg(datas[:4], device=dev)  # warm-up (nvJPEG handles)
    sync(dev)
    t = time.perf_counter()
    imgs = decode_jpeg(datas, device=dev)
    sync(dev)
    dt = time.perf_counter() - t
    ref = decode_jpeg(datas[:8])
    mad = float(np.mean([(a.cpu().float() - b.float()).abs().mean().item() for a, b in zip(imgs[:8], ref)]))
    return {"frames": len(datas), "frames_s": len(datas) / dt, "mad_vs_cpu_decode": mad}


def device_pipeline_rate(store: Path, cfg: dict, dev, n_clips: int = 32) -> dict:
    """Clips read as JPEG bytes on the CPU, decoded (nvJPEG on CUDA) and cropped on ``dev``
    (mosic.train.device_crop): clips/s, and CPU seconds of this process per clip."""
    from mosic.train.dataset import ClipDataset

    ds = ClipDataset(store, out_size=cfg["img"], seed=0, frame_cache=None)
    n = min(n_clips if dev.type == "cuda" else 2, len(ds))
    decode_and_crop(ds, n, dev, 0)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    decode_and_crop(ds, n, dev, 1)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"clips": n, "clips_s": n / wall, "clips_per_cpu_s": n / max(cpu, 1e-9)}


def decode_and_crop(ds, n: int, dev, epoch: int) -> list:
    """The first ``n`` clips of ``ds`` (a ClipDataset) as JPEG bytes, decoded on ``dev`` and cropped
    there with the crops of ``epoch``; waits for the device."""
    import numpy as np
    import torch
    from torchvision.io import decode_jpeg

    from mosic.train.device_crop import crop_on_device

    outs = []
    for i in range(n):
        clip = ds.reader.clips[int(ds.indices[i])]
        datas = [torch.from_numpy(np.fromfile(ds.source.frame_path(clip.video_id, f), np.uint8))
                 for f in clip.frames]
        frames = torch.stack(decode_jpeg(datas, device=dev))  # [T, 3, H, W]
        outs.append(crop_on_device(frames, ds.crop(i, epoch)))
    sync(dev)
    return outs
