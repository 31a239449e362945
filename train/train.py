"""The MoSiC training loop, top to bottom.

One optimiser step on a global batch of B clips (``batch_size``, split evenly over the processes)
of T frames with N tracked points each (the G x G trajectories nearest to each crop's grid):

1. teacher (EMA, no grad) encodes all T frames (``teacher_chunk`` clips at a time); its patch
   features are sampled at every tracked point (bilinear on the patch grid), projected by the
   head and scored against the prototypes (head, scores, Sinkhorn and loss in fp32);
2. Sinkhorn-Knopp turns the teacher's scores of all points of the global batch into balanced
   cluster assignments Q: the teacher's label of every trajectory in every frame t;
3. the student encodes only the FIRST frame, with 10% of its patch tokens dropped, and is sampled
   at each trajectory's first-frame point (nearest), ``micro_batch`` clips at a time;
4. loss: cross-entropy between the student's first-frame scores (temperature 0.1) and the
   teacher's label of the same trajectory at frame t, for every t where the point is visible:
   each later frame's teacher assignment is carried back along the track to the student's first
   frame, so the student learns to predict where the trajectory will be clustered all along it;
5. AdamW step (gradients of all micro-batches), then the teacher follows the student by EMA.

Run it with ``mosic-train`` (single process) or ``torchrun --nproc_per_node K -m mosic.train`` (DDP).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mosic import MosicError
from mosic.config import PipelineConfig
from mosic.devices import autocast, resolve_device, resolve_precision
from mosic.store_schema.location import Location, as_location, list_stores
from mosic.train.augment import normalize_frames
from mosic.backbones import crop_grid_size, mean_std, patch_size
from mosic.config import TrainSettings
from mosic.train.dataset import ClipDataset
from mosic.train.loader import make_loader
from mosic.backbones import create_backbone
from mosic.train.model import MoSiCModel, TeacherEMA, make_teacher, random_keep_mask
from mosic.train.summary import nearest_store, start_summary, yaml_value
from mosic.train.ops import (cluster_usage_entropy, loss_normaliser, loss_weights, propagation_loss, sample_at_tracks,
                            sinkhorn, symmetric_loss)

log = logging.getLogger("mosic.train")

#: seconds a DataLoader worker's batch may take before training stops with an error (a hung read)
LOADER_TIMEOUT_S = 600


class NonFiniteLossError(MosicError):
    pass


# ---------------------------------------------------------------------------------------------
# finding the store a pipeline trains on


def store_requirements(cfg: PipelineConfig, grid: bool = True) -> dict[str, Any]:
    """What a pipeline asks of its store (dotted StoreSpec fields). ``grid=False`` leaves the
    stored grid free: training takes a per-crop grid from any store dense enough, else the stored
    points inside each crop."""
    req = {
        "dataset.kind": cfg.dataset.kind,
        "dataset.split": cfg.dataset.split,
        "tracker.name": cfg.tracker.name,
    }
    if grid:
        req["grid"] = cfg.tracker.grid
    if cfg.tracker.name == "cotracker3" and cfg.tracker.precision != "auto":  # e.g. ytvos-official: fp32 tracks
        req["tracker.params.precision"] = cfg.tracker.precision
    req.update({f"clips.{k}": v for k, v in cfg.clips.model_dump(mode="json").items()})
    return req


def resolve_store(cfg: PipelineConfig, ts: TrainSettings) -> Location:
    """The store given explicitly, or the single complete store in ``cfg.stores`` that fits.
    Either may be a URL (``s3://bucket/stores``): a Path comes back for local stores, a URL else."""
    if ts.store:
        return as_location(ts.store)
    from mosic.store_schema.reader import StoreError, StoreReader

    stores = as_location(cfg.stores)
    req = store_requirements(cfg)
    fits, other_grid, others = [], [], []
    for p in list_stores(stores):
        try:
            StoreReader(p, require=req)
            fits.append(p)
        except StoreError:
            try:  # the same clips tracked on another grid (e.g. `mosic-precompute --grid 16`)
                other_grid.append((p, StoreReader(p, require=store_requirements(cfg, grid=False)).spec.grid))
            except StoreError:
                others.append(p.name)
    if len(fits) == 1:
        return fits[0]
    if not fits and len(other_grid) == 1:
        p, g = other_grid[0]
        log.warning("no store with the pipeline's %d x %d grid in %s; training on %s, tracked on a %d x %d grid",
                    cfg.tracker.grid, cfg.tracker.grid, stores, p.name, g, g)
        return p
    others += [p.name for p, _ in other_grid]
    want = ", ".join(f"{k}={v}" for k, v in req.items())
    if not fits:
        near = nearest_store(stores, req)
        if near is not None:
            p, diffs = near
            fields = ", ".join(f"{k} (store {have!r}, pipeline {want!r})" for k, have, want in diffs)
            sets = " ".join(f"--tracker {have}" if k == "tracker.name" else f"--set {k}={yaml_value(have)}"
                            for k, have, _ in diffs)  # --tracker: the shortcut mosic-precompute has too
            raise MosicError(
                f"no complete store in {stores}/ fits pipeline {cfg.name!r}; the nearest, {p.name}, differs in "
                f"{fields}: train on it with `{sets}`, or make the pipeline's store with "
                f"`mosic-precompute --pipeline {cfg.name}`")
        raise MosicError(
            f"no complete store in {stores}/ fits pipeline {cfg.name!r} ({want}); run "
            f"`mosic-precompute --pipeline {cfg.name}` first, or pass --store PATH"
            + (f". Stores there: {', '.join(others)}" if others else "")
        )
    raise MosicError(f"several stores in {stores}/ fit pipeline {cfg.name!r}: "
                     f"{', '.join(p.name for p in fits)}; choose one with --store PATH")


# ---------------------------------------------------------------------------------------------
# distributed / device helpers


@dataclass
class Dist:
    enabled: bool = False
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun(env=os.environ) -> bool:
    """torchrun (and torch.distributed.launch) set RANK, WORLD_SIZE and MASTER_ADDR for every process."""
    return all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def setup_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    """A process group whenever torchrun launched the process, one process included (so that
    ``torchrun --nproc_per_node 1`` runs the same NCCL, DDP and all-reduce paths as K processes)."""
    if launched_by_torchrun():
        cuda = torch.cuda.is_available() and device_pref != "cpu"
        local = int(os.environ.get("LOCAL_RANK", 0))
        if cuda:
            torch.cuda.set_device(local)
            dist.init_process_group(backend="nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group(backend="gloo")
        d = Dist(True, dist.get_rank(), dist.get_world_size(), local, dist.get_backend())
        return d, torch.device("cuda", local) if cuda else torch.device("cpu")
    return Dist(), resolve_device(device_pref, flag="train.device")


def device_batch(batch: dict, device: torch.device, mean, std) -> dict:
    """A loader's batch on ``device`` (asynchronously from pinned memory), its uint8 frames made
    float32 and normalised there with ``mean``/``std`` (RGB, on 0..1 values)."""
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    out["frames"] = normalize_frames(out["frames"], mean, std)
    return out


# ---------------------------------------------------------------------------------------------
# optimiser and schedule


def param_groups(model: MoSiCModel, opt) -> list[dict]:
    """AdamW groups: backbone / head+prototypes, each with and without weight decay (none on
    biases and other 1-D parameters)."""
    groups = {k: [] for k in ("bb_decay", "bb_no", "head_decay", "head_no")}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "bb" if name.startswith("backbone.") else "head"
        groups[f"{part}_{'no' if p.ndim <= 1 else 'decay'}"].append(p)
    out = []
    for k, ps in groups.items():
        if ps:
            out.append({
                "params": ps, "name": k,
                "lr": opt.lr_backbone if k.startswith("bb") else opt.lr_head,
                "weight_decay": opt.weight_decay if k.endswith("decay") else 0.0,
            })
    return out


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup then cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# one step


def student_valid(tracks0: torch.Tensor, vis0: torch.Tensor, keep: torch.Tensor | None, size: int,
                  patch: int) -> torch.Tensor:
    """[B, N] bool: the point is inside the crop on the first frame and its patch was not dropped."""
    if keep is None:
        return vis0
    h = size // patch
    col = (tracks0[..., 0] / patch).floor().long().clamp(0, h - 1)
    row = (tracks0[..., 1] / patch).floor().long().clamp(0, h - 1)
    return vis0 & keep.gather(1, row * h + col)


def clip_keep_masks(index: torch.Tensor, num_tokens: int, ratio: float, seed: int, step: int,
                    device: torch.device) -> torch.Tensor | None:
    """[B, L] tokens kept for each clip of the batch, drawn from (seed, step, clip index)."""
    if ratio <= 0:
        return None
    masks = [random_keep_mask(1, num_tokens, ratio, torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, int(i)]).generate_state(1)[0])), device) for i in index.tolist()]
    return torch.cat(masks)


@torch.no_grad()
def teacher_assignments(teacher: MoSiCModel, frames: torch.Tensor, tracks: torch.Tensor, vis: torch.Tensor,
                        L, group=None, chunk: int | None = None) -> torch.Tensor:
    """Steps 1-2: the teacher's Sinkhorn assignments Q [B, T, N, K] of every tracked point of the
    batch. The backbone runs ``chunk`` clips at a time (memory); Sinkhorn always sees the whole
    batch (and, under DDP, every rank's batch)."""
    B, T, _, S, _ = frames.shape
    N = tracks.shape[2]
    chunk = chunk or B
    feats = torch.cat([
        sample_at_tracks(teacher.patch_features(frames[a:a + chunk].flatten(0, 1)).unflatten(0, (-1, T)),
                         tracks[a:a + chunk], (S, S), mode=L.teacher_sampling)
        for a in range(0, B, chunk)]).flatten(0, 2)  # [B*T*N, D]
    if L.marginals == "visible":
        # Invisible points take no part in the marginals and get no label: skip their head pass
        # (occluded points, and points outside the crop), their rows of Q stay zero.
        sel = vis.flatten()
        q_sel = sinkhorn(teacher.scores(teacher.head(feats[sel])), eps=L.sinkhorn_eps, iters=L.sinkhorn_iters,
                         group=group)
        q = q_sel.new_zeros(B * T * N, q_sel.shape[-1])
        q[sel] = q_sel
    else:  # the official recipe: every tracked point in the marginals
        q = sinkhorn(teacher.scores(teacher.head(feats)), eps=L.sinkhorn_eps, iters=L.sinkhorn_iters, group=group)
    return q.view(B, T, N, -1)


def mosic_step(student, teacher: MoSiCModel, batch: dict, ts: TrainSettings, step: int, rank: int = 0,
               group=None, backward=None, no_sync=None) -> tuple[torch.Tensor, dict]:
    """One MoSiC step on this process's share of the global batch; returns the loss and monitors.

    ``student`` may be the DDP wrapper of a MoSiCModel: its forward gives first-frame scores. The
    teacher's assignments and the loss normaliser are computed for the whole batch first; the
    student then runs ``ts.micro_batch`` clips at a time. With ``backward`` (a function of a
    micro-batch's loss) each micro-batch is back-propagated at once and the detached total is
    returned: the gradients add up to those of the whole batch's loss. ``no_sync`` (DDP's
    ``model.no_sync``) wraps the forward and backward of every micro-batch but the last, so that
    gradients are averaged over ranks once. Without ``backward``, the loss keeps its graph (one
    micro-batch: the whole batch)."""
    frames, tracks, vis = batch["frames"], batch["tracks"], batch["visibility"]
    B, T, _, S, _ = frames.shape
    L = ts.loss
    core: MoSiCModel = getattr(student, "module", student)
    p = core.patch_size

    q = teacher_assignments(teacher, frames, tracks, vis, L, group, ts.teacher_chunk)

    # token dropping drawn per clip from (seed, step, clip index): the same whatever the number of
    # ranks or micro-batches
    keep = clip_keep_masks(batch["index"], (S // p) ** 2, ts.mask_ratio, ts.seed, step, frames.device)
    valid = student_valid(tracks[:, 0], vis[:, 0], keep, S, p)
    z = loss_normaliser(loss_weights(vis, valid), L.normalize, group)
    # the symmetric term's teacher label exists where the point is inside the first crop
    z_sym = loss_normaliser(loss_weights(vis, vis[:, 0]), L.normalize, group) if L.symmetric else None
    mb = ts.micro_batch or B
    if backward is None:
        mb = B
    total = torch.zeros((), device=frames.device)
    ss_all = []
    for a in range(0, B, mb):
        sl = slice(a, a + mb)
        last = a + mb >= B
        with nullcontext() if last or no_sync is None else no_sync():
            kp = None if keep is None else keep[sl]
            ss = student(frames[sl, 0], tracks[sl, 0], kp, L.student_sampling)  # [b, N, K]
            loss = propagation_loss(ss, q[sl], vis[sl], valid[sl], temperature=L.temperature, hard=L.hard,
                                    normalize=L.normalize, denom=z)
            if L.symmetric:
                b = ss.shape[0]
                sa = student(frames[sl].flatten(0, 1), tracks[sl].flatten(0, 1), None, L.student_sampling)
                loss = loss + L.symmetric_weight * symmetric_loss(
                    sa.unflatten(0, (b, T)), q[sl, 0], vis[sl], vis[sl, 0], temperature=L.temperature,
                    hard=L.hard, normalize=L.normalize, denom=z_sym)
            ss_all.append(ss.detach())
            if backward is None:
                total = loss
            else:
                backward(loss)
                total = total + loss.detach()
    ss = torch.cat(ss_all)
    mon = {  # cluster usage (1 = even, 0 = collapse) of the teacher's labels and the student's argmax
        "usage_teacher": cluster_usage_entropy(q, hard=True, mask=vis),
        "usage_student": cluster_usage_entropy(ss, hard=True, mask=valid),
        "visible": float(vis.float().mean()),
        "valid_first": float(valid.float().mean()),
        # trajectories per clip inside the crop on the first frame: the points the loss reads
        # before masking (global mean under DDP)
        "points_per_clip": _global_mean(vis[:, 0].sum(1).float(), group),
    }
    return total, mon


def _global_mean(x: torch.Tensor, group) -> float:
    s = torch.stack([x.sum(), torch.tensor(float(x.numel()), device=x.device)])
    if group is not None:
        dist.all_reduce(s, group=group)
    return float(s[0] / s[1].clamp_min(1))


# ---------------------------------------------------------------------------------------------
# checkpoints and export


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def export_backbone(model: MoSiCModel, path: Path) -> Path:
    """A plain timm state dict of the backbone: load it with
    ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``."""
    sd = {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(sd, path)
    return path


# ---------------------------------------------------------------------------------------------
# the loop


def train(cfg: PipelineConfig, ts: TrainSettings, out: Path, resume: bool = False,
          progress: bool = True) -> dict:
    ddp, device = setup_distributed(ts.device)
    ok = False
    try:
        res = _train(cfg, ts, out, resume, progress, ddp, device)
        ok = True
        return res
    finally:
        if ddp.enabled:
            if ok:  # every rank done (rank 0 exports last) before any tears the group down
                dist.barrier()
            dist.destroy_process_group()


def per_process_batch(global_batch: int, world: int) -> int:
    """Clips per process: the global batch split evenly over the processes."""
    if global_batch % world:
        raise MosicError(f"batch_size {global_batch} is the global batch (clips per optimiser step over all "
                         f"processes) and must split evenly over {world} processes: use a multiple of {world}")
    return global_batch // world


def check_batch_fits(items: int, stored_clips: int, global_batch: int, world: int, clip_sampling: str) -> None:
    """Refuse a global batch larger than an epoch's items, naming the two settings that fix it and
    the numbers that would work: a batch of at most ``items`` (a multiple of the process count),
    or every stored clip in every epoch (``clip_sampling: all``) when that gives enough items."""
    if items >= global_batch:
        return
    fits = items - items % world
    ways = []
    if fits >= 1:
        ways.append(f"--batch-size {fits} (train.batch_size; at most {items}"
                    + (f", a multiple of the {world} processes" if world > 1 else "") + ")")
    if clip_sampling != "all" and stored_clips >= global_batch:
        ways.append(f"--set train.clip_sampling=all (every one of the store's {stored_clips} clips in every epoch, "
                    f"not one per video)")
    if not ways:
        ways.append("a store with more clips (more videos, or a smaller clips.stride at precompute)")
    what = "videos" if clip_sampling == "per_video" else "clips"
    raise MosicError(f"the store gives {items} training items per epoch ({what}, train.clip_sampling={clip_sampling}), "
                     f"fewer than one global batch of {global_batch} clips (train.batch_size): use "
                     + ", or ".join(ways))


def _train(cfg: PipelineConfig, ts: TrainSettings, out: Path, resume: bool, progress: bool, ddp: Dist,
           device: torch.device) -> dict:
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    latest = ckpt_dir / "latest.pt"
    if ddp.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not resume and latest.exists():
            raise MosicError(f"{out} already holds a run (checkpoints/latest.pt): pass --resume to continue "
                             "it, or choose another --out")
    if resume and not latest.exists():
        raise MosicError(f"--resume: no checkpoint at {latest}")
    random.seed(ts.seed + ddp.rank)
    np.random.seed(ts.seed + ddp.rank)
    torch.manual_seed(ts.seed)  # same initial weights on every rank

    # -- backbone (its patch size sets the per-crop grid) ---------------------------------------
    m = ts.model
    backbone = create_backbone(m.name, pretrained=m.pretrained, weights=m.weights, img_size=m.img_size, **m.kwargs)
    grid = crop_grid_size(ts.grid, m.img_size, patch_size(backbone))
    mean, std = mean_std(backbone)  # the statistics the frames are normalised with: the weights' own,
    std = ts.std or std              # unless the recipe names its std (the official training: 0.228)

    # -- data ---------------------------------------------------------------------------------
    store = resolve_store(cfg, ts)
    req = store_requirements(cfg, grid=False)  # any stored grid trains (see ClipDataset's grid)
    dataset = ClipDataset(store, source_root=ts.source_root, require=req, out_size=ts.model.img_size,
                          scale=ts.crop_scale, flip_p=ts.flip_p, seed=ts.seed, clips=ts.clip_sampling,
                          grid=grid, holdout=ts.holdout, grid_layout=ts.grid_layout)
    if ddp.main:
        print(start_summary(dataset), flush=True)
    per_rank = per_process_batch(ts.batch_size, ddp.world)
    check_batch_fits(len(dataset), len(dataset.indices), ts.batch_size, ddp.world, ts.clip_sampling)
    loader = make_loader(dataset, batch_size=per_rank, num_workers=ts.num_workers, shuffle=True,
                         seed=ts.seed, drop_last=ts.drop_last, distributed=ddp.enabled,
                         pin_memory=device.type == "cuda", timeout=LOADER_TIMEOUT_S)
    steps_per_epoch = len(loader)
    total = ts.max_steps or ts.epochs * steps_per_epoch

    # -- model --------------------------------------------------------------------------------
    student = MoSiCModel(backbone, m.num_prototypes, m.head_hidden, m.head_dim, m.train_blocks,
                         prototype_grad=m.prototype_grad).to(device)
    student.normalize_prototypes()
    teacher = make_teacher(student)
    trainable = [p for p in student.parameters() if p.requires_grad]
    ema = TeacherEMA(student, teacher, ts.ema)
    model = student
    if ddp.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None)
    optim = torch.optim.AdamW(param_groups(student, ts.optim), betas=ts.optim.betas)
    base_lrs = [g["lr"] for g in optim.param_groups]
    precision = resolve_precision(ts.precision, device, who="mosic-train")
    amp = autocast(device, precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    group = dist.group.WORLD if ddp.enabled else None

    step = 0
    if resume:
        ck = torch.load(latest, map_location="cpu", weights_only=False)
        student.load_state_dict(ck["student"])
        teacher.load_state_dict(ck["teacher"])
        ema.load_state_dict(ck["ema"])
        optim.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        step = ck["step"]
        set_rng_state(ck["rng"][ddp.rank] if isinstance(ck["rng"], list) else ck["rng"])
        if ddp.main:
            print(f"resumed from {latest} at step {step}")

    if ddp.main and not resume:  # the starting point, for before/after comparisons
        export_backbone(student, out / "backbone_init.pth")
    if ddp.main:
        (out / "config.json").write_text(json.dumps(
            {"pipeline": cfg.model_dump(mode="json"), "train": ts.model_dump(mode="json"), "store": str(store),
             "crop_grid": grid, "normalisation": {"mean": mean, "std": std},
             "world_size": ddp.world, "precision": precision, "device": str(device), "backend": ddp.backend},
            indent=2))
    validator = None
    if ts.validate_.every:  # opened on every rank, so that a missing set fails before any training
        from mosic.train.validate import Validator, validate_and_log

        validator = Validator(ts.validate_, cfg, out, m.img_size, device, ddp.main)
        val_net = teacher if ts.validate_.network == "teacher" else student
    logf = open(out / "log.jsonl", "a") if ddp.main else None
    tb = None
    if ts.tensorboard and ddp.main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(out / "tb")
        except ImportError:
            log.warning("tensorboard is not installed; logging to log.jsonl only")

    def save(step_now: int) -> None:
        rng = rng_state()
        if ddp.enabled:
            gathered = [None] * ddp.world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        if ddp.main:
            ck = {"student": student.state_dict(), "teacher": teacher.state_dict(), "ema": ema.state_dict(),
                  "optimizer": optim.state_dict(), "scaler": scaler.state_dict(), "step": step_now,
                  "rng": rng, "train": ts.model_dump(mode="json"), "store": str(store)}
            _atomic_save(ck, ckpt_dir / f"step_{step_now:07d}.pt")
            _atomic_save(ck, latest)

    bar = None
    if progress and ddp.main:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", desc="train", dynamic_ncols=True)

    if validator is not None and ddp.main and step == 0:  # the curve starts at the initial backbone
        validate_and_log(validator, val_net, 0, 0, logf, tb)
    student.train()
    last = {}
    t_log = time.perf_counter()
    clips_since = 0
    data_wait = 0.0
    fallbacks = 0  # clips read from their source frames because their frame-cache file was damaged
    while step < total:
        epoch, skip = divmod(step, steps_per_epoch)
        loader.set_epoch(epoch, skip_batches=skip)  # resumed mid-epoch: the rest of the same batches
        t_wait = time.perf_counter()
        for batch in loader:
            data_wait += time.perf_counter() - t_wait
            fallbacks += int(batch["cache_fallback"].sum())
            batch = device_batch(batch, device, mean, std)
            f = lr_factor(step, total, ts.optim.warmup_steps, ts.optim.min_lr_ratio)
            for g_, lr0 in zip(optim.param_groups, base_lrs):
                g_["lr"] = lr0 * f
            student.normalize_prototypes()
            optim.zero_grad(set_to_none=True)

            def backward(part: torch.Tensor) -> None:
                with torch.autocast(device.type, enabled=False):
                    scaler.scale(part).backward()

            with amp:  # DDP averages the gradients once, after the last micro-batch
                loss, mon = mosic_step(model, teacher, batch, ts, step, ddp.rank, group, backward=backward,
                                       no_sync=model.no_sync if ddp.enabled else None)
            if not torch.isfinite(loss):
                if bar is not None:
                    bar.close()
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at step {step} (clips {batch['index'].tolist()}); stopped "
                    f"before the optimiser step. The last good checkpoint is {latest if latest.exists() else 'none'}. "
                    "Try a lower learning rate, fp32 (--precision fp32) or a larger Sinkhorn eps")
            if ts.optim.clip_grad > 0:
                scaler.unscale_(optim)
                torch.nn.utils.clip_grad_norm_(trainable, ts.optim.clip_grad)
            scaler.step(optim)
            scaler.update()
            ema.update()  # the teacher follows: EMA of the student, prototypes renormalised
            step += 1
            clips_since += batch["frames"].shape[0] * ddp.world
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % ts.log_every == 0 or step == total:
                now = time.perf_counter()
                last = {"step": step, "epoch": epoch, "loss": float(loss.item()),
                        "lr_backbone": optim.param_groups[0]["lr"], "lr_head": optim.param_groups[-1]["lr"],
                        **mon, "clips_per_s": clips_since / (now - t_log), "data_wait_s": data_wait,
                        "cache_fallbacks": fallbacks}
                if logf:
                    logf.write(json.dumps(last) + "\n")
                    logf.flush()
                if tb:
                    for k, v in last.items():
                        if isinstance(v, float):
                            tb.add_scalar(k, v, step)
                t_log, clips_since, data_wait = now, 0, 0.0
            if validator is not None and ddp.main and validator.due(step, total):
                validate_and_log(validator, val_net, step, epoch, logf, tb)  # rank 0; the others wait
            if step % ts.checkpoint_every == 0 or step == total:
                save(step)
            if step >= total:
                break
            t_wait = time.perf_counter()
    if bar is not None:
        bar.close()
    result = {"steps": step, "store": str(store), "out": str(out), **last}
    if ddp.main:
        exported = export_backbone(teacher if ts.export == "teacher" else student, out / "backbone.pth")
        result["backbone"] = str(exported)
        (out / "result.json").write_text(json.dumps(result, indent=2))
    if logf:
        logf.close()
    if tb:
        tb.close()
    return result
