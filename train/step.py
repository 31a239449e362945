"""One MoSiC step's forward and backward, on this process's share of the global batch.

A global batch of B clips (``batch_size``, split evenly over the processes) of T frames with N
tracked points each (the G x G trajectories nearest to each crop's grid):

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
   frame, so the student learns to predict where the trajectory will be clustered all along it.

The optimiser step and the teacher's EMA (5.) follow in the training loop (:mod:`mosic.train.train`).

Nothing here reads a value back from the device (no ``.item()``, no data-dependent shape); the
monitors' sums are computed only when asked (the loop asks on logging steps, all-reduces them with the
loss and reads them back then).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from mosic.config import TrainSettings
from mosic.train.model import MoSiCModel, kept_tokens, random_keep_mask
from mosic.train.ops import (cluster_usage, loss_normaliser, loss_weights, propagation_loss, sample_at_tracks,
                            sinkhorn, symmetric_loss, usage_entropy)


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
    """[B, L] tokens kept for each clip of the batch, drawn from (seed, step, clip index) on the
    host and copied to ``device``; None when no token is dropped. ``index`` (the store's clip
    indices) is read, so it should be the loader's host tensor (``device_batch`` leaves it there)."""
    if kept_tokens(num_tokens, ratio) == num_tokens:
        return None
    masks = [random_keep_mask(1, num_tokens, ratio, torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, int(i)]).generate_state(1)[0])), device) for i in index.tolist()]
    return torch.cat(masks)


@torch.no_grad()
def teacher_assignments(teacher: MoSiCModel, frames: torch.Tensor, tracks: torch.Tensor, vis: torch.Tensor,
                        L, group=None, chunk: int | None = None) -> torch.Tensor:
    """Steps 1-2: the teacher's Sinkhorn assignments Q [B, T, N, K] of every tracked point of the
    batch. The backbone runs ``chunk`` clips at a time (memory); Sinkhorn always sees the whole
    batch (and, under DDP, every rank's batch).

    With ``L.marginals == "visible"``, invisible points (occluded, or outside the crop) take no
    part in the marginals and get no label: Sinkhorn weighs them 0 and leaves their rows of Q zero,
    the same as leaving them out (tests/test_ops.py). They go through the head with the others, so
    that no step selects the visible points, a selection whose size the host would have to read.
    ``"all"`` is the official recipe: every tracked point in the marginals."""
    B, T, _, S, _ = frames.shape
    N = tracks.shape[2]
    chunk = chunk or B
    feats = torch.cat([
        sample_at_tracks(teacher.patch_features(frames[a:a + chunk].flatten(0, 1)).unflatten(0, (-1, T)),
                         tracks[a:a + chunk], (S, S), mode=L.teacher_sampling)
        for a in range(0, B, chunk)]).flatten(0, 2)  # [B*T*N, D]
    weights = vis.flatten() if L.marginals == "visible" else None
    q = sinkhorn(teacher.scores(teacher.head(feats)), eps=L.sinkhorn_eps, iters=L.sinkhorn_iters, weights=weights,
                 group=group)
    return q.view(B, T, N, -1)


def mosic_step(student, teacher: MoSiCModel, batch: dict, ts: TrainSettings, step: int, rank: int = 0,
               group=None, backward=None, no_sync=None, monitors: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One MoSiC step on this process's share of the global batch; returns the loss and, with
    ``monitors``, the sums behind a log row's monitors (:func:`monitor_sums`, on the device; the loop
    all-reduces them with the loss on logging steps), else None.

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
    num_tokens = (S // p) ** 2
    keep = clip_keep_masks(batch["index"], num_tokens, ts.mask_ratio, ts.seed, step, frames.device)
    n_keep = kept_tokens(num_tokens, ts.mask_ratio)
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
            ss = student(frames[sl, 0], tracks[sl, 0], kp, L.student_sampling, n_keep=n_keep)  # [b, N, K]
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
    if not monitors:
        return total, None
    return total, monitor_sums(q, torch.cat(ss_all), vis, valid)


def monitor_sums(q: torch.Tensor, ss: torch.Tensor, vis: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The sums behind a log row's monitors on this process's clips, one float vector on the device (nothing
    read back): the teacher's and the student's hard cluster usage (K each), then (sum, count) of the visible
    points, of the points valid on the first frame and of the trajectories per clip inside the first crop.
    Sums of several processes (one all-reduce) are the global batch's; :func:`monitors_from_sums` reads them."""
    per_clip = vis[:, 0].sum(1).float()

    def sum_count(x: torch.Tensor) -> list[torch.Tensor]:
        return [x.float().sum().to(q.device), torch.full((), float(x.numel()), device=q.device)]

    return torch.cat([cluster_usage(q, hard=True, mask=vis), cluster_usage(ss, hard=True, mask=valid).to(q.device),
                      torch.stack([*sum_count(vis), *sum_count(valid), *sum_count(per_clip)])])


def monitors_from_sums(sums: torch.Tensor) -> dict:
    """A log row's monitors, as Python floats, from :func:`monitor_sums` (this process's or all-reduced):
    cluster usage (1 = even, 0 = collapse) of the teacher's labels and the student's argmax, the visible
    fraction, the fraction valid on the first frame, and the trajectories per clip inside the crop on the
    first frame (the points the loss reads before masking)."""
    s = sums.detach().double().cpu()
    K = (len(s) - 6) // 2
    a = s[2 * K:]
    return {
        "usage_teacher": usage_entropy(s[:K]),
        "usage_student": usage_entropy(s[K:2 * K]),
        "visible": float(a[0] / a[1].clamp_min(1)),
        "valid_first": float(a[2] / a[3].clamp_min(1)),
        "points_per_clip": float(a[4] / a[5].clamp_min(1)),
    }
