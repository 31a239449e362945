"""The MoSiC training loop, top to bottom.

:func:`train` sets a run up (:func:`setup`: the backbone, the data, student and teacher, the
optimiser, a checkpoint to resume from), then steps through the epochs: :func:`train_step` is one
optimiser step on a global batch (the MoSiC step of :mod:`mosic.train.step`, the guard against a
non-finite loss, AdamW, the teacher's EMA); on its steps the loop writes a log row, validates and
saves a checkpoint; at the end it exports the backbone. The run's state is a :class:`Run` passed
to every helper; the run folder's lock, the log file, the TensorBoard writer and the progress bar are
released on every way out, an exception included.

Stopping: Ctrl-C and SIGTERM (what Slurm sends before it kills or preempts a job) only raise a flag
(:func:`mosic.stopping.stop_signals`); the loop reads it after a step. Under DDP the ranks exchange it
only on logging and checkpoint steps, in the all-reduce those steps make anyway, so they all stop at
the same step. :func:`stop_and_checkpoint` is the one way out on a signal: it saves the state at that
step and raises :class:`TrainingStopped` (exit status 130 for Ctrl-C, 143 for SIGTERM), whose message
says where the run stopped and to go on with ``--resume``. A second signal stops at once (what was
done since the last checkpoint is then lost, and the message says so).

A step reads one value back from the device: the loss, which the guard must see before the
optimiser step. The monitors of a log row (cluster usage, visible fraction, points per clip) are
computed only on the steps that write one; under DDP the row's loss and monitors are the global
batch's, from one all-reduce (:func:`exchange`).

Run it with ``mosic-train`` (single process) or ``torchrun --nproc_per_node K -m mosic.train`` (DDP).
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from filelock import FileLock, Timeout

from mosic import MosicError
from mosic.backbones import create_backbone, crop_grid_size, mean_std, patch_size, write_hub_folder
from mosic.config import PipelineConfig, TrainSettings
from mosic.devices import autocast, resolve_precision
from mosic.files import check_output_place
from mosic.stopping import StopFlag, StopRequested, stop_signals
from mosic.store_schema.location import Location
from mosic.train.augment import normalize_frames
from mosic.train.checkpoint import (all_rng_states, export_backbone, latest_checkpoint, set_rng_state,
                                   write_checkpoint)
from mosic.train.dataset import ClipDataset
from mosic.train.distributed import Dist, per_process_batch, setup_distributed
from mosic.train.loader import ClipLoader, make_loader
from mosic.train.model import MoSiCModel, TeacherEMA, make_teacher
from mosic.train.step import monitors_from_sums, mosic_step
from mosic.train.stores import check_batch_fits, resolve_store, store_requirements
from mosic.train.summary import start_summary
from mosic.train.run_log import RunLog, cut_log, plot_loss
from mosic.train.validate import Validator, validate_and_log

log = logging.getLogger("mosic.train")

#: seconds a DataLoader worker's batch may take before training stops with an error (a hung read)
LOADER_TIMEOUT_S = 600
#: the batch entries the step computes with on the device; the others (the clip index, which seeds
#: the token masks on the host, and the loader's bookkeeping) stay where the loader put them
DEVICE_KEYS = ("frames", "tracks", "visibility")


#: settings a resumed run may change without --changed-settings-ok: they change no number of the steps taken
#: (the run's length may grow: the learning-rate schedule then runs to the new last step)
RESUMABLE_CHANGES = ("store", "source_root", "out", "num_workers", "device", "checkpoint_every", "keep_checkpoints",
                     "log_every", "tensorboard", "wandb", "validate_", "teacher_chunk", "max_steps", "epochs")
#: the lock file that keeps a second run out of a run folder
LOCK_FILE = "train.lock"


class NonFiniteLossError(MosicError):
    pass


class TrainingStopped(Exception):
    """A stop signal ended the run (:func:`stop_and_checkpoint`): ``str(e)`` says where and how to go on;
    ``exit_code`` is the shell's 128 + the signal's number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, message: str, exit_code: int, together: bool = True):
        super().__init__(message)
        self.exit_code = exit_code
        self.together = together  # every rank stopped at the same step (not by a second signal)


@dataclass
class Run:
    """Everything one training run holds. :func:`setup` builds it; the loop advances ``step``."""

    cfg: PipelineConfig
    ts: TrainSettings
    out: Path
    ddp: Dist
    device: torch.device
    store: Location
    loader: ClipLoader
    steps_per_epoch: int
    total: int
    student: MoSiCModel
    teacher: MoSiCModel
    model: torch.nn.Module  # the student, in its DDP wrapper under DDP
    ema: TeacherEMA
    optim: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]  # the student's parameters that train (clipped together)
    base_lrs: list[float]
    scaler: torch.amp.GradScaler
    amp: AbstractContextManager
    group: Any  # the process group of Sinkhorn's marginals and the loss normaliser, or None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    validator: Validator | None
    step: int = 0
    saved_step: int | None = None  # the step of the last checkpoint written (or resumed from)
    cache_fallbacks: int = 0  # clips read from their source frames because their frame-cache file was damaged

    @property
    def latest(self) -> Path:
        return latest_checkpoint(self.out)


@dataclass
class LogWindow:
    """What the next log row sums up since the last one."""

    t_start: float = field(default_factory=time.perf_counter)
    clips: int = 0
    data_wait: float = 0.0


# ---------------------------------------------------------------------------------------------
# the loop


def train(cfg: PipelineConfig, ts: TrainSettings, out: Path, resume: bool = False,
          progress: bool = True, changed_settings_ok: bool = False) -> dict:
    """Train; returns the result (also ``result.json``). A stop signal raises :class:`TrainingStopped`
    after the checkpoint at the step reached (see :func:`stop_and_checkpoint`)."""
    ddp, device = setup_distributed(ts.device)
    together = False  # every rank got here at the same step: leave together
    try:
        with stop_signals(at_once=False) as stop:
            res = _train(cfg, ts, Path(out), resume, progress, ddp, device, stop, changed_settings_ok)
        together = True
        return res
    except TrainingStopped as e:
        together = e.together
        raise
    finally:
        if ddp.enabled:
            if together:  # every rank done (rank 0 exports or checkpoints last) before any tears the group down
                dist.barrier()
            dist.destroy_process_group()


def _train(cfg: PipelineConfig, ts: TrainSettings, out: Path, resume: bool, progress: bool, ddp: Dist,
           device: torch.device, stop: StopFlag, changed_settings_ok: bool = False) -> dict:
    main = ddp.main
    last: dict = {}
    with ExitStack() as closing:
        if main:
            check_output_place(out, "--out")
            closing.callback(run_folder_lock(out).release)
        run = setup(cfg, ts, out, resume, ddp, device, changed_settings_ok)
        runlog = RunLog(closing, out, cfg, main)
        bar = None
        if progress and main:
            bar = closing.enter_context(tqdm(total=run.total, initial=run.step, unit="step", desc="train",
                                             dynamic_ncols=True))
        val_net = run.teacher if ts.validate_.network == "teacher" else run.student
        if run.validator is not None and main and run.step == 0:  # the curve starts at the initial backbone
            validate_and_log(run.validator, val_net, 0, 0, runlog)
        run.student.train()
        window = LogWindow()
        try:
            while run.step < run.total:
                epoch, skip = divmod(run.step, run.steps_per_epoch)
                run.loader.set_epoch(epoch, skip_batches=skip)  # resumed mid-epoch: the rest of the same batches
                t_wait = time.perf_counter()
                for batch in run.loader:
                    window.data_wait += time.perf_counter() - t_wait
                    run.cache_fallbacks += int(batch["cache_fallback"].sum())  # the loader's host tensor
                    logs = is_log_step(run.step + 1, run.total, ts.log_every)
                    loss, sums = train_step(run, batch, monitors=logs)
                    run.step += 1
                    window.clips += batch["frames"].shape[0] * ddp.world
                    checkpoint = run.step % ts.checkpoint_every == 0 or run.step == run.total
                    stop_signal = 0
                    if logs or checkpoint or not ddp.enabled:  # the steps where the ranks can agree to stop
                        loss, monitors, stop_signal = exchange(run, loss, sums, stop)
                    if bar is not None:
                        bar.update(1)
                    if logs:
                        now = time.perf_counter()
                        last = log_row(run, epoch, loss, monitors, window, now)
                        runlog.write(last)
                        window = LogWindow(t_start=now)
                        if bar is not None:  # shown at the bar's next refresh (a line every 30 s in a pipe)
                            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    if stop_signal:
                        stop_and_checkpoint(run, stop_signal)
                    if run.validator is not None and main and run.validator.due(run.step, run.total):
                        validate_and_log(run.validator, val_net, run.step, epoch, runlog)  # rank 0; the others wait
                    if checkpoint:
                        save_checkpoint(run)
                    if run.step >= run.total:
                        break
                    t_wait = time.perf_counter()
        except StopRequested as e:  # a second signal: stopped at once, wherever the run was
            raise TrainingStopped(stopped_message(run, e.signame, saved=False), stop.exit_code, together=False) from None
    return finish(run, last)


def run_folder_lock(out: Path) -> FileLock:
    """The run folder's lock, held while a run writes there (rank 0): a second ``mosic-train`` into the same
    folder is refused in one line. The operating system drops the lock when its process ends, a killed one
    included."""
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise MosicError(f"another mosic-train is running in {out} (it holds {out / LOCK_FILE}): wait for it to "
                         "end, or choose another --out") from None
    return lock


def is_log_step(step: int, total: int, log_every: int) -> bool:
    """Whether the step that ends at ``step`` (1-based) writes a log row: every ``log_every``-th and the last."""
    return step % log_every == 0 or step == total


# ---------------------------------------------------------------------------------------------
# one optimiser step


def train_step(run: Run, batch: dict, monitors: bool) -> tuple[float, torch.Tensor | None]:
    """One optimiser step on a loader's batch (this process's share of the global batch): the
    learning rates of the schedule, the MoSiC step's forward and backward, the guard against a
    non-finite loss, clipping, AdamW, the teacher's EMA. Returns this process's loss and, with
    ``monitors``, the sums behind a log row's monitors (on the device; :func:`exchange` reads them), else None.

    The loss is the one value a step reads back from the device: the guard must see it before the
    optimiser step, so that non-finite weights are never saved or used."""
    ts = run.ts
    batch = device_batch(batch, run.device, run.mean, run.std)
    f = lr_factor(run.step, run.total, ts.optim.warmup_steps, ts.optim.min_lr_ratio)
    for g, lr0 in zip(run.optim.param_groups, run.base_lrs):
        g["lr"] = lr0 * f
    run.student.normalize_prototypes()
    run.optim.zero_grad(set_to_none=True)
    with run.amp:  # DDP averages the gradients once, after the last micro-batch
        loss, mon = mosic_step(run.model, run.teacher, batch, ts, run.step, run.ddp.rank, run.group,
                               backward=partial(scaled_backward, run.scaler, run.device.type),
                               no_sync=run.model.no_sync if run.ddp.enabled else None, monitors=monitors)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        last_good = run.latest if run.latest.exists() else "none"
        raise NonFiniteLossError(
            f"loss is {loss_value} at step {run.step} (clips {batch['index'].tolist()}); stopped "
            f"before the optimiser step. The last good checkpoint is {last_good}. "
            "Try a lower learning rate, fp32 (--precision fp32) or a larger Sinkhorn eps")
    if ts.optim.clip_grad > 0:
        run.scaler.unscale_(run.optim)
        torch.nn.utils.clip_grad_norm_(run.trainable, ts.optim.clip_grad)
    run.scaler.step(run.optim)
    run.scaler.update()
    run.ema.update()  # the teacher follows: EMA of the student, prototypes renormalised
    return loss_value, mon


def scaled_backward(scaler: torch.amp.GradScaler, device_type: str, loss: torch.Tensor) -> None:
    """Back-propagate one micro-batch's loss, scaled for fp16 (a no-op scale otherwise), autocast off."""
    with torch.autocast(device_type, enabled=False):
        scaler.scale(loss).backward()


def device_batch(batch: dict, device: torch.device, mean, std) -> dict:
    """A loader's batch with its :data:`DEVICE_KEYS` on ``device`` (asynchronously from pinned
    memory), its uint8 frames made float32 and normalised there with ``mean``/``std`` (RGB, on 0..1
    values). The other entries stay on the host, where reading them stalls nothing."""
    out = dict(batch)
    for k in DEVICE_KEYS:
        out[k] = batch[k].to(device, non_blocking=True)
    out["frames"] = normalize_frames(out["frames"], mean, std)
    return out


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup then cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def exchange(run: Run, loss: float, sums: torch.Tensor | None, stop: StopFlag) -> tuple[float, dict, int]:
    """What the ranks agree on at a logging or checkpoint step, in one all-reduce under DDP (none in one
    process): the global batch's loss (the mean of the ranks' losses, each normalised by the global count)
    and monitors (from ``sums``; an empty dict without them), and the stop signal any rank received (0:
    none; SIGTERM wins over SIGINT). Every rank calls it at the same steps."""
    asked = stop.signum or 0
    if not run.ddp.enabled:
        return loss, monitors_from_sums(sums) if sums is not None else {}, asked
    head = torch.tensor([loss, float(asked == signal.SIGINT), float(asked == signal.SIGTERM)], device=run.device)
    vec = head if sums is None else torch.cat([head, sums.to(head)])
    dist.all_reduce(vec, group=run.group)
    v = vec.cpu()
    agreed = signal.SIGTERM if v[2] > 0 else signal.SIGINT if v[1] > 0 else 0
    return float(v[0]) / run.ddp.world, monitors_from_sums(v[3:]) if sums is not None else {}, int(agreed)


# ---------------------------------------------------------------------------------------------
# stopping on a signal


def stop_and_checkpoint(run: Run, signum: int) -> None:
    """The one way a run stops on a signal: every rank calls it at the same step (:func:`exchange` agreed on
    it); the state at that step is saved as a checkpoint (unless this step's is already written), and
    :class:`TrainingStopped` is raised: its message says where the run stopped, which checkpoint holds it
    and to go on with ``--resume``; its ``exit_code`` is 128 + ``signum`` (130 Ctrl-C, 143 SIGTERM). Where
    the checkpoint cannot be written the message names the last one and the steps lost."""
    name = signal.Signals(signum).name
    saved = run.saved_step == run.step
    error = None
    if not saved:
        try:
            save_checkpoint(run)
            saved = True
        except OSError as e:
            error = f"{e.strerror or type(e).__name__}: {e.filename or e}"
    raise TrainingStopped(stopped_message(run, name, saved, error), 128 + signum)


def stopped_message(run: Run, signame: str | None, saved: bool, error: str | None = None) -> str:
    """What a stopped run says: where it stopped, the checkpoint that holds its state, what is lost, how to go on."""
    by = f"stopped by {signame or 'a signal'} after step {run.step} of {run.total}"
    if not run.ddp.main:
        return f"rank {run.ddp.rank}: {by}"
    go_on = "go on with the same command and --resume"
    if saved:
        return f"{by}: {run.latest} holds step {run.step}, nothing is lost; {go_on}"
    why = f" (the checkpoint could not be written: {error})" if error else " (a second signal: stopped at once)"
    if run.saved_step is None:
        return f"{by}{why}: no checkpoint was written yet, so steps 1..{run.step} are lost; run the command again"
    lost = f"steps {run.saved_step + 1}..{run.step}" if run.step > run.saved_step else "nothing"
    return f"{by}{why}: the last checkpoint is {run.latest} at step {run.saved_step}; {lost} lost; {go_on}"


# ---------------------------------------------------------------------------------------------
# what the loop writes


def log_row(run: Run, epoch: int, loss: float, monitors: dict, window: LogWindow, now: float) -> dict:
    """The ``log.jsonl`` row of the step just taken, at time ``now`` (``time.perf_counter``)."""
    return {"step": run.step, "epoch": epoch, "loss": loss,
            "lr_backbone": run.optim.param_groups[0]["lr"], "lr_head": run.optim.param_groups[-1]["lr"],
            **monitors, "clips_per_s": window.clips / (now - window.t_start),
            "data_wait_s": window.data_wait, "cache_fallbacks": run.cache_fallbacks}


def save_checkpoint(run: Run) -> None:
    """The run's state at its current step; every rank's random states (a collective), rank 0 writes it,
    keeps the last ``train.keep_checkpoints`` step checkpoints and redraws ``loss.png``."""
    rng = all_rng_states(run.ddp.world if run.ddp.enabled else None)
    if run.ddp.main:
        ck = {"student": run.student.state_dict(), "teacher": run.teacher.state_dict(), "ema": run.ema.state_dict(),
              "optimizer": run.optim.state_dict(), "scaler": run.scaler.state_dict(), "step": run.step,
              "rng": rng, "train": run.ts.model_dump(mode="json"), "store": str(run.store)}
        write_checkpoint(ck, run.out, run.step, keep=run.ts.keep_checkpoints)
        plot_loss(run.out)
    run.saved_step = run.step


def finish(run: Run, last: dict) -> dict:
    """The result of the run; rank 0 exports the backbone and writes ``result.json``."""
    result = {"steps": run.step, "store": str(run.store), "out": str(run.out), **last}
    if run.ddp.main:
        net = run.teacher if run.ts.export == "teacher" else run.student
        result["backbone"] = str(export_backbone(net, run.out / "backbone.pth"))
        m = run.ts.model
        result["hub"] = str(write_hub_folder(net.backbone, run.out / "hub", {
            "base_model": m.name + (f" with weights {Path(m.weights).name}" if m.weights else
                                    "" if m.pretrained else " (random initialisation)"),
            "recipe": f"mosic pipeline {run.cfg.name!r}", "store": Path(str(run.store)).name,
            "steps": run.step, "exported network": run.ts.export}))
        (run.out / "result.json").write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------------------
# setting a run up


def setup(cfg: PipelineConfig, ts: TrainSettings, out: Path, resume: bool, ddp: Dist,
          device: torch.device, changed_settings_ok: bool = False) -> Run:
    """The run folder checked, the seeds set, the backbone, the data, student, teacher, EMA and
    optimiser made (in that order: the random draws are the same in every run), a checkpoint
    loaded when resuming (its settings checked against ``ts``, the log cut back to its step),
    ``backbone_init.pth`` and ``config.json`` written, the validator opened."""
    check_run_folder(out, resume, ddp)
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
    dataset = ClipDataset(store, source_root=ts.source_root, require=req, out_size=m.img_size,
                          scale=ts.crop_scale, flip_p=ts.flip_p, seed=ts.seed, clips=ts.clip_sampling,
                          grid=grid, holdout=ts.holdout, grid_layout=ts.grid_layout)
    if ddp.main:
        print(start_summary(dataset), flush=True)
    per_rank = per_process_batch(ts.batch_size, ddp.world)
    check_batch_fits(len(dataset), len(dataset.indices), ts.batch_size, ddp.world, ts.clip_sampling)
    loader = make_loader(dataset, batch_size=per_rank, num_workers=ts.num_workers, shuffle=True,
                         seed=ts.seed, drop_last=ts.drop_last, distributed=ddp.enabled,
                         pin_memory=device.type == "cuda", timeout=LOADER_TIMEOUT_S)

    # -- model and optimiser ------------------------------------------------------------------
    student = MoSiCModel(backbone, m.num_prototypes, m.head_hidden, m.head_dim, m.train_blocks,
                         prototype_grad=m.prototype_grad, train_blocks_rule=m.train_blocks_rule).to(device)
    student.normalize_prototypes()
    teacher = make_teacher(student)
    ema = TeacherEMA(student, teacher, ts.ema)
    model = student
    if ddp.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None)
    optim = torch.optim.AdamW(param_groups(student, ts.optim), betas=ts.optim.betas)
    precision = resolve_precision(ts.precision, device, who="mosic-train")
    run = Run(cfg=cfg, ts=ts, out=out, ddp=ddp, device=device, store=store, loader=loader,
              steps_per_epoch=len(loader), total=ts.max_steps or ts.epochs * len(loader),
              student=student, teacher=teacher, model=model, ema=ema, optim=optim,
              trainable=[p for p in student.parameters() if p.requires_grad],
              base_lrs=[g["lr"] for g in optim.param_groups],
              scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"), amp=autocast(device, precision),
              group=dist.group.WORLD if ddp.enabled else None, mean=mean, std=std, validator=None)
    if resume:
        resume_from(run, run.latest, changed_settings_ok)
    elif ddp.main:  # the starting point, for before/after comparisons
        export_backbone(student, out / "backbone_init.pth")
    if ddp.main:
        (out / "config.json").write_text(json.dumps(
            {"pipeline": cfg.model_dump(mode="json"), "train": ts.model_dump(mode="json"), "store": str(store),
             "crop_grid": grid, "normalisation": {"mean": mean, "std": std},
             "world_size": ddp.world, "precision": precision, "device": str(device), "backend": ddp.backend},
            indent=2))
    if ts.validate_.every:  # opened on every rank, so that a missing set fails before any training
        run.validator = Validator(ts.validate_, cfg, out, m.img_size, device, ddp.main)
    return run


def check_run_folder(out: Path, resume: bool, ddp: Dist) -> None:
    """A new run needs a folder without a run in it (rank 0 makes ``checkpoints/``); a resumed run
    needs its last checkpoint."""
    latest = latest_checkpoint(out)
    if ddp.main:
        latest.parent.mkdir(parents=True, exist_ok=True)
        if not resume and latest.exists():
            raise MosicError(f"{out} already holds a run (checkpoints/latest.pt): pass --resume to continue "
                             "it, or choose another --out")
    if resume and not latest.exists():
        raise MosicError(f"--resume: no checkpoint at {latest}")


def resume_from(run: Run, path: Path, changed_settings_ok: bool = False) -> None:
    """The run's models, EMA, optimiser, scaler, step and this rank's random states from checkpoint ``path``,
    whose training settings must be the run's (but :data:`RESUMABLE_CHANGES`) unless ``changed_settings_ok``;
    rank 0 cuts ``log.jsonl`` back to the checkpoint's step (the steps after it are taken again)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    changed = settings_changes(ck.get("train", {}), run.ts.model_dump(mode="json"))
    if changed and not changed_settings_ok:
        raise MosicError(f"--resume: the checkpoint {path} was made with other training settings ("
                         + "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in changed[:6])
                         + (f"; {len(changed) - 6} more" if len(changed) > 6 else "")
                         + "): give the run's settings again, or pass --changed-settings-ok to go on with the new ones")
    if changed:
        log.warning("resuming with changed settings: %s", ", ".join(k for k, _, _ in changed))
    run.student.load_state_dict(ck["student"])
    run.teacher.load_state_dict(ck["teacher"])
    run.ema.load_state_dict(ck["ema"])
    run.optim.load_state_dict(ck["optimizer"])
    run.scaler.load_state_dict(ck["scaler"])
    run.step = run.saved_step = ck["step"]
    set_rng_state(ck["rng"][run.ddp.rank] if isinstance(ck["rng"], list) else ck["rng"])
    if run.ddp.main:
        dropped = cut_log(run.out, run.step)
        print(f"resumed from {path} at step {run.step}"
              + (f" ({dropped} log row(s) of the steps after it dropped from log.jsonl)" if dropped else ""))


def settings_changes(saved: dict, now: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, value now) of every training setting that differs, but
    :data:`RESUMABLE_CHANGES`."""
    out = []
    for k in sorted(set(saved) | set(now)):
        key = prefix + k
        if key in RESUMABLE_CHANGES:
            continue
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_changes(a, b, key + ".")
        elif a != b:
            out.append((key, a, b))
    return out


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
