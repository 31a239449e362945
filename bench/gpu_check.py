"""Check and measure every CUDA path of mosic on one GPU, with random weights and synthetic data, in
one command (`make gpu-check`, under 10 minutes on one GPU). Prints one table and writes a JSON file.

    python bench/gpu_check.py [--out bench/results/gpu_check.json] [--workers 8] [--parts ...]
    python bench/gpu_check.py --cpu      # dry run of every part that can run without a GPU (tiny sizes)

Parts:
  cotracker  `cotracker3` through the real package (random-weight checkpoint), bf16: batch 1 vs batched
             clips/s, batched tracks equal to batch 1 within a stated tolerance
  train      ViT-S/14 at 224, global batch 64, bf16: step time, bare student+teacher time, their
             ratio (goal <= 1.10), peak memory; the real step (mosic.train.train.mosic_step)
  loader     nvJPEG decode, and decode + crop on the GPU (mosic.train.device_crop); the DataLoader with
             W workers (320x240 and 1280x720 JPEGs, and the frame cache) against the step: clips/s
             delivered vs consumed, GPU busy fraction
  torchrun   `torchrun --nproc_per_node 1 -m mosic.train` (NCCL on CUDA): a few steps, checkpoint,
             resume; the resumed run must end at the requested step
  eval       every mosic-eval protocol on CUDA at the paper's input sizes on a small synthetic set,
             wall time per image

A part that cannot run here (no CUDA, the cotracker package missing) is reported as skipped with the
reason; a part that fails is reported with its error and the others still run; the exit status is 1
if any part failed. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("cotracker", "train", "loader", "torchrun", "eval")


# ------------------------------------------------------------------------------------------------
# settings per mode
# ------------------------------------------------------------------------------------------------
def settings(cpu: bool) -> dict:
    if cpu:  # tiny: exercises every code path in well under a minute on 2 CPU cores
        return dict(device="cpu", precision="fp32", model="vit_small_patch14_dinov2",
                    kwargs={"depth": 2, "embed_dim": 48, "num_heads": 2}, img=56, head_hidden=[64], head_dim=32,
                    prototypes=8, batch=4, T=3, step=2, grid=4, sizes=[(64, 48), (128, 72)], videos=4, cpv=4,
                    frames=12, steps=2, warmup=1, workers=[1], cot_clips=2, cot_batches=[2], eval_imgs=(4, 2),
                    eval_size=56)
    return dict(device="cuda", precision="bf16", model="vit_small_patch14_dinov2", kwargs={}, img=224,
                head_hidden=[1024, 1024, 512], head_dim=256, prototypes=100, batch=64, T=12, step=3, grid=16,
                sizes=[(320, 240), (1280, 720)], videos=24, cpv=12, frames=48, steps=10, warmup=3,
                workers=sorted({min(8, os.cpu_count() or 1), min(16, os.cpu_count() or 1)}),
                cot_clips=32, cot_batches=[8, 32], eval_imgs=(40, 20), eval_size=None)


def pipelines_yaml(cfg: dict, root: Path, stores: Path) -> str:
    """A pipelines file with one pipeline, ``check``, over ``root`` (oracle tracks: no tracker cost)."""
    train = {"model": {"name": cfg["model"], "pretrained": False, "img_size": cfg["img"], "kwargs": cfg["kwargs"],
                       "train_blocks": 2, "head_hidden": cfg["head_hidden"], "head_dim": cfg["head_dim"],
                       "num_prototypes": cfg["prototypes"]},
             "batch_size": cfg["batch"], "epochs": 1000, "num_workers": cfg["workers"][0],
             "precision": cfg["precision"], "device": cfg["device"], "checkpoint_every": 2, "log_every": 1}
    pipe = {"dataset": {"kind": "synthetic", "root": str(root), "split": "train"},
            "clips": {"length": cfg["T"], "step": cfg["step"], "clips_per_video": cfg["cpv"]},
            "tracker": {"name": "oracle", "grid": cfg["grid"], "batch_size": 16}, "stores": str(stores),
            "train": train}
    return json.dumps({"defaults": {}, "pipelines": {"check": pipe}}, indent=2)  # JSON is YAML


class Ctx:
    def __init__(self, cfg: dict, work: Path):
        self.cfg, self.work = cfg, work
        self._stores: dict = {}

    def data(self, size: tuple[int, int]) -> tuple[Path, Path, Path]:
        """(root, pipelines file, store) of a synthetic set at ``size``, made once."""
        if size in self._stores:
            return self._stores[size]
        from mosic.config import load_pipeline
        from mosic.data.synthetic import generate
        from mosic.precompute.runner import precompute

        w, h = size
        root = self.work / f"syn{w}x{h}"
        generate(root, videos=self.cfg["videos"], seed=11, num_frames=self.cfg["frames"], width=w, height=h,
                 exact_length=True)
        pfile = self.work / f"pipelines{w}.yaml"
        pfile.write_text(pipelines_yaml(self.cfg, root, self.work / f"stores{w}"))
        res = precompute(load_pipeline("check", pfile), progress=False)
        self._stores[size] = (root, pfile, Path(res.store))
        return self._stores[size]


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps: int, warmup: int, device) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


# ------------------------------------------------------------------------------------------------
# 1. CoTracker
# ------------------------------------------------------------------------------------------------
def part_cotracker(ctx: Ctx) -> dict:
    import numpy as np
    import torch

    try:
        import cotracker  # noqa: F401
    except ImportError:
        return {"status": "skipped", "reason": "the cotracker package is not installed (see bench/gpu_wheels.sh)"}
    from mosic.precompute.trackers.base import grid_queries
    from mosic.precompute.trackers.cotracker import CoTrackerTracker, import_predictor_class

    cfg = ctx.cfg
    ck = ctx.work / "cotracker_random.pth"
    torch.manual_seed(0)
    pred = import_predictor_class()(checkpoint=None, offline=True, v2=False, window_len=60)
    torch.save(pred.model.state_dict(), ck)
    del pred
    out: dict = {"status": "ok", "precision": cfg["precision"], "tolerance": "batched vs batch 1: 99% of visible "
                 "points within 1 px and visibility agreeing on 99% of points"}
    for size in cfg["sizes"]:
        root, _, store = ctx.data(size)
        from mosic.store_schema.reader import StoreReader, open_frame_source

        r = StoreReader(store)
        src = open_frame_source(r, None, verify=False)
        clips = [r.clips[i] for i in r.done][: cfg["cot_clips"]]
        while len(clips) < cfg["cot_clips"]:
            clips = clips + clips
        clips = clips[: cfg["cot_clips"]]
        frames = np.stack([src.read_clip(c) for c in clips])
        q = grid_queries(cfg["grid"], size[0], size[1])
        row: dict = {}
        tr1 = CoTrackerTracker(checkpoint=ck, batch_size=1, device=cfg["device"], precision=cfg["precision"])
        res1 = tr1.track(frames[:1], q)  # warm-up
        t = time.perf_counter()
        res1 = tr1.track(frames, q)
        sync(cfg["device"])
        row["batch1_clips_s"] = len(clips) / (time.perf_counter() - t)
        for bs in cfg["cot_batches"]:
            tr1.batch_size = bs
            tr1.track(frames[:bs], q)  # warm-up
            t = time.perf_counter()
            resb = tr1.track(frames, q)
            sync(cfg["device"])
            row[f"batch{bs}_clips_s"] = len(clips) / (time.perf_counter() - t)
            d = np.linalg.norm(resb.tracks - res1.tracks, axis=-1)
            vis = res1.visibility
            row[f"batch{bs}_p99_px"] = float(np.percentile(d[vis], 99)) if vis.any() else 0.0
            row[f"batch{bs}_max_px"] = float(d.max())
            row[f"batch{bs}_vis_agree"] = float((resb.visibility == res1.visibility).mean())
            row[f"batch{bs}_ok"] = bool(row[f"batch{bs}_p99_px"] <= 1.0 and row[f"batch{bs}_vis_agree"] >= 0.99)
        row["batched_fallback_used"] = not tr1._batched_ok
        row["view_fixes_used"] = tr1.view_fixes_used
        out[f"{size[0]}x{size[1]}"] = row
        del tr1
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    ok = all(v for s in out.values() if isinstance(s, dict) for k, v in s.items() if k.endswith("_ok"))
    out["status"] = "ok" if ok else "failed"
    if not ok:
        out["error"] = "batched tracks differ from batch 1 beyond the tolerance"
    return out


# ------------------------------------------------------------------------------------------------
# 2. the training step
# ------------------------------------------------------------------------------------------------
def build_step(ctx: Ctx, store: Path, pfile: Path):
    """The real model, optimiser, EMA and step of mosic.train.train, on the device."""
    import torch

    from mosic.config import load_pipeline
    from mosic.train.config import train_settings
    from mosic.train.model import MoSiCModel, TeacherEMA, create_backbone, make_teacher, random_keep_mask
    from mosic.train.train import autocast_for, mosic_step, param_groups

    cfg = ctx.cfg
    pc = load_pipeline("check", pfile)
    ts = train_settings(pc.train)
    dev = torch.device(cfg["device"])
    m = ts.model
    torch.manual_seed(0)
    bb = create_backbone(m.name, pretrained=False, img_size=m.img_size, **m.kwargs)
    student = MoSiCModel(bb, m.num_prototypes, m.head_hidden, m.head_dim, m.train_blocks).to(dev)
    student.normalize_prototypes()
    teacher = make_teacher(student)
    ema = TeacherEMA(student, teacher, ts.ema)
    opt = torch.optim.AdamW(param_groups(student, ts.optim), betas=ts.optim.betas)
    amp, precision = autocast_for(dev, ts.precision)

    def full(batch, step=0):
        student.normalize_prototypes()
        with amp:
            loss, _ = mosic_step(student, teacher, batch, ts, step=step, rank=0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update()
        return loss

    def bare(batch):
        frames = batch["frames"]
        B, T, _, S, _ = frames.shape
        keep = random_keep_mask(B, (S // student.patch_size) ** 2, ts.mask_ratio,
                                generator=torch.Generator().manual_seed(0)).to(dev)
        with amp:
            with torch.no_grad():
                teacher.patch_features(frames.flatten(0, 1))
            opt.zero_grad(set_to_none=True)
            f = student.patch_features(frames[:, 0], keep)
        f.float().square().mean().backward()

    return full, bare, precision, ts


def to_device(batch: dict, dev) -> dict:
    import torch

    return {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def part_train(ctx: Ctx) -> dict:
    import torch

    from mosic.train.data import ClipDataset, make_loader

    cfg = ctx.cfg
    root, pfile, store = ctx.data(cfg["sizes"][0])
    ds = ClipDataset(store, out_size=cfg["img"], seed=0)
    if len(ds) < cfg["batch"]:
        raise RuntimeError(f"{len(ds)} clips, fewer than one batch of {cfg['batch']}")
    batch = next(iter(make_loader(ds, batch_size=cfg["batch"], num_workers=0, shuffle=False)))
    dev = torch.device(cfg["device"])
    batch = to_device(batch, dev)
    full, bare, precision, _ = build_step(ctx, store, pfile)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_bare = timed(lambda: bare(batch), cfg["steps"], cfg["warmup"], dev)
    t_full = timed(lambda: full(batch), cfg["steps"], cfg["warmup"], dev)
    fb, bb_ = statistics.median(t_full), statistics.median(t_bare)
    B, T = batch["frames"].shape[:2]
    out = {"status": "ok", "precision": precision, "batch": int(B), "frames": int(T), "img": cfg["img"],
           "points": int(batch["tracks"].shape[2]), "step_ms": fb * 1e3, "bare_ms": bb_ * 1e3,
           "ratio": fb / bb_, "goal_ratio": 1.10, "step_clips_s": B / fb,
           "step_ms_range": [min(t_full) * 1e3, max(t_full) * 1e3]}
    if dev.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    ctx.step_s = fb
    return out


# ------------------------------------------------------------------------------------------------
# 3. the DataLoader against the step
# ------------------------------------------------------------------------------------------------
def part_loader(ctx: Ctx) -> dict:
    import numpy as np
    import torch

    from mosic.data.frame_cache import build_frame_cache, cache_side
    from mosic.train.data import ClipDataset, make_loader

    cfg = ctx.cfg
    dev = torch.device(cfg["device"])
    root, pfile, store0 = ctx.data(cfg["sizes"][0])
    full, _, _, _ = build_step(ctx, store0, pfile)
    out: dict = {"status": "ok"}
    for size in cfg["sizes"]:
        root, pfile, store = ctx.data(size)
        out[f"{size[0]}x{size[1]} decode_jpeg on {dev.type}"] = jpeg_decode_rate(root, dev)
        out[f"{size[0]}x{size[1]} decode+crop on {dev.type}"] = device_pipeline_rate(store, cfg, dev)
        for cached in (False, True):
            if cached:
                build_frame_cache(store, cache_side(cfg["img"]))
            ds = ClipDataset(store, out_size=cfg["img"], seed=0, frame_cache="auto" if cached else None)
            for W in cfg["workers"]:
                key = f"{size[0]}x{size[1]}{' cache' if cached else ''} W={W}"
                # 3 W batches per epoch (the set's clips repeated, each with its own crop): the first
                # W are made in parallel at start-up, the rest show the steady rate
                nb = 3 * W
                ds.indices = np.tile(ds.indices[: len(ds.reader.done)],
                                     -(-nb * cfg["batch"] // len(ds.reader.done)))[: nb * cfg["batch"]]
                loader = make_loader(ds, batch_size=cfg["batch"], num_workers=W, shuffle=True, seed=0,
                                     pin_memory=dev.type == "cuda", prefetch_factor=1 if W else None)
                loader.set_epoch(0)
                arrivals = []
                for b in loader:
                    arrivals.append(time.perf_counter())
                got = (len(arrivals) - W) * cfg["batch"]
                delivered = got / (arrivals[-1] - arrivals[W - 1]) if got > 0 else float("nan")
                # together: step after step on what the loader delivers
                steps, busy = 0, 0.0
                loader.set_epoch(1)
                t0 = time.perf_counter()
                for b in loader:
                    b = to_device(b, dev)
                    ts_ = time.perf_counter()
                    full(b, steps)
                    sync(dev)
                    busy += time.perf_counter() - ts_
                    steps += 1
                wall = time.perf_counter() - t0
                step_alone = getattr(ctx, "step_s", None) or busy / max(1, steps)
                out[key] = {"delivered_clips_s": delivered, "consumed_clips_s": cfg["batch"] / step_alone,
                            "busy_fraction": busy / wall, "steps": steps, "batches_per_epoch": nb,
                            "note": "delivered: after the first W batches; busy: including worker start-up"}
                del loader
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
    import numpy as np
    import torch
    from torchvision.io import decode_jpeg

    from mosic.train.data import ClipDataset
    from mosic.train.device_crop import crop_on_device

    ds = ClipDataset(store, out_size=cfg["img"], seed=0, frame_cache=None)
    n = min(n_clips if dev.type == "cuda" else 2, len(ds))

    def one_pass(epoch):
        outs = []
        for i in range(n):
            clip = ds.reader.clips[int(ds.indices[i])]
            datas = [torch.from_numpy(np.fromfile(ds.source.frame_path(clip.video_id, f), np.uint8))
                     for f in clip.frames]
            frames = torch.stack(decode_jpeg(datas, device=dev))  # [T, 3, H, W]
            outs.append(crop_on_device(frames, ds.crop(i, epoch)))
        sync(dev)
        return outs

    one_pass(0)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    one_pass(1)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"clips": n, "clips_s": n / wall, "clips_per_cpu_s": n / max(cpu, 1e-9)}


# ------------------------------------------------------------------------------------------------
# 4. torchrun: steps, checkpoint, resume
# ------------------------------------------------------------------------------------------------
def part_torchrun(ctx: Ctx) -> dict:
    cfg = ctx.cfg
    root, pfile, store = ctx.data(cfg["sizes"][0])
    run = ctx.work / "run"
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29517",
            "-m", "mosic.train", "--config", str(pfile), "--pipeline", "check", "--store", str(store),
            "--out", str(run), "--no-progress", "--batch-size", str(min(cfg["batch"], 8)), "--workers", "2",
            "--set", "checkpoint_every=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    # cwd: the scratch folder, never the repository (its mosic/ folder would shadow the installed package)
    r1 = subprocess.run(base + ["--max-steps", "3"], capture_output=True, text=True, env=env, timeout=600,
                        cwd=ctx.work)
    t1 = time.perf_counter() - t
    if r1.returncode != 0:
        return {"status": "failed", "error": f"first run exit {r1.returncode}: {(r1.stderr or r1.stdout)[-1500:]}"}
    ck = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    t = time.perf_counter()
    r2 = subprocess.run(base + ["--max-steps", "5", "--resume"], capture_output=True, text=True, env=env,
                        timeout=600, cwd=ctx.work)
    t2 = time.perf_counter() - t
    if r2.returncode != 0:
        return {"status": "failed", "error": f"resumed run exit {r2.returncode}: {(r2.stderr or r2.stdout)[-1500:]}"}
    res = json.loads((run / "result.json").read_text())
    conf = json.loads((run / "config.json").read_text())
    resumed = "resumed from" in (r2.stdout + r2.stderr)
    ok = res.get("steps") == 5 and resumed and "step_0000002.pt" in ck
    return {"status": "ok" if ok else "failed", "device": conf.get("device"),
            "backend": "nccl" if str(conf.get("device", "")).startswith("cuda") else "gloo",
            "checkpoints_after_first": ck, "resumed": resumed, "final_step": res.get("steps"),
            "first_run_s": t1, "resumed_run_s": t2,
            **({} if ok else {"error": "the resumed run did not end at step 5 from the step-2 checkpoint"})}


# ------------------------------------------------------------------------------------------------
# 5. evaluation protocols
# ------------------------------------------------------------------------------------------------
def part_eval(ctx: Ctx) -> dict:
    from mosic.data.synthetic import generate

    cfg = ctx.cfg
    root = ctx.work / "evalset"
    n_tr, n_va = cfg["eval_imgs"]
    generate(root, videos=max(2, n_tr // 10), seed=21, num_frames=max(4, min(10, n_tr // 2)), split="train",
             exact_length=True)
    generate(root, videos=max(2, n_va // 10), seed=22, num_frames=max(4, min(10, n_va // 2)), split="valid",
             exact_length=True)
    out: dict = {"status": "ok", "model": cfg["model"], "note": "wall time per image of the split(s) a "
                 "protocol reads, model creation included"}
    protos = ["linear", "clustering", "incontext", "video"]
    failed = []
    # on the CPU (a dry run) one mosic-eval call runs them all: the figures mean nothing there
    groups = [protos] if cfg["device"] == "cpu" else [[p_] for p_ in protos]
    for group in groups:
        proto = ",".join(group)
        cmd = [sys.executable, "-m", "mosic.evaluation.cli", "run", "--model", cfg["model"], "--random",
               "--device", cfg["device"], "--protocols", proto, "--out", str(ctx.work / f"eval-{proto}"),
               "--seed", "0"]
        if cfg["kwargs"]:
            cmd += ["--model-kwargs", json.dumps(cfg["kwargs"])]
        if "video" in group:
            cmd += ["--video-dataset", "synthetic", "--video-root", str(root)]
        if group != ["video"]:
            cmd += ["--dataset", "synthetic", "--root", str(root)]
        if "linear" in group:
            cmd += ["--set", "linear.epochs=1"]
        if "incontext" in group:
            cmd += ["--fractions", "1"]
        if "clustering" in group:
            cmd += ["--ks", "6,20"]
        if cfg["eval_size"]:
            cmd += ["--img-size", str(cfg["eval_size"])]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ctx.work,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
        dt = time.perf_counter() - t
        if r.returncode != 0:
            failed.append(proto)
            out[proto] = {"status": "failed", "error": (r.stderr or r.stdout)[-1200:]}
            continue
        n_images = _count_images(root, proto)
        out[proto] = {"status": "ok", "seconds": dt, "images": n_images, "ms_per_image": 1e3 * dt / max(1, n_images)}
    if failed:
        out["status"] = "failed"
        out["error"] = f"protocols failed: {', '.join(failed)}"
    return out


def _count_images(root: Path, proto: str) -> int:
    splits = ["valid"] if proto == "video" else ["train", "valid"]  # what the protocol reads
    return sum(1 for s in splits for _ in (root / s / "JPEGImages").rglob("*.jpg"))


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def table(results: dict) -> str:
    rows = []

    def add(part, what, value, note=""):
        rows.append((part, what, value, note))

    for part in PARTS:
        r = results.get(part)
        if r is None:
            continue
        st = r.get("status")
        if st != "ok":
            add(part, st, "", (r.get("reason") or r.get("error") or "").splitlines()[-1][:100] if
                (r.get("reason") or r.get("error")) else "")
            if st == "skipped":
                continue
        if part == "cotracker":
            for k, v in r.items():
                if isinstance(v, dict):
                    cols = [f"{n}={x:.1f}" for n, x in v.items() if n.endswith("clips_s")]
                    add(part, f"{k} clips/s", ", ".join(cols),
                        "; ".join(f"{n[:-7]} vs batch 1: p99 {v[n]:.2f} px" for n in v if n.endswith("_p99_px")))
        elif part == "train" and st == "ok":
            add(part, f"step ({r['batch']} clips x {r['frames']} frames, {r['img']} px, {r['precision']})",
                f"{r['step_ms']:.1f} ms", f"{r['step_clips_s']:.0f} clips/s")
            add(part, "bare student + teacher", f"{r['bare_ms']:.1f} ms")
            add(part, "step / bare", f"{r['ratio']:.3f}", "goal <= 1.10")
            if "peak_memory_gib" in r:
                add(part, "peak memory", f"{r['peak_memory_gib']:.1f} GiB")
        elif part == "loader":
            for k, v in r.items():
                if isinstance(v, dict) and "clips_per_cpu_s" in v:
                    add(part, k, f"{v['clips_s']:.0f} clips/s", f"{v['clips_per_cpu_s']:.0f} clips per CPU-second")
                elif isinstance(v, dict) and "frames_s" in v:
                    add(part, k, f"{v['frames_s']:.0f} frames/s", f"vs CPU decode: {v['mad_vs_cpu_decode']:.2f} grey levels")
                elif isinstance(v, dict):
                    add(part, k, f"{v['delivered_clips_s']:.0f} delivered / {v['consumed_clips_s']:.0f} consumed clips/s",
                        f"device busy {100 * v['busy_fraction']:.0f}%")
        elif part == "torchrun":
            add(part, f"{r.get('backend')} on {r.get('device')}", f"steps 0-3, resume at 2 -> {r.get('final_step')}",
                f"{r.get('first_run_s', 0):.0f} s + {r.get('resumed_run_s', 0):.0f} s")
        elif part == "eval":
            for k, v in r.items():
                if isinstance(v, dict) and v.get("status") == "ok":
                    add(part, k, f"{v['ms_per_image']:.1f} ms/image", f"{v['images']} images, {v['seconds']:.0f} s")
    w = [max(len(str(x[i])) for x in rows + [("part", "what", "value", "note")]) for i in range(4)]
    line = lambda x: "  ".join(str(c).ljust(w[i]) for i, c in enumerate(x))  # noqa: E731
    return "\n".join([line(("part", "what", "value", "note")), line(tuple("-" * n for n in w))] + [line(x) for x in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU at tiny sizes (no CUDA needed)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "gpu_check.json")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--workers", default=None, help="DataLoader workers to try, e.g. 8,16")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    a = p.parse_args(argv)
    import torch

    cfg = settings(a.cpu)
    if a.workers:
        cfg["workers"] = [int(x) for x in a.workers.split(",")]
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"unknown part(s) {bad}; parts are {', '.join(PARTS)}")
    if not a.cpu and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; run with --cpu for the dry run", file=sys.stderr)
        return 2
    if a.cpu:
        torch.set_num_threads(1)
    work = a.work or Path(tempfile.mkdtemp(prefix="mosic-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(cfg, work)
    results: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                 "cuda": torch.version.cuda, "cpus": os.cpu_count(),
                                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not a.cpu
                                 else None, "mode": "cpu dry run" if a.cpu else "cuda"},
                     "settings": {k: v for k, v in cfg.items()}}
    t_all = time.perf_counter()
    fns = {"cotracker": part_cotracker, "train": part_train, "loader": part_loader, "torchrun": part_torchrun,
           "eval": part_eval}
    try:
        for name in PARTS:
            if name not in parts:
                continue
            t = time.perf_counter()
            print(f"[gpu_check] {name} ...", flush=True)
            try:
                r = fns[name](ctx)
            except Exception as e:  # noqa: BLE001 - a failing part is reported, the others still run
                r = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                     "traceback": traceback.format_exc()[-3000:]}
            r["seconds"] = time.perf_counter() - t
            results[name] = r
            print(f"[gpu_check] {name}: {r['status']} ({r['seconds']:.0f} s)", flush=True)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - t_all
    print(table(results))
    print(f"total {results['seconds']:.0f} s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {a.out}")
    return 1 if any(results.get(n, {}).get("status") == "failed" for n in parts) else 0


if __name__ == "__main__":
    sys.exit(main())
