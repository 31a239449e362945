"""Check and measure every CUDA path of mosic on one GPU, with random weights and synthetic data, in
one command (`make gpu-check`, under 8 minutes on one GPU). Prints one table and writes a JSON file,
rewritten after every part (a hung or killed run keeps what was measured).

    python bench/gpu_check.py [--out bench/results/gpu_check.json] [--workers 8] [--parts ...]
    python bench/gpu_check.py --cpu      # dry run of every part that can run without a GPU (tiny sizes)

Parts:
  cotracker  `cotracker3` through the real package (random-weight checkpoint), bf16, 16 x 16 and the
             default 30 x 30 grid: batch 1 vs batched clips/s; the batched tracks (positions and
             visibility, every point and frame) equal to batch 1 within a stated tolerance, a fall
             back to batch 1 counted as a failure, and the tolerance shown to tell clips apart
  train      ViT-S/14 at 224, global batch 64, bf16: step time, bare student+teacher time, their
             ratio (goal <= 1.10), peak memory; the real step (mosic.train.train.mosic_step)
  loader     nvJPEG decode, and decode + crop on the GPU (mosic.train.device_crop); the DataLoader with
             W workers (320x240 and 1280x720 JPEGs, and the frame cache) against the step: clips/s
             delivered vs consumed, GPU busy fraction
  torchrun   `torchrun --standalone --nproc_per_node 1 -m mosic.train` (a free port; NCCL on CUDA,
             gloo on the CPU: the process group, DDP wrapper and all-reduces run with one process):
             a few steps, checkpoint, resume; the resumed run must end at the requested step and
             report the backend that ran
  eval       every mosic-eval protocol on CUDA at the paper's input sizes on a small synthetic set,
             wall time per image

A part that cannot run here (no CUDA, the cotracker package missing) is reported as skipped with the
reason; a part that fails is reported with its error and the others still run; the exit status is 1
if any part failed. A part also fails when a figure it reports is not finite. Every part has a time
limit (PART_LIMIT_S, at most 3 minutes, subprocesses included) within a total budget (--budget);
a part left without time is skipped. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("cotracker", "train", "loader", "torchrun", "eval")
#: seconds each part may take (its subprocesses included), and the default total budget: the whole
#: check stays under 8 minutes on one GPU (docs/gpu.md: how the figures were estimated)
PART_LIMIT_S = {"data": 90, "cotracker": 90, "train": 50, "loader": 100, "torchrun": 70, "eval": 100}
BUDGET_S = 450
SUBPROCESS_LIMIT_S = 180
LOADER_TIMEOUT_S = 60
#: the CoTracker comparison: batched vs batch 1, every point of every frame
COTRACKER_TOL = {"p99_px": 1.0, "vis_agree": 0.99}
HEAD_SCALE = 300.0  # random CoTracker output heads at std 0.3 instead of 0.001 (see part_cotracker)


class PartTimeout(Exception):
    pass


class Deadline:
    """The time left to the running part: subprocesses get at most that (and SUBPROCESS_LIMIT_S)."""

    def __init__(self):
        self.end = math.inf

    def left(self) -> float:
        return max(1.0, min(SUBPROCESS_LIMIT_S, self.end - time.monotonic()))


DEADLINE = Deadline()


def run_sub(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """A subprocess in its own process group, killed with all its children when the part's time is
    up (torchrun's workers included)."""
    limit = DEADLINE.left()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=limit)
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


# ------------------------------------------------------------------------------------------------
# settings per mode
# ------------------------------------------------------------------------------------------------
def settings(cpu: bool) -> dict:
    if cpu:  # tiny: exercises every code path in well under a minute on 2 CPU cores
        return dict(device="cpu", precision="fp32", model="vit_small_patch14_dinov2",
                    kwargs={"depth": 2, "embed_dim": 48, "num_heads": 2}, img=56, head_hidden=[64], head_dim=32,
                    prototypes=8, batch=4, T=3, step=2, grid=4, sizes=[(64, 48), (160, 96)], videos=[4, 4], cpv=4,
                    frames=12, steps=2, warmup=1, workers=[1], cot_clips=2, cot_batches=[2], cot_grids=[4, 6],
                    cot_sizes=1,
                    eval_imgs=(4, 2), eval_size=56)
    return dict(device="cuda", precision="bf16", model="vit_small_patch14_dinov2", kwargs={}, img=224,
                head_hidden=[1024, 1024, 512], head_dim=256, prototypes=100, batch=64, T=12, step=3, grid=16,
                # videos per size: 288 clips at 320 x 240 (one training batch of distinct clips), 72
                # at 1280 x 720 (making the set is single-threaded CPU work: keep it short)
                sizes=[(320, 240), (1280, 720)], videos=[24, 6], cpv=12, frames=48, steps=10, warmup=3,
                workers=sorted({min(8, os.cpu_count() or 1), min(16, os.cpu_count() or 1)}),
                cot_clips=32, cot_batches=[8, 32], cot_grids=[16, 30], cot_sizes=2, eval_imgs=(40, 20), eval_size=None)


def pipelines_yaml(cfg: dict, root: Path, stores: Path) -> str:
    """A pipelines file with one pipeline, ``check``, over ``root`` (oracle tracks: no tracker cost)."""
    train = {"model": {"name": cfg["model"], "pretrained": False, "img_size": cfg["img"], "kwargs": cfg["kwargs"],
                       "train_blocks": 2, "head_hidden": cfg["head_hidden"], "head_dim": cfg["head_dim"],
                       "num_prototypes": cfg["prototypes"]},
             "batch_size": cfg["batch"], "epochs": 1000, "num_workers": cfg["workers"][0],
             "precision": cfg["precision"], "device": cfg["device"], "checkpoint_every": 2, "log_every": 1,
             "validate": {"every": 0}}
    pipe = {"dataset": {"kind": "synthetic", "root": str(root), "split": "train"},
            "clips": {"length": cfg["T"], "step": cfg["step"], "clips_per_video": cfg["cpv"], "stride": None},
            "tracker": {"name": "oracle", "grid": cfg["grid"], "batch_size": 16}, "stores": str(stores),
            "train": train}
    return json.dumps({"defaults": {}, "pipelines": {"check": pipe}}, indent=2)  # JSON is YAML


class Ctx:
    def __init__(self, cfg: dict, work: Path):
        self.cfg, self.work = cfg, work
        self._stores: dict = {}
        self.data_s: dict = {}  # seconds to make each synthetic set and its store
        self.needed_sizes = list(cfg["sizes"])

    def data(self, size: tuple[int, int]) -> tuple[Path, Path, Path]:
        """(root, pipelines file, store) of a synthetic set at ``size``, made once."""
        if size in self._stores:
            return self._stores[size]
        from mosic.config import load_pipeline
        from mosic.data.synthetic import generate
        from mosic.precompute.runner import precompute

        w, h = size
        t = time.perf_counter()
        root = self.work / f"syn{w}x{h}"
        generate(root, videos=self.cfg["videos"][self.cfg["sizes"].index(size)], seed=11, num_frames=self.cfg["frames"], width=w, height=h,
                 exact_length=True)
        pfile = self.work / f"pipelines{w}.yaml"
        pfile.write_text(pipelines_yaml(self.cfg, root, self.work / f"stores{w}"))
        res = precompute(load_pipeline("check", pfile), progress=False)
        self._stores[size] = (root, pfile, Path(res.store))
        self.data_s[f"{w}x{h}"] = time.perf_counter() - t
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
def compare_tracks(ref, got) -> dict:
    """Batched ``got`` against batch-1 ``ref`` (TrackResults of the same clips): distances over every
    point of every frame, visibility agreement over the same."""
    import numpy as np

    d = np.linalg.norm(got.tracks.astype(np.float64) - ref.tracks, axis=-1)
    finite = bool(np.isfinite(got.tracks).all() and np.isfinite(ref.tracks).all())
    return {"p99_px": float(np.percentile(d, 99)) if finite else float("nan"),
            "max_px": float(d.max()) if finite else float("nan"),
            "vis_agree": float((got.visibility == ref.visibility).mean()), "finite": finite}


def clip_separation(ref) -> float:
    """99th percentile distance between the batch-1 tracks of neighbouring clips after frame 0: what
    a batched call that mixed clips up would at least be off by. The comparison means something
    only when this is well above the tolerance."""
    import numpy as np

    tr = ref.tracks
    if len(tr) < 2 or tr.shape[1] < 2:
        return float("nan")
    d = np.linalg.norm(tr[1:, 1:].astype(np.float64) - tr[:-1, 1:], axis=-1)
    return float(np.percentile(d, 99))


def batched_row(cmp: dict, separation: float, fell_back: bool) -> tuple[bool, str]:
    """(ok, why not) of one batched-vs-batch-1 comparison."""
    if fell_back:
        return False, "the batched call failed and the tracker fell back to batch 1"
    if not cmp["finite"]:
        return False, "non-finite tracks"
    if not separation > 2 * COTRACKER_TOL["p99_px"]:
        return False, (f"neighbouring clips' tracks differ by only {separation:.2f} px (p99): the comparison "
                       "cannot tell clips apart")
    if cmp["p99_px"] > COTRACKER_TOL["p99_px"] or cmp["vis_agree"] < COTRACKER_TOL["vis_agree"]:
        return False, (f"batched tracks differ from batch 1: p99 {cmp['p99_px']:.2f} px, visibility agrees on "
                       f"{100 * cmp['vis_agree']:.1f}%")
    return True, ""


def part_cotracker(ctx: Ctx) -> dict:
    import numpy as np
    import torch

    try:
        import cotracker  # noqa: F401
    except ImportError:
        return {"status": "skipped", "reason": "the cotracker package is not installed (see bench/gpu_wheels.sh)"}
    from mosic.data.grid import grid_queries
    from mosic.precompute.trackers.cotracker import CoTrackerTracker, import_predictor_class
    from mosic.store_schema.reader import StoreReader, open_frame_source

    cfg = ctx.cfg
    ck = ctx.work / "cotracker_random.pth"
    torch.manual_seed(0)
    pred = import_predictor_class()(checkpoint=None, offline=True, v2=False, window_len=60)
    # CoTracker initialises its output heads at std 0.001: with random weights every track would stay
    # within a hundredth of a pixel of its query, and a batched call that mixed clips up would pass.
    # Scaled up, the random tracks and visibilities differ from clip to clip (clip_separation shows it)
    sd = pred.model.state_dict()
    for k in sd:
        if k.endswith(("flow_head.weight", "vis_conf_head.weight")):
            sd[k] = sd[k] * HEAD_SCALE
    torch.save(sd, ck)
    del pred
    out: dict = {"status": "ok", "precision": cfg["precision"],
                 "tolerance": f"batched vs batch 1 over every point and frame: p99 <= {COTRACKER_TOL['p99_px']} px, "
                              f"visibility agreeing on >= {100 * COTRACKER_TOL['vis_agree']:.0f}%; no fall-back "
                              "to batch 1; neighbouring clips' tracks > 2x the tolerance apart"}
    errors = []

    def tracker(bs):
        return CoTrackerTracker(checkpoint=ck, batch_size=bs, device=cfg["device"], precision=cfg["precision"])

    warm = cfg["device"] != "cpu"  # warm-up calls (CUDA kernels, allocator); on the CPU: time
    for size in cfg["sizes"][: cfg["cot_sizes"]]:
        root, _, store = ctx.data(size)
        r = StoreReader(store)
        src = open_frame_source(r, None, verify=False)
        clips = [r.clips[i] for i in r.done]
        clips = [clips[k % len(clips)] for k in range(cfg["cot_clips"])]
        frames = np.stack([src.read_clip(c) for c in clips])
        for grid in cfg["cot_grids"]:
            q = grid_queries(grid, size[0], size[1])
            row: dict = {"points": int(len(q))}
            tr1 = tracker(1)
            if warm:
                tr1.track(frames[:1], q)
            sync(cfg["device"])
            t = time.perf_counter()
            res1 = tr1.track(frames, q)
            sync(cfg["device"])
            row["batch1_clips_s"] = len(clips) / (time.perf_counter() - t)
            row["clip_separation_p99_px"] = sep = clip_separation(res1)
            del tr1
            for bs in cfg["cot_batches"]:
                trb = tracker(bs)  # a fresh tracker: a fall-back to batch 1 is permanent in one
                if warm:
                    trb.track(frames[:bs], q)
                sync(cfg["device"])
                t = time.perf_counter()
                resb = trb.track(frames, q)
                sync(cfg["device"])
                row[f"batch{bs}_clips_s"] = len(clips) / (time.perf_counter() - t)
                cmp = compare_tracks(res1, resb)
                fell_back = not trb._batched_ok
                ok, why = batched_row(cmp, sep, fell_back)
                row.update({f"batch{bs}_{k}": v for k, v in cmp.items()})
                row[f"batch{bs}_fell_back"] = fell_back
                row[f"batch{bs}_view_fixes_used"] = trb.view_fixes_used
                row[f"batch{bs}_ok"] = ok
                if not ok:
                    errors.append(f"{size[0]}x{size[1]} grid {grid} batch {bs}: {why}")
                del trb
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            out[f"{size[0]}x{size[1]} grid {grid}"] = row
    if errors:
        out["status"] = "failed"
        out["error"] = "; ".join(errors)
    return out


# ------------------------------------------------------------------------------------------------
# 2. the training step
# ------------------------------------------------------------------------------------------------
def build_step(ctx: Ctx, store: Path, pfile: Path):
    """The real model, optimiser, EMA and step of mosic.train.train, on the device."""
    import torch

    from mosic.config import load_pipeline
    from mosic.backbones import create_backbone
    from mosic.train.model import MoSiCModel, TeacherEMA, make_teacher, random_keep_mask
    from mosic.devices import autocast, resolve_precision
    from mosic.train.train import mosic_step, param_groups

    cfg = ctx.cfg
    pc = load_pipeline("check", pfile)
    ts = pc.train
    dev = torch.device(cfg["device"])
    m = ts.model
    torch.manual_seed(0)
    bb = create_backbone(m.name, pretrained=False, img_size=m.img_size, **m.kwargs)
    student = MoSiCModel(bb, m.num_prototypes, m.head_hidden, m.head_dim, m.train_blocks).to(dev)
    student.normalize_prototypes()
    teacher = make_teacher(student)
    ema = TeacherEMA(student, teacher, ts.ema)
    opt = torch.optim.AdamW(param_groups(student, ts.optim), betas=ts.optim.betas)
    precision = resolve_precision(ts.precision, dev)
    amp = autocast(dev, precision)

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
    """What the training loop does with a loader's batch: to the device, frames normalised there."""
    from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD
    from mosic.train.train import device_batch

    return device_batch(batch, dev, IMAGENET_MEAN, IMAGENET_STD)


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
    import torch
    import torch.multiprocessing as tmp

    from mosic.data.frame_cache import build_frame_cache, cache_side, worth_caching
    from mosic.train.data import ClipDataset, batch_bytes, make_loader

    cfg = ctx.cfg
    dev = torch.device(cfg["device"])
    root, pfile, store0 = ctx.data(cfg["sizes"][0])
    full, _, _, _ = build_step(ctx, store0, pfile)
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
                    full(b, steps)
                    sync(dev)
                    busy += time.perf_counter() - ts_
                    steps += 1
                wall = time.perf_counter() - t1
                step_alone = getattr(ctx, "step_s", None) or busy / max(1, steps)
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
    # --standalone: a rendezvous on a free local port (a fixed port collides with another run)
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            "-m", "mosic.train", "--config", str(pfile), "--pipeline", "check", "--store", str(store),
            "--out", str(run), "--no-progress", "--batch-size", str(min(cfg["batch"], 8)), "--workers", "2",
            "--set", "checkpoint_every=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    # cwd: the scratch folder, never the repository (its mosic/ folder would shadow the installed package)
    r1 = run_sub(base + ["--max-steps", "3"], env=env, cwd=ctx.work)
    t1 = time.perf_counter() - t
    if r1.returncode != 0:
        return {"status": "failed", "error": f"first run exit {r1.returncode}: {(r1.stderr or r1.stdout)[-1500:]}"}
    ck = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    t = time.perf_counter()
    r2 = run_sub(base + ["--max-steps", "5", "--resume"], env=env, cwd=ctx.work)
    t2 = time.perf_counter() - t
    if r2.returncode != 0:
        return {"status": "failed", "error": f"resumed run exit {r2.returncode}: {(r2.stderr or r2.stdout)[-1500:]}"}
    res = json.loads((run / "result.json").read_text())
    conf = json.loads((run / "config.json").read_text())
    resumed = "resumed from" in (r2.stdout + r2.stderr)
    # the backend the run's process group used (none: training ran without one)
    backend, want = conf.get("backend"), "nccl" if cfg["device"] == "cuda" else "gloo"
    errors = []
    if not (res.get("steps") == 5 and resumed and "step_0000002.pt" in ck):
        errors.append("the resumed run did not end at step 5 from the step-2 checkpoint")
    if backend != want or conf.get("world_size") != 1:
        errors.append(f"the run's process group: backend {backend}, world size {conf.get('world_size')} "
                      f"(want {want}, 1)")
    return {"status": "failed" if errors else "ok", "device": conf.get("device"), "backend": backend,
            "world_size": conf.get("world_size"), "checkpoints_after_first": ck, "resumed": resumed,
            "final_step": res.get("steps"), "first_run_s": t1, "resumed_run_s": t2,
            **({"error": "; ".join(errors)} if errors else {})}


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
        cmd = [sys.executable, "-m", "mosic.evaluation.cli", "run", "--model", cfg["model"], "--no-pretrained",
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
        r = run_sub(cmd, cwd=ctx.work, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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

    for part in ("data",) + PARTS:
        r = results.get(part)
        if r is None:
            continue
        st = r.get("status")
        if st != "ok":
            add(part, st, "", (r.get("reason") or r.get("error") or "").splitlines()[-1][:100] if
                (r.get("reason") or r.get("error")) else "")
            if st == "skipped":
                continue
        if part == "data" and st == "ok":
            add(part, "synthetic sets and stores", ", ".join(f"{k[:-2]}: {v:.0f} s" for k, v in r.items() if k.endswith(" s")))
        elif part == "cotracker":
            for k, v in r.items():
                if isinstance(v, dict):
                    cols = [f"{n[:-8]}={x:.1f}" for n, x in v.items() if n.endswith("clips_s")]
                    add(part, f"{k} clips/s", ", ".join(cols),
                        "; ".join(f"{n[:-7]} vs batch 1: p99 {v[n]:.2f} px, vis {100 * v[n[:-7] + '_vis_agree']:.1f}%"
                                  f"{' FELL BACK' if v[n[:-7] + '_fell_back'] else ''}"
                                  for n in v if n.endswith("_p99_px") and not n.startswith("clip"))
                        + f"; clips apart {v['clip_separation_p99_px']:.1f} px")
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
            if "batch_mb" in r:
                add(part, "frames per batch (uint8)", f"{r['batch_mb']:.1f} MB", f"sharing: {r['sharing_strategy']}")
        elif part == "torchrun":
            add(part, f"{r.get('backend')} on {r.get('device')}, world {r.get('world_size')}",
                f"steps 0-3, resume at 2 -> {r.get('final_step')}",
                f"{r.get('first_run_s', 0):.0f} s + {r.get('resumed_run_s', 0):.0f} s")
        elif part == "eval":
            for k, v in r.items():
                if isinstance(v, dict) and v.get("status") == "ok":
                    add(part, k, f"{v['ms_per_image']:.1f} ms/image", f"{v['images']} images, {v['seconds']:.0f} s")
    w = [max(len(str(x[i])) for x in rows + [("part", "what", "value", "note")]) for i in range(4)]
    line = lambda x: "  ".join(str(c).ljust(w[i]) for i, c in enumerate(x))  # noqa: E731
    return "\n".join([line(("part", "what", "value", "note")), line(tuple("-" * n for n in w))] + [line(x) for x in rows])


def non_finite(r, path="") -> list[str]:
    """The keys of ``r`` (nested) whose number is NaN or infinite."""
    if isinstance(r, dict):
        return [k for key, v in r.items() for k in non_finite(v, f"{path}{key}/")]
    if isinstance(r, (list, tuple)):
        return [k for i, v in enumerate(r) for k in non_finite(v, f"{path}{i}/")]
    if isinstance(r, float) and not math.isfinite(r):
        return [path.rstrip("/")]
    return []


def write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, path)


def part_data(ctx: Ctx) -> dict:
    """The synthetic sets and their stores the other parts read (made once, timed here)."""
    out: dict = {"status": "ok"}
    for size in ctx.needed_sizes:
        ctx.data(size)
    out.update({f"{k} s": v for k, v in ctx.data_s.items()})
    return out


def run_part(fn, ctx: Ctx, limit: float) -> dict:
    """``fn(ctx)`` with a time limit: SIGALRM raises PartTimeout in it (a DataLoader's own timeout
    and the subprocesses' limits end waits the alarm cannot); should the part still not return,
    faulthandler prints every thread's stack and ends the process 30 s later (the JSON keeps the
    parts before it)."""
    def alarm(signum, frame):
        raise PartTimeout(f"the part ran past its {limit:.0f} s limit")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(max(1, int(math.ceil(limit))))
    faulthandler.dump_traceback_later(limit + 30, exit=True)
    DEADLINE.end = time.monotonic() + limit
    try:
        r = fn(ctx)
    except Exception as e:  # noqa: BLE001 - a failing part is reported, the others still run
        r = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)
        DEADLINE.end = math.inf
    bad = non_finite(r)
    if bad and r.get("status") == "ok":
        r["status"] = "failed"
        r["error"] = f"non-finite figures: {', '.join(bad)}"
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU at tiny sizes (no CUDA needed)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "gpu_check.json")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--workers", default=None, help="DataLoader workers to try, e.g. 8,16")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all parts together")
    a = p.parse_args(argv)
    t_all = time.perf_counter()
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
    try:
        shm_free = shutil.disk_usage("/dev/shm").free / 2 ** 30
    except OSError:
        shm_free = None
    results: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                 "cuda": torch.version.cuda, "cpus": os.cpu_count(), "shm_free_gib": shm_free,
                                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not a.cpu
                                 else None, "mode": "cpu dry run" if a.cpu else "cuda"},
                     "settings": {k: v for k, v in cfg.items()}}
    # sizes the chosen parts read: the first for the step, both for CoTracker and the loader
    ctx.needed_sizes = cfg["sizes"][: 2 if {"cotracker", "loader"} & set(parts) else 1] \
        if {"cotracker", "train", "loader", "torchrun"} & set(parts) else []
    limits = {n: PART_LIMIT_S[n] for n in ("data",) + PARTS if n in parts or (n == "data" and ctx.needed_sizes)}
    print(f"[gpu_check] time budget {a.budget:.0f} s: " + ", ".join(f"{n} <= {v} s" for n, v in limits.items())
          + f"; results in {a.out} after every part", flush=True)
    results["budget_s"] = {"total": a.budget, **limits}
    write_json(a.out, results)
    t_parts = time.monotonic()
    fns = {"data": part_data, "cotracker": part_cotracker, "train": part_train, "loader": part_loader, "torchrun": part_torchrun,
           "eval": part_eval}
    try:
        for name in limits:
            left = a.budget - (time.monotonic() - t_parts)
            if left < 10:
                results[name] = {"status": "skipped", "reason": f"out of the {a.budget:.0f} s time budget"}
                write_json(a.out, results)
                continue
            t = time.perf_counter()
            print(f"[gpu_check] {name} (<= {min(limits[name], left):.0f} s) ...", flush=True)
            results[name] = {"status": "running"}  # what a killed run leaves
            write_json(a.out, results)
            r = run_part(fns[name], ctx, min(limits[name], left))
            r["seconds"] = time.perf_counter() - t
            results[name] = r
            write_json(a.out, results)
            print(f"[gpu_check] {name}: {r['status']} ({r['seconds']:.0f} s)", flush=True)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - t_all
    write_json(a.out, results)
    print(table(results))
    print(f"total {results['seconds']:.0f} s (budget {a.budget:.0f} s for the parts)")
    print(f"wrote {a.out}")
    return 1 if any(results.get(n, {}).get("status") == "failed" for n in limits) else 0


if __name__ == "__main__":
    sys.exit(main())
