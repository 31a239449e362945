"""Training-step benchmark: where a MoSiC step's time goes, and the step's overhead over the bare
ViT work, measured in one run on the same batch; plus DataLoader throughput against the step rate.

    python bench/bench_train.py [--model vit_small_patch14_dinov2] [--img 224] [--batch 4] [--steps 5]

Bare work = student forward + backward on the first frames (with the same token dropping) +
teacher forward on all frames. Full step = the real training step (`mosic.train.step.mosic_step`,
backward, AdamW, EMA update). Goal: full / bare <= 1.10. Random weights (nothing to download).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def timeit(fn, reps: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_small_patch14_dinov2")
    p.add_argument("--kwargs", default="{}", help="timm kwargs as JSON, e.g. '{\"depth\": 4}'")
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--batch", type=int, default=4, help="clips per step")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--steps", type=int, default=5, help="timed repetitions (median)")
    p.add_argument("--train-blocks", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()


    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute
    from mosic.train.dataset import ClipDataset
    from mosic.train.loader import make_loader
    from mosic.backbones import create_backbone
    from mosic.train.model import MoSiCModel, TeacherEMA, make_teacher, random_keep_mask
    from mosic.train.step import mosic_step
    from mosic.train.stores import store_requirements
    from mosic.train.train import param_groups

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    generate(work / "synthetic", videos=max(4, a.batch * 2), seed=3)
    over = {"dataset.root": str(work / "synthetic"), "stores": str(work / "stores"), "clips.length": a.frames,
            "clips.step": 3, "clips.clips_per_video": 2,
            "train.model.name": a.model, "train.model.img_size": a.img, "train.model.kwargs": json.loads(a.kwargs),
            "train.model.train_blocks": a.train_blocks, "train.model.head_hidden": [1024, 1024, 512],
            "train.model.head_dim": 256, "train.model.num_prototypes": 100, "train.batch_size": a.batch}
    cfg = load_pipeline("synthetic-oracle", overrides=over)
    ts = cfg.train
    res = precompute(cfg, progress=False)
    ds = ClipDataset(res.store, require=store_requirements(cfg), out_size=a.img, seed=0)
    loader = make_loader(ds, batch_size=a.batch, num_workers=a.workers, shuffle=True, seed=0, drop_last=True,
                         distributed=False)
    batch = next(iter(make_loader(ds, batch_size=a.batch, num_workers=0, shuffle=False, seed=0,
                                  drop_last=True, distributed=False)))
    u8_bytes = batch["frames"].numel()  # the loader hands frames over as uint8 ...
    # ... and the training loop normalises them on its device (here the CPU), as train.py does
    from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD
    from mosic.train.train import device_batch

    batch = device_batch(batch, torch.device("cpu"), IMAGENET_MEAN, IMAGENET_STD)

    m = ts.model
    torch.manual_seed(0)
    bb = create_backbone(m.name, pretrained=False, img_size=m.img_size, **m.kwargs)
    student = MoSiCModel(bb, m.num_prototypes, m.head_hidden, m.head_dim, m.train_blocks)
    teacher = make_teacher(student)
    ema = TeacherEMA(student, teacher, ts.ema)
    opt = torch.optim.AdamW(param_groups(student, ts.optim))
    frames = batch["frames"]
    B, T, _, S, _ = frames.shape
    L = (S // student.patch_size) ** 2
    g = torch.Generator().manual_seed(0)
    keep = random_keep_mask(B, L, ts.mask_ratio, generator=g)

    def teacher_fwd():
        with torch.no_grad():
            teacher.patch_features(frames.flatten(0, 1))

    def student_fwd_bwd():
        opt.zero_grad(set_to_none=True)
        student.patch_features(frames[:, 0], keep).square().mean().backward()

    def bare():
        teacher_fwd()
        student_fwd_bwd()

    def full():
        student.normalize_prototypes()
        loss, _ = mosic_step(student, teacher, batch, ts, step=0, rank=0, monitors=False)  # as a step that logs nothing
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update()

    n = a.steps
    t_teacher = timeit(teacher_fwd, n)
    t_student = timeit(student_fwd_bwd, n)
    t_bare = timeit(bare, n)
    t_full = timeit(full, n)
    extra = t_full - t_bare
    print(f"model {a.model} {json.loads(a.kwargs) or ''} at {S} px, {B} clips x {T} frames, "
          f"{batch['tracks'].shape[2]} points, last {a.train_blocks} blocks training, {torch.get_num_threads()} threads")
    print(f"teacher forward (all {B * T} frames)        {t_teacher * 1e3:8.1f} ms")
    print(f"student forward+backward ({B} first frames) {t_student * 1e3:8.1f} ms")
    print(f"bare (both, measured together)            {t_bare * 1e3:8.1f} ms")
    print(f"full MoSiC step                           {t_full * 1e3:8.1f} ms")
    print(f"  of which sampling + head + Sinkhorn + loss + AdamW + EMA: {extra * 1e3:.1f} ms")
    print(f"ratio full / bare: {t_full / t_bare:.3f}  (goal <= 1.10)")

    # data: DataLoader clips/s with workers against the step's clips/s
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    got = 0
    for _ in range(min(len(loader) - 1, 6)):
        got += next(it)["frames"].shape[0]
    dt = time.perf_counter() - t
    step_rate = B / t_full
    print(f"DataLoader ({a.workers} workers): {got / dt:.1f} clips/s; training step consumes {step_rate:.1f} clips/s "
          f"-> data/step = {got / dt / step_rate:.2f} (>= 1: the step never waits, with cores to spare)")
    print(f"frames of one batch from the loader: {u8_bytes / 1e6:.1f} MB as uint8 (float32 would be "
          f"{4 * u8_bytes / 1e6:.1f} MB)")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "train.json").write_text(json.dumps({
        "model": a.model, "img": S, "batch": B, "frames": T, "teacher_ms": t_teacher * 1e3,
        "student_ms": t_student * 1e3, "bare_ms": t_bare * 1e3, "full_ms": t_full * 1e3,
        "ratio": t_full / t_bare, "loader_clips_per_s": got / dt, "step_clips_per_s": step_rate,
        "batch_frames_bytes_uint8": u8_bytes}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
