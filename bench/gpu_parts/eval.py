"""every mosic-eval protocol on CUDA at the paper's input sizes on a small synthetic set,
wall time per image

Linear, clustering, in-context and video, one mosic-eval call each (on the CPU, a dry run, one call
runs them all: the figures mean nothing there); the time includes model creation."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from gpu_parts.common import Ctx, run_sub

PROTOCOLS = ["linear", "clustering", "incontext", "video"]


def run(ctx: Ctx) -> dict:
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
    failed = []
    # on the CPU (a dry run) one mosic-eval call runs them all: the figures mean nothing there
    groups = [PROTOCOLS] if cfg["device"] == "cpu" else [[p_] for p_ in PROTOCOLS]
    for group in groups:
        proto = ",".join(group)
        cmd = eval_command(cfg, group, root, ctx.work / f"eval-{proto}")
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


def eval_command(cfg: dict, group: list[str], root: Path, out: Path) -> list[str]:
    """The mosic-eval command that runs the protocols of ``group`` on the synthetic set at ``root``."""
    proto = ",".join(group)
    cmd = [sys.executable, "-m", "mosic.evaluation.cli", "run", "--model", cfg["model"], "--no-pretrained",
           "--device", cfg["device"], "--protocols", proto, "--out", str(out), "--seed", "0"]
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
    return cmd


def _count_images(root: Path, proto: str) -> int:
    splits = ["valid"] if proto == "video" else ["train", "valid"]  # what the protocol reads
    return sum(1 for s in splits for _ in (root / s / "JPEGImages").rglob("*.jpg"))
