"""Per-family training-step benchmark: for each backbone family (DINOv2, DINOv2-R, DINO, DINOv3,
EVA-02) at its ViT-S size and native input, the MoSiC training step against the bare student +
teacher work, and the peak memory, on the CPU.

    python bench/bench_families.py [--batch 2] [--frames 12] [--steps 3] [--families dinov3,eva02]

Bare work = teacher forward on all B x T frames + student forward and backward on the B first
frames with the same token dropping (the backbone work no implementation can avoid). Full step =
``mosic.train.step.mosic_step`` (teacher, sampling, head, Sinkhorn, loss, student), backward,
AdamW and the EMA update. Each family runs in its own process, so that its peak resident memory
(``ru_maxrss``) is its own: the peak after the bare work, and after the full steps. The ratio is
given in wall time and in the process's CPU time (less sensitive to other load on the machine). A synthetic
batch (random frames, random tracks inside the crop) stands in for the loader: the data path is
measured by bench_train.py. Random weights (nothing to download); goal: full / bare <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from results_file import write_results


# family: (timm name, input size); ViT-S of each (EVA-02: S/14, the EVA-CLIP towers are B and up)
FAMILIES = {
    "dinov2": ("vit_small_patch14_dinov2", 224),
    "dinov2-r": ("vit_small_patch14_reg4_dinov2", 224),
    "dino": ("vit_small_patch16_224", 224),
    "dinov3": ("vit_small_patch16_dinov3", 256),
    "eva02": ("eva02_small_patch14_224", 224),
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(family: str, batch: int, frames: int, steps: int, threads: int) -> dict:
    import torch

    from mosic.config import train_settings
    from mosic.backbones import create_backbone
    from mosic.train.model import MoSiCModel, TeacherEMA, make_teacher, random_keep_mask
    from mosic.train.step import mosic_step
    from mosic.train.train import param_groups

    torch.set_num_threads(threads)
    name, size = FAMILIES[family]
    ts = train_settings({"model": {"name": name, "img_size": size, "pretrained": False}, "batch_size": batch})
    torch.manual_seed(0)
    student = MoSiCModel(create_backbone(name, pretrained=False, img_size=size), ts.model.num_prototypes,
                         ts.model.head_hidden, ts.model.head_dim, ts.model.train_blocks)
    student.normalize_prototypes()
    teacher = make_teacher(student)
    ema = TeacherEMA(student, teacher, ts.ema)
    opt = torch.optim.AdamW(param_groups(student, ts.optim))
    p = student.patch_size
    g = size // p
    n = g * g  # one trajectory per patch
    gen = torch.Generator().manual_seed(0)
    b = {"frames": torch.randn(batch, frames, 3, size, size, generator=gen),
         "tracks": torch.rand(batch, frames, n, 2, generator=gen) * size,
         "visibility": torch.ones(batch, frames, n, dtype=torch.bool),
         "index": torch.arange(batch)}
    keep = random_keep_mask(batch, n, ts.mask_ratio, generator=torch.Generator().manual_seed(0))
    rss0 = _rss_mib()

    def bare():
        with torch.no_grad():
            teacher.patch_features(b["frames"].flatten(0, 1))
        opt.zero_grad(set_to_none=True)
        student.patch_features(b["frames"][:, 0], keep).square().mean().backward()

    def full():
        student.normalize_prototypes()
        opt.zero_grad(set_to_none=True)
        loss, _ = mosic_step(student, teacher, b, ts, step=0, rank=0, monitors=False)  # as a step that logs nothing
        loss.backward()
        opt.step()
        ema.update()

    def head():  # the teacher's fp32 head and scores on every tracked point of the batch (all visible here)
        with torch.no_grad():
            teacher.scores(teacher.head(feats))

    feats = torch.randn(batch * frames * n, bb_dim := student.backbone.embed_dim, generator=gen)
    bare()
    rss_bare = _rss_mib()
    full()
    tb, tf, th, cb, cf = [], [], [], [], []
    for _ in range(steps):  # interleaved: all see the same machine load
        t, c = time.perf_counter(), time.process_time()
        bare()
        tb.append(time.perf_counter() - t)
        cb.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        full()
        tf.append(time.perf_counter() - t)
        cf.append(time.process_time() - c)
        t = time.perf_counter()
        head()
        th.append(time.perf_counter() - t)
    rss_full = _rss_mib()
    bb = student.backbone
    return {"family": family, "model": name, "img": size, "patch": p, "prefix_tokens": bb.num_prefix_tokens,
            "rope": getattr(bb, "rope", None) is not None, "batch": batch, "frames": frames, "points": n,
            "bare_ms": statistics.median(tb) * 1e3, "full_ms": statistics.median(tf) * 1e3,
            "ratio": statistics.median(tf) / statistics.median(tb), "head_ms": statistics.median(th) * 1e3,
            "bare_cpu_s": statistics.median(cb), "full_cpu_s": statistics.median(cf),
            "ratio_cpu": statistics.median(cf) / statistics.median(cb),
            "embed_dim": bb_dim, "rss_model_mib": rss0,
            "peak_bare_mib": rss_bare, "peak_full_mib": rss_full, "threads": threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--batch", type=int, default=2, help="clips per step")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--steps", type=int, default=3, help="timed repetitions (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.batch, a.frames, a.steps, a.threads)))
        return
    rows = []
    for fam in [f.strip() for f in a.families.split(",") if f.strip()]:
        if fam not in FAMILIES:
            sys.exit(f"unknown family {fam!r} (choose from {', '.join(FAMILIES)})")
        out = subprocess.run([sys.executable, __file__, "--one", fam, "--batch", str(a.batch), "--frames",
                              str(a.frames), "--steps", str(a.steps), "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{fam:<9} {r['model']:<30} {r['img']} px p{r['patch']} prefix {r['prefix_tokens']} "
              f"{'RoPE' if r['rope'] else 'abs '}: bare {r['bare_ms']:7.0f} ms  full {r['full_ms']:7.0f} ms  "
              f"full/bare {r['ratio']:.3f} (CPU time {r['ratio_cpu']:.3f}; teacher head on all points "
              f"{r['head_ms']:5.0f} ms)  peak RSS {r['peak_bare_mib']:.0f} -> {r['peak_full_mib']:.0f} MiB "
              f"(model {r['rss_model_mib']:.0f})", flush=True)
    print(f"{a.batch} clips x {a.frames} frames per step, one trajectory per patch (all visible: the teacher's "
          f"head runs on every point), last 2 blocks training, {a.threads} threads; goal full/bare <= 1.10")
    write_results("families", rows)


if __name__ == "__main__":
    main()
