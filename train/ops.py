"""The maths of MoSiC as small pure functions on tensors.

    sample_at_tracks       patch features at continuous track positions (x, y pixels)
    sinkhorn               log-domain Sinkhorn-Knopp with (optionally DDP-global) marginals
    loss_normaliser        the loss's denominator Z for a whole (global) batch
    propagation_loss       CE(student at the first frame, teacher label at frame t), visibility-weighted
    symmetric_loss         CE(student at frame t, teacher label at the first frame)  (optional term)
    cluster_usage_entropy  normalised entropy of the mean assignment (collapse monitor)
    pick_clip              which stored clip of a video an epoch trains on (numpy)
    crop_grid              the ideal G x G grid of a crop: its cell centres (numpy)
    select_grid_points     the stored trajectories nearest to a crop's grid cells (numpy)
    min_store_grid         how dense a full-frame grid must be for every crop to hold a G x G grid

Shapes: B clips, T frames, N tracked points, D feature channels, K prototypes, M points in a
Sinkhorn problem. Coordinates are (x, y) pixels of the frame the features were computed on, x
along the width, pixel (col, row) covering [col, col + 1) x [row, row + 1) so its centre is at
(col + 0.5, row + 0.5).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "sample_at_tracks",
    "sinkhorn",
    "loss_normaliser",
    "propagation_loss",
    "symmetric_loss",
    "cluster_usage_entropy",
    "cluster_usage",
    "usage_entropy",
    "pick_clip",
    "crop_grid",
    "select_grid_points",
    "min_store_grid",
]


# ---------------------------------------------------------------------------------------------
# sampling features at track positions


def sample_at_tracks(
    feats: Tensor,
    tracks: Tensor,
    image_size: tuple[int, int],
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> Tensor:
    """Sample patch features at continuous pixel positions, directly on the patch grid.

    feats [B, T, D, h, w] are the patch features of frames of image_size = (W, H) pixels, so a
    patch is p_x = W / w by p_y = H / h pixels (p_x = p_y = 14 for DINOv2 at 224 px). Patch (i, j)
    (row i, column j) covers pixels [j p_x, (j+1) p_x) x [i p_y, (i+1) p_y) and its feature sits
    at its centre ((j + 1/2) p_x, (i + 1/2) p_y). A point (x, y) therefore has continuous grid
    coordinates

        u = x / p_x - 1/2        (column),        v = y / p_y - 1/2        (row),

    i.e. u = j exactly at patch j's centre. "bilinear" interpolates the four surrounding patch
    centres at (u, v); "nearest" returns the patch whose centre is nearest, which is the patch
    containing the point, (floor(x / p_x), floor(y / p_y)) (on a boundary x = j p_x the tie goes
    to round-half-to-even of u; pixel centres never tie when p is an integer).

    Points outside the grid of centres are clamped to it ("border" padding): a point within half
    a patch of the image edge gets the edge patch's feature (no blending with zeros), and a point
    outside the image gets the nearest border patch's feature; their loss is masked elsewhere.

    This is F.grid_sample(align_corners=False) with normalised coordinates gx = 2x/W - 1,
    gy = 2y/H - 1, since that convention maps gx to u = ((gx + 1) w - 1) / 2 = x / p_x - 1/2.
    It equals the official code's "upsample every feature map to H x W, then index pixel
    (floor(x), floor(y))" at pixel centres, for the same interpolation mode, at a fraction of the
    memory (no B*T*D*H*W tensor).

    tracks [B, T, N, 2] as (x, y). Any number of leading dims is accepted as long as feats and
    tracks share them. Sampling runs in float32 (coordinates would lose half a pixel in bf16);
    gradients flow into feats. Returns [B, T, N, D] in feats.dtype.
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if feats.dim() < 3 or tracks.shape[-1] != 2:
        raise ValueError(f"expected feats [..., D, h, w] and tracks [..., N, 2], got {tuple(feats.shape)} and {tuple(tracks.shape)}")
    lead = feats.shape[:-3]
    if tracks.shape[:-2] != lead:
        raise ValueError(f"feats and tracks leading dims differ: {tuple(lead)} vs {tuple(tracks.shape[:-2])}")
    D, h, w = feats.shape[-3:]
    N = tracks.shape[-2]
    W, H = image_size

    x = feats.reshape(-1, D, h, w).float()  # [BT, D, h, w]
    # made on the host and copied without waiting: torch.tensor(..., device=cuda) would wait for the GPU's queue
    scale = torch.tensor([2.0 / W, 2.0 / H], dtype=torch.float32).to(tracks.device, non_blocking=True)
    grid = tracks.reshape(-1, 1, N, 2).float() * scale - 1.0  # [BT, 1, N, 2], (x, y) in [-1, 1]
    out = F.grid_sample(x, grid.to(x.device), mode=mode, padding_mode="border", align_corners=False)  # [BT, D, 1, N]
    out = out.squeeze(2).transpose(1, 2)  # [BT, N, D]
    return out.reshape(*lead, N, D).to(feats.dtype)


# ---------------------------------------------------------------------------------------------
# Sinkhorn-Knopp


def _resolve_group(group):
    """None -> single process; "world" -> the default group if torch.distributed is initialised,
    else single process; a ProcessGroup -> that group."""
    if group is None:
        return None
    if isinstance(group, str):
        if group != "world":
            raise ValueError(f"group must be None, 'world' or a ProcessGroup, got {group!r}")
        if dist.is_available() and dist.is_initialized():
            return dist.group.WORLD
        return None
    return group


def _all_reduce(x: Tensor, op, group) -> Tensor:
    if group is not None:
        dist.all_reduce(x, op=op, group=group)
    return x


def _logsumexp_rows(x: Tensor, group) -> Tensor:
    """log sum_m exp(x[m, k]) over the rows of every rank -> [K].

    Shifted by the global column maximum (all-reduce MAX), then the shifted sums are all-reduced
    (SUM): exact and overflow-free. A column of only -inf gives -inf (not NaN)."""
    m = x.max(dim=0).values if x.shape[0] > 0 else x.new_full(x.shape[1:], -math.inf)
    m = _all_reduce(m.contiguous(), dist.ReduceOp.MAX, group)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = _all_reduce(torch.exp(x - m).sum(dim=0), dist.ReduceOp.SUM, group)
    return torch.log(s) + m


@torch.no_grad()
def sinkhorn(
    scores: Tensor,
    eps: float = 0.06,
    iters: int = 3,
    weights: Tensor | None = None,
    group=None,
) -> Tensor:
    """Entropic optimal transport of M points onto K prototypes (SwAV-style Sinkhorn-Knopp).

    scores [M, K] are cosine similarities (cost C = -scores). The transport plan

        P = diag(e^f) exp(scores / eps) diag(e^g),     sum_m P[m, k] = 1/K,   sum_k P[m, k] = a_m,

    has uniform prototype marginals b_k = 1/K and point marginals a_m = 1/M_total (uniform) or
    a_m = w_m / sum(w) (weights [M] >= 0), where M_total and sum(w) are over all ranks. In the
    log domain, each of `iters` iterations makes the prototype marginal then the point marginal
    exact:

        g_k <- log(1/K) - logsumexp_m(scores[m, k] / eps + f_m)      (all ranks' rows)
        f_m <- log(a_m) - logsumexp_k(scores[m, k] / eps + g_k)

    starting from f = 0. That is exactly the standard alternating normalisation (normalise Q to
    total 1, then rows to 1/K and columns to 1/M per iteration, then scale points to sum 1); the
    initial global normalisation is a constant that the first prototype step absorbs. The
    returned assignment is P / a, i.e. each point's row normalised,

        Q[m, k] = softmax_k(scores[m, k] / eps + g_k),

    so with few iterations the prototype marginal is only approximately uniform, as in SwAV.
    iters = 0 gives softmax(scores / eps).

    Weights: a point with w_m = 0 (invisible, masked) takes no part: it adds nothing to the
    prototype sums and its row of Q is all zeros (so an argmax of it is meaningless: mask it, and
    a soft cross-entropy against it is 0). Every participating row sums to 1. If no point on any
    rank has weight, Q is all zeros.

    DDP: with `group` (a ProcessGroup, or "world" when torch.distributed is initialised) the
    prototype log-sums and the total point count / weight are all-reduced, so each rank's Q equals
    its rows' slice of one Sinkhorn on all ranks' scores concatenated. Every rank must call this
    with the same K, eps and iters (M may differ, also be 0).

    Runs in float32 whatever the input dtype (bf16/fp16 welcome), autocast off, no gradient;
    scores / eps may reach ~1e3 and beyond without overflow. Returns float32 [M, K].
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [M, K], got {tuple(scores.shape)}")
    if iters < 0 or eps <= 0:
        raise ValueError(f"need iters >= 0 and eps > 0, got iters={iters}, eps={eps}")
    group = _resolve_group(group)
    M, K = scores.shape
    with torch.autocast(device_type=scores.device.type, enabled=False):
        logits = scores.detach().float() / eps  # [M, K]

        if weights is None:
            total = _all_reduce(torch.full((), float(M), device=scores.device), dist.ReduceOp.SUM, group)
            log_a = (-torch.log(total)).expand(M)  # [M]
            take = None
        else:
            if weights.shape != (M,):
                raise ValueError(f"weights must be [M] = [{M}], got {tuple(weights.shape)}")
            wts = weights.detach().float().to(scores.device)  # >= 0 (not checked: no device sync)
            total = _all_reduce(wts.sum(), dist.ReduceOp.SUM, group)
            take = wts > 0
            log_a = torch.log(wts) - torch.log(total.clamp_min(torch.finfo(torch.float32).tiny))  # -inf where w = 0

        log_b = -math.log(K)
        f = torch.zeros(M, device=scores.device)
        if take is not None:
            f = torch.where(take, f, torch.full_like(f, -math.inf))
        g = torch.zeros(K, device=scores.device)
        for _ in range(iters):
            lse = _logsumexp_rows(logits + f[:, None], group)  # [K]
            g = torch.where(torch.isfinite(lse), log_b - lse, torch.zeros_like(lse))
            f = log_a - torch.logsumexp(logits + g[None, :], dim=1)  # [M]

        q = torch.softmax(logits + g[None, :], dim=1)
        if take is not None:
            q = torch.where(take[:, None], q, torch.zeros_like(q))
    return q


# ---------------------------------------------------------------------------------------------
# losses


def loss_weights(visibility: Tensor, valid: Tensor | None) -> Tensor:
    """w[b, t, n] = visibility[b, t, n] & valid[b, n] (or valid[b, t, n]), as float."""
    w = visibility.float()
    if valid is not None:
        v = valid.float()
        if v.dim() == w.dim() - 1:
            v = v.unsqueeze(-2)  # [B, N] -> [B, 1, N]
        w = w * v
    return w


def loss_normaliser(w: Tensor, normalize: str, group=None) -> Tensor:
    """The denominator Z of the loss over the batch whose term weights are w [B, T, N]:

        "visible":  Z = max(sum w over all ranks, 1) / world size
        "all":      Z = B * T * N   (this rank's terms; the official code's plain mean)

    Under DDP the gradients are averaged over ranks, so dividing each rank's sum by the global
    count / world size makes the result the mean over every visible term of the global batch
    (and B*T*N per rank, averaged, is the global B*T*N). Computed once for a whole step, it lets
    the student's terms be summed over micro-batches without changing the loss."""
    if normalize not in ("visible", "all"):
        raise ValueError(f"normalize must be 'visible' or 'all', got {normalize!r}")
    if normalize == "all":
        return torch.full((), float(w.numel()), device=w.device)
    group = _resolve_group(group)
    denom = w.sum().float().detach()
    if group is not None:
        return _all_reduce(denom.clone(), dist.ReduceOp.SUM, group).clamp_min(1.0) / dist.get_world_size(group)
    return denom.clamp_min(1.0)


def _weighted_ce(
    logits: Tensor,
    target_q: Tensor,
    w: Tensor,
    temperature: float,
    hard: bool,
    normalize: str,
    group=None,
    denom: Tensor | float | None = None,
) -> Tensor:
    """sum_{btn} w_btn CE(softmax(logits_btn / tau), target_btn) / normaliser, in float32.

    logits and target_q broadcast to [B, T, N, K]; w [B, T, N]. CE(p, y) = -sum_k y_k log p_k with
    y = onehot(argmax_k target_q) if hard, else target_q. Terms with w = 0 are exactly 0 (even if
    their inputs are not finite). normaliser = ``denom`` if given (a micro-batch of a larger
    batch), else :func:`loss_normaliser` of w."""
    if normalize not in ("visible", "all"):
        raise ValueError(f"normalize must be 'visible' or 'all', got {normalize!r}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        target_q = target_q.detach()
        shape = torch.broadcast_shapes(logp.shape, target_q.shape)
        logp = logp.expand(shape)
        if hard:
            idx = target_q.argmax(dim=-1, keepdim=True).expand(*shape[:-1], 1)
            ce = -logp.gather(-1, idx).squeeze(-1)  # [B, T, N]
        else:
            ce = -(target_q.float().expand(shape) * logp).sum(dim=-1)
        if w.shape != ce.shape:
            raise ValueError(f"weights {tuple(w.shape)} do not match the loss terms {tuple(ce.shape)}")
        terms = torch.where(w > 0, ce * w, torch.zeros_like(ce))
        if denom is None:
            denom = loss_normaliser(w, normalize, group)
        return terms.sum() / denom


def propagation_loss(
    student_first: Tensor,
    teacher_q: Tensor,
    visibility: Tensor,
    valid: Tensor | None = None,
    temperature: float = 0.1,
    hard: bool = True,
    normalize: Literal["visible", "all"] = "visible",
    group=None,
    denom: Tensor | float | None = None,
) -> Tensor:
    """The MoSiC loss: the student at a trajectory's first point predicts the teacher's cluster
    of that trajectory in every frame.

        L = sum_{b,t,n} w_btn CE(softmax(s_bn / tau), y_btn) / Z,     w_btn = vis_btn & valid_bn

    student_first [B, N, K]: student cosine scores s at each trajectory's point in frame 0;
    teacher_q [B, T, N, K]: teacher Sinkhorn assignments at the tracked point in frame t (t = 0
    included); y = onehot(argmax_k q) if hard else q (soft). visibility [B, T, N] bool; valid
    [B, N] bool (or [B, T, N]), False for points on masked patches or dropped otherwise.
    Z = max(sum w, 1) for normalize="visible" (mean over the terms that count), or B*T*N for
    "all" (the official code's plain mean, invisible terms in the denominator). The teacher side
    is detached: only student_first receives gradient, d L / d s_bn = sum_t w_btn (p_bn - y_btn)
    / (tau Z). ``denom`` overrides Z: pass :func:`loss_normaliser` of the whole batch when this
    is one micro-batch of it, so that the micro-batches' losses add up to the whole batch's.
    Returns a float32 scalar.
    """
    return _weighted_ce(
        student_first.unsqueeze(1), teacher_q, loss_weights(visibility, valid), temperature, hard, normalize, group,
        denom,
    )


def symmetric_loss(
    student_t: Tensor,
    teacher_q_first: Tensor,
    visibility: Tensor,
    valid: Tensor | None = None,
    temperature: float = 0.1,
    hard: bool = True,
    normalize: Literal["visible", "all"] = "visible",
    group=None,
    denom: Tensor | float | None = None,
) -> Tensor:
    """The optional reverse term: the student at frame t predicts the teacher's FIRST-frame
    cluster of the trajectory.

        L = sum_{b,t,n} w_btn CE(softmax(s_btn / tau), y_bn) / Z

    student_t [B, T, N, K]: student scores at the tracked point in frame t; teacher_q_first
    [B, N, K]: teacher assignments at frame 0, repeated over t; visibility [B, T, N]; valid [B, N]
    or [B, T, N] (a point on a masked patch of frame t). Same targets, Z and ``denom`` as
    propagation_loss.
    """
    return _weighted_ce(
        student_t, teacher_q_first.unsqueeze(1), loss_weights(visibility, valid), temperature, hard, normalize, group,
        denom,
    )


# ---------------------------------------------------------------------------------------------
# monitoring


@torch.no_grad()
def cluster_usage_entropy(q: Tensor, hard: bool = False, mask: Tensor | None = None) -> float:
    """Entropy of the mean assignment over points, normalised by log K to [0, 1].

        pbar_k = sum_m q[m, k] / sum_{m,k} q[m, k],     H = -sum_k pbar_k log pbar_k / log K

    1 = every prototype used equally, 0 = everything in one prototype (collapse). q [..., K] are
    per-point probabilities (Sinkhorn Q, or the student's softmax); hard=True counts argmax
    labels instead (q -> onehot(argmax q)). Rows that sum to 0 (points left out of Sinkhorn) and
    rows where mask [...] is False are ignored. NaN if no row is left; 0 when K = 1.

    Note: Sinkhorn's Q has near-uniform prototype marginals by construction, so its soft usage is
    ~1 whatever happens; hard=True on Q, or the student's softmax, are the informative monitors.
    """
    return usage_entropy(cluster_usage(q, hard, mask))


def cluster_usage(q: Tensor, hard: bool = False, mask: Tensor | None = None) -> Tensor:
    """float [K]: the summed assignment per prototype of the rows :func:`cluster_usage_entropy` counts (on
    q's device, nothing read back; sums of several processes add up to the usage of their union)."""
    K = q.shape[-1]
    q = q.detach().reshape(-1, K).float()
    keep = q.sum(dim=-1) > 0
    if mask is not None:
        keep = keep & mask.reshape(-1).to(keep.device).bool()
    if hard:
        q = F.one_hot(q.argmax(dim=-1), K).float()
    return (q * keep[:, None]).sum(dim=0)


def usage_entropy(usage: Tensor) -> float:
    """The normalised entropy of :func:`cluster_usage`'s sums (NaN when nothing was counted, 0 when K = 1)."""
    K = usage.shape[-1]
    total = float(usage.sum())
    if total <= 0:
        return float("nan")
    p = usage.float() / total
    h = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return float(h / math.log(K)) if K > 1 else 0.0


# ---------------------------------------------------------------------------------------------
# which clip, which points (numpy: the data loader's side)


def pick_clip(seed: int, epoch: int, video: int, num_clips: int) -> int:
    """The clip (0 .. num_clips - 1) of video number ``video`` that epoch ``epoch`` trains on:
    uniform, drawn from (seed, epoch, video) and nothing else, like the official loader's new
    random start per video and epoch (here among the starts the store holds). Independent of the
    crop's draws, which use (seed, epoch, item)."""
    if num_clips < 1:
        raise ValueError(f"video {video} has no clip to pick from")
    rng = np.random.default_rng([int(seed), int(epoch), int(video), 0x636C6970])  # "clip"
    return int(rng.integers(num_clips))


#: CoTracker-v3's model input (height, width); its grid (``get_points_on_a_grid``) is laid out there
#: with a margin of width / 64 and its tracks scaled back by (size - 1) / (input - 1) per axis
COTRACKER_INPUT = (384, 512)
GRID_LAYOUTS = ("cotracker", "cells")


def crop_grid(out_size: int, grid: int, layout: str = "cells") -> np.ndarray:
    """float64 [grid * grid, 2]: the grid x grid points of an out_size x out_size crop, (x, y) in crop
    pixels, row-major. ``"cells"``: the centres of a grid x grid partition (with grid = 16 at 224 px
    the 14 px patch centres). ``"cotracker"``: the grid CoTracker queries on the crop, which the
    official code tracks (at 224 px with grid 16: x from 3.5 to 219.9, y from 4.7 to 218.9)."""
    if layout == "cells":
        cx = cy = (np.arange(grid, dtype=np.float64) + 0.5) * (out_size / grid)
    elif layout == "cotracker":
        H, W = COTRACKER_INPUT
        m = W / 64
        if grid == 1:
            cx, cy = np.array([W / 2]), np.array([H / 2])
        else:
            cx, cy = np.linspace(m, W - m, grid), np.linspace(m, H - m, grid)
        cx, cy = cx * (out_size - 1) / (W - 1), cy * (out_size - 1) / (H - 1)
    else:
        raise ValueError(f"grid layout must be one of {', '.join(GRID_LAYOUTS)}, got {layout!r}")
    gx, gy = np.meshgrid(cx, cy)
    return np.stack([gx.ravel(), gy.ravel()], axis=-1)


def select_grid_points(first: np.ndarray, out_size: int, grid: int,
                       layout: str = "cells") -> tuple[np.ndarray, np.ndarray]:
    """For each point of the crop's ideal grid (:func:`crop_grid` in ``layout``), the stored trajectory whose
    first-frame point (``first`` [N, 2], crop pixels) is nearest to the cell's centre, among the
    points inside the crop. Returns (indices int64 [grid * grid] into N, distances float64
    [grid * grid] in crop pixels). With a stored grid at least :func:`min_store_grid` dense, every
    cell gets a point of its own within half a stored spacing of its centre (per axis)."""
    first = np.asarray(first, dtype=np.float64)
    if first.ndim != 2 or first.shape[1] != 2:
        raise ValueError(f"first must be [N, 2] points, got {first.shape}")
    S = float(out_size)
    inside = np.flatnonzero(np.all((first >= 0) & (first < S), axis=1))
    if len(inside) == 0:
        raise ValueError("no stored point lies inside the crop")
    ideal = crop_grid(out_size, grid, layout)
    d2 = ((ideal[:, None, :] - first[None, inside, :]) ** 2).sum(-1)  # [G*G, n_inside]
    k = d2.argmin(axis=1)
    return inside[k].astype(np.int64), np.sqrt(d2[np.arange(len(ideal)), k])


def min_store_grid(grid: int, scale: tuple[float, float] = (0.4, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                   out_size: int = 224) -> int:
    """The smallest G such that a G x G grid of cell centres on the full frame puts at least
    ``grid`` points along each side of every RandomResizedCrop(scale, ratio) crop.

    The crop is drawn in the frame squashed to out_size x out_size, so its sides are fractions of
    the frame's sides. Its narrowest side is sqrt(scale_min * ratio_min) (width) or sqrt(scale_min
    / ratio_max) (height) of the frame, less half a pixel of torchvision's rounding; an interval
    of fraction f holds at least floor(f * G) of G evenly spaced cell centres. For scale 0.4 and
    ratio 3/4..4/3 at 224 px, f = 0.5454 and a 16 x 16 crop grid needs G = 30."""
    f = min(math.sqrt(scale[0] * ratio[0]), math.sqrt(scale[0] / ratio[1]), 1.0) - 0.5 / out_size
    if f <= 0:
        raise ValueError(f"crops of scale {scale} and ratio {ratio} can be empty")
    return int(math.ceil(grid / f - 1e-9))
