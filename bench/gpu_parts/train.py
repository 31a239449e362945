"""ViT-S/14 at 224, global batch 64, bf16: step time, bare student+teacher time, their
ratio (goal <= 1.10), peak memory; the real step (mosic.train.step.mosic_step)

Full step = the real training step (mosic_step, backward, AdamW, EMA update); bare work = student
forward + backward on the first frames (with the same token dropping) + teacher forward on all
frames. The loader part runs the same step (Step) against its DataLoaders."""

from __future__ import annotations

import statistics
from functools import partial
from pathlib import Path

from gpu_parts.common import Ctx, timed

GOAL_RATIO = 1.10


class Step:
    """The real model, optimiser, EMA and step of mosic.train.train, on the device: ``full`` is one
    training step, ``bare`` the student + teacher work alone."""

    def __init__(self, ctx: Ctx, store: Path, pfile: Path):
        import torch

        from mosic.backbones import create_backbone
        from mosic.config import load_pipeline
        from mosic.devices import autocast, resolve_precision
        from mosic.train.model import MoSiCModel, TeacherEMA, make_teacher
        from mosic.train.train import param_groups

        cfg = ctx.cfg
        pc = load_pipeline("check", pfile)
        self.ts = ts = pc.train
        self.dev = dev = torch.device(cfg["device"])
        m = ts.model
        torch.manual_seed(0)
        bb = create_backbone(m.name, pretrained=False, img_size=m.img_size, **m.kwargs)
        self.student = MoSiCModel(bb, m.num_prototypes, m.head_hidden, m.head_dim, m.train_blocks).to(dev)
        self.student.normalize_prototypes()
        self.teacher = make_teacher(self.student)
        self.ema = TeacherEMA(self.student, self.teacher, ts.ema)
        self.opt = torch.optim.AdamW(param_groups(self.student, ts.optim), betas=ts.optim.betas)
        self.precision = resolve_precision(ts.precision, dev)
        self.amp = autocast(dev, self.precision)

    def full(self, batch: dict, step: int = 0):
        """One training step on ``batch`` (on the device): the loss."""
        from mosic.train.step import mosic_step

        self.student.normalize_prototypes()
        with self.amp:
            loss, _ = mosic_step(self.student, self.teacher, batch, self.ts, step=step, rank=0, monitors=False)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.ema.update()
        return loss

    def bare(self, batch: dict) -> None:
        """The student's and the teacher's own work on ``batch``, nothing of the step around it."""
        import torch

        from mosic.train.model import random_keep_mask

        frames = batch["frames"]
        B, T, _, S, _ = frames.shape
        keep = random_keep_mask(B, (S // self.student.patch_size) ** 2, self.ts.mask_ratio,
                                generator=torch.Generator().manual_seed(0)).to(self.dev)
        with self.amp:
            with torch.no_grad():
                self.teacher.patch_features(frames.flatten(0, 1))
            self.opt.zero_grad(set_to_none=True)
            f = self.student.patch_features(frames[:, 0], keep)
        f.float().square().mean().backward()


def to_device(batch: dict, dev) -> dict:
    """What the training loop does with a loader's batch: to the device, frames normalised there."""
    from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD
    from mosic.train.train import device_batch

    return device_batch(batch, dev, IMAGENET_MEAN, IMAGENET_STD)


def run(ctx: Ctx) -> dict:
    import torch

    from mosic.train.dataset import ClipDataset
    from mosic.train.loader import make_loader

    cfg = ctx.cfg
    root, pfile, store = ctx.data(cfg["sizes"][0])
    ds = ClipDataset(store, out_size=cfg["img"], seed=0)
    if len(ds) < cfg["batch"]:
        raise RuntimeError(f"{len(ds)} clips, fewer than one batch of {cfg['batch']}")
    batch = next(iter(make_loader(ds, batch_size=cfg["batch"], num_workers=0, shuffle=False)))
    dev = torch.device(cfg["device"])
    batch = to_device(batch, dev)
    step = Step(ctx, store, pfile)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_bare = timed(partial(step.bare, batch), cfg["steps"], cfg["warmup"], dev)
    t_full = timed(partial(step.full, batch), cfg["steps"], cfg["warmup"], dev)
    fb, bb_ = statistics.median(t_full), statistics.median(t_bare)
    B, T = batch["frames"].shape[:2]
    out = {"status": "ok", "precision": step.precision, "batch": int(B), "frames": int(T), "img": cfg["img"],
           "points": int(batch["tracks"].shape[2]), "step_ms": fb * 1e3, "bare_ms": bb_ * 1e3,
           "ratio": fb / bb_, "goal_ratio": GOAL_RATIO, "step_clips_s": B / fb,
           "step_ms_range": [min(t_full) * 1e3, max(t_full) * 1e3]}
    if dev.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    ctx.step_s = fb
    return out
