"""Unsupervised video semantic segmentation (the TimeTuning protocol) and trajectory consistency.

Video segmentation, per clip of F sorted frames (the data set picks them), as TimeTuning's
evaluation runs it (``clustering.py``, ``my_utils.normalize_and_transform``; its replication
script passes ``use_annotations=False``):

1. frozen patch tokens of every frame resized to ``img_size`` (224 px by default;
   ``mode="dataset"``: ``dataset_img_size``, TimeTuning's 112 px, None: img_size), normalised with
   ``std`` (TimeTuning's (0.228, 0.224, 0.225); None: the backbone's own), raw as the backbone
   returns them (``normalize=True``: L2-normalised first, mosic's earlier variant);
2. standardise each dimension and project onto the first ``pca_dim`` (50) principal components,
   fitted on the patches of a loader batch of ``pca_clips`` (16) consecutive clips
   (``pca_clips=1``: each clip on its own; ``mode="dataset"``: all clips);
3. upsample the projected feature maps bilinearly to ``eval_size`` x ``eval_size`` pixels (the
   input resolution by default) in ``upsample_dtype`` (TimeTuning: float64) and resize the labels
   to it (nearest);
4. pixel-level K-means (faiss, 50 iterations, 5 restarts) with K = ``k`` (10) clusters, or, with
   ``k=None``, the number of ground-truth labels present (ignore pixels excepted) in the unit that
   is clustered: each frame (``mode="frame"``, F-clustering), each clip (``"clip"``) or the whole
   data set (``"dataset"``);
5. Hungarian matching of clusters to labels on 1 - IoU; clusters left unmatched become background
   (label 0); IoU of every label present in the unit, background included, averaged;
6. the figure: ``aggregate="batch"`` (TimeTuning): the mean over loader batches (``pca_clips``
   clips) of each batch's mean mIoU over its frames (``frame``) or clips (``clip``); ``"all"``
   (mosic's earlier rule): the mean over all frames or clips; the single data-set value
   (``dataset``); ignore pixels (255) are not scored.

TimeTuning's dataset-wise mode also multiplies its uint8 masks by 255 (``annotations *= 255``),
which turns label 1 into 255, its ignore label: a bug, left out here (docs/recipes.md).

Figures are percentages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mosic import MosicError
from mosic.evaluation.datasets.base import IGNORE
from mosic.evaluation.dense import kmeans, patch_features, resize_labels_floor
from mosic.evaluation.matching import hungarian
from mosic.evaluation.settings import VIDEO_MODES, ConsistencySettings, VideoSettings

MODES = VIDEO_MODES

# the paper's settings (TimeTuning's; the keyword defaults of video_segmentation) and the
# consistency protocol's
_P = VideoSettings()
_TC = ConsistencySettings()


# ------------------------------------------------------------------------------------------------
# the maths, on arrays
# ------------------------------------------------------------------------------------------------
def standardise_pca(x: torch.Tensor | np.ndarray, dim: int = 50) -> torch.Tensor:
    """Rows x [N, D] -> each column standardised (zero mean, unit variance), projected on the first
    ``dim`` principal components [N, min(dim, D, N)] (float32)."""
    x = torch.as_tensor(x).double().reshape(len(x), -1)
    x = (x - x.mean(0)) / (x.std(0, unbiased=False) + 1e-6)
    d = min(dim, x.shape[1], len(x))
    if d >= x.shape[1]:
        return x.float()
    cov = x.T @ x / max(1, len(x) - 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    comps = evecs[:, torch.argsort(evals, descending=True)[:d]]
    return (x @ comps).float()


UPSAMPLE_DTYPES = {"float64": torch.float64, "float32": torch.float32}
AGGREGATES = ("batch", "all")


def upsample(maps: torch.Tensor, size: int | tuple[int, int], dtype: str = "float32") -> torch.Tensor:
    """Feature maps [B, h, w, D] -> bilinear (align_corners=False) [B, H, W, D], computed in
    ``dtype`` (one of :data:`UPSAMPLE_DTYPES`)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[1:3]) == size:
        return maps
    x = F.interpolate(maps.permute(0, 3, 1, 2).to(UPSAMPLE_DTYPES[dtype]), size=size, mode="bilinear",
                      align_corners=False)
    return x.permute(0, 2, 3, 1).contiguous()


def present_labels(labels: np.ndarray, ignore_index: int = IGNORE) -> np.ndarray:
    """The labels that occur in ``labels``, ``ignore_index`` excepted (sorted)."""
    u = np.unique(labels)
    return u[u != ignore_index]


def match_and_score(pred: np.ndarray, gt: np.ndarray, ignore_index: int = IGNORE,
                    background: int = 0) -> tuple[float, dict[int, float], np.ndarray]:
    """TimeTuning's scoring of one unit (frame, clip or data set).

    Clusters ``pred`` and labels ``gt`` (same shape) are matched one to one by the Hungarian
    algorithm on 1 - IoU (over the clusters and labels present, ignore pixels left out); a cluster
    left unmatched (more clusters than labels) is relabelled ``background``. Returns (mIoU over the
    labels present in gt, background included, as a fraction; {label: IoU}; pred relabelled
    to label ids, ``ignore_index`` where gt is ignored)."""
    pred = np.asarray(pred).astype(np.int64)
    gt = np.asarray(gt).astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and labels {gt.shape} differ in shape")
    valid = gt != ignore_index
    p, g = pred[valid], gt[valid]
    out = np.full(pred.shape, ignore_index, np.int64)
    if g.size == 0:
        return float("nan"), {}, out
    clusters, p_idx = np.unique(p, return_inverse=True)
    labels, g_idx = np.unique(g, return_inverse=True)
    inter = np.zeros((len(clusters), len(labels)))
    np.add.at(inter, (p_idx, g_idx), 1)
    rows, cols = hungarian(inter, "one_minus_iou")
    lut = np.full(len(clusters), background, np.int64)  # unmatched clusters -> background
    lut[rows] = labels[cols]
    mapped = lut[p_idx]
    out[valid] = mapped
    per = {}
    for lab in labels:
        is_g, is_p = g == lab, mapped == lab
        tp = np.count_nonzero(is_g & is_p)
        per[int(lab)] = tp / max(1, np.count_nonzero(is_g | is_p))
    return float(np.mean(list(per.values()))), per, out


def cluster_pixels(x: torch.Tensor | np.ndarray, k: int, seed: int = 0, niter: int = 50, nredo: int = 5) -> np.ndarray:
    """K-means (faiss) of pixel features [M, d] -> cluster index per row; K = 1 (or fewer rows
    than K) short-cut without faiss."""
    x = np.ascontiguousarray(torch.as_tensor(x).float().numpy())
    if k <= 1:
        return np.zeros(len(x), np.int64)
    if len(x) <= k:
        return np.arange(len(x), dtype=np.int64)
    return kmeans(x, k, seed=seed, niter=niter, nredo=nredo).astype(np.int64)


def cluster_clip(features: torch.Tensor, labels: np.ndarray, mode: str = "frame", eval_size: int = 224,
                 pca_dim: int = 50, niter: int = 50, nredo: int = 5, seed: int = 0, k: int | None = None,
                 ignore_index: int = IGNORE) -> tuple[np.ndarray, list[float], np.ndarray]:
    """One clip's patch features [F, h, w, D] and labels [F, H, W] -> (raw cluster maps [F, S, S],
    mIoU per scored unit (one per frame for ``frame``, one for ``clip``; fractions), labels
    relabelled by the matching [F, S, S]), S = eval_size. The standardisation and PCA are fitted on
    this clip's patches; ``k`` = None: K = labels present in each unit."""
    Fn, h, w, D = features.shape
    x = standardise_pca(features.reshape(Fn * h * w, D), pca_dim).view(Fn, h, w, -1)
    return cluster_projected(x, labels, mode, eval_size, niter, nredo, seed, k, ignore_index)


def cluster_projected(x: torch.Tensor, labels: np.ndarray, mode: str = "frame", eval_size: int = 224,
                      niter: int = 50, nredo: int = 5, seed: int = 0, k: int | None = None,
                      ignore_index: int = IGNORE, upsample_dtype: str = "float32") -> tuple[np.ndarray, list[float], np.ndarray]:
    """:func:`cluster_clip` on features already standardised and projected [F, h, w, d]."""
    if mode not in ("frame", "clip"):
        raise MosicError(f"cluster_clip: mode must be 'frame' or 'clip', got {mode!r}")
    Fn = x.shape[0]
    up = upsample(x, eval_size, upsample_dtype)  # [F, S, S, d]
    gt = resize_labels_floor(labels, eval_size)
    clusters = np.zeros(gt.shape, np.int64)
    matched = np.full(gt.shape, ignore_index, np.int64)
    scores: list[float] = []
    units = [[f] for f in range(Fn)] if mode == "frame" else [list(range(Fn))]
    for u in units:
        g = gt[u]
        kk = k or max(1, len(present_labels(g, ignore_index)))
        c = cluster_pixels(up[u].reshape(-1, up.shape[-1]), kk, seed=seed, niter=niter, nredo=nredo).reshape(g.shape)
        clusters[u] = c
        miou, _, m = match_and_score(c, g, ignore_index)
        matched[u] = m
        if not np.isnan(miou):
            scores.append(miou)
    return clusters, scores, matched


def project_batch(features: Sequence[torch.Tensor], pca_dim: int = 50) -> list[torch.Tensor]:
    """Patch features of several clips [F_i, h, w, D] -> each standardised and projected with one
    standardisation and PCA fitted on all their patches together (TimeTuning: one loader batch)."""
    shapes = [f.shape for f in features]
    flat = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    y = standardise_pca(flat, pca_dim)
    out, s = [], 0
    for Fn, h, w, _ in shapes:
        n = Fn * h * w
        out.append(y[s:s + n].view(Fn, h, w, -1))
        s += n
    return out


# ------------------------------------------------------------------------------------------------
# the protocol
# ------------------------------------------------------------------------------------------------
def _check(mode: str, img_size: int, eval_size: int | None, pca_dim: int, niter: int, nredo: int,
           k: int | None = None, pca_clips: int = 1, aggregate: str = "all", upsample_dtype: str = "float32") -> None:
    if aggregate not in AGGREGATES:
        raise MosicError(f"video segmentation: aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if upsample_dtype not in UPSAMPLE_DTYPES:
        raise MosicError(f"video segmentation: upsample_dtype must be one of {', '.join(UPSAMPLE_DTYPES)}, "
                         f"got {upsample_dtype!r}")
    if mode not in MODES:
        raise MosicError(f"video segmentation: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if img_size < 14:
        raise MosicError(f"video segmentation: img_size must be at least one patch, got {img_size}")
    if eval_size is not None and eval_size < 1:
        raise MosicError(f"video segmentation: eval_size must be positive, got {eval_size}")
    if pca_dim < 1 or niter < 1 or nredo < 1:
        raise MosicError(f"video segmentation: pca_dim, niter and nredo must be positive (got {pca_dim}, {niter}, {nredo})")
    if k is not None and (int(k) != k or k < 1):
        raise MosicError(f"video segmentation: k must be a positive number of clusters or null (labels present), got {k!r}")
    if int(pca_clips) != pca_clips or pca_clips < 1:
        raise MosicError(f"video segmentation: pca_clips must be a positive number of clips, got {pca_clips!r}")


def _clips(ds, max_clips: int | None) -> Iterable[int]:
    n = len(ds) if max_clips is None else min(len(ds), max_clips)
    if n == 0:
        raise MosicError(f"video segmentation: data set {getattr(ds, 'name', '?')!r} has no clips")
    return range(n)


def _bar(it, total: int, desc: str, progress: bool):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="clip", dynamic_ncols=True, leave=False)


def video_segmentation(backbone: torch.nn.Module, ds, mode: str = _P.mode, img_size: int = _P.img_size,
                       eval_size: int | None = _P.eval_size, pca_dim: int = _P.pca_dim, niter: int = _P.niter,
                       nredo: int = _P.nredo, seed: int = _P.seed, batch: int = _P.batch,
                       device: str | torch.device = "cpu", max_clips: int | None = _P.max_clips,
                       ignore_index: int = _P.ignore_index, progress: bool = False, k: int | None = _P.k,
                       pca_clips: int = _P.pca_clips, normalize: bool = _P.normalize,
                       dataset_img_size: int | None = _P.dataset_img_size, aggregate: str = _P.aggregate,
                       upsample_dtype: str = _P.upsample_dtype,
                       std: Sequence[float] | None = _P.std) -> dict:
    """Unsupervised video semantic segmentation of a ``VideoSegDataset`` (see the module doc).
    Defaults: TimeTuning's (raw tokens, PCA per batch of 16 clips, K = 10, the mean of per-batch
    means, float64 upsampling, std 0.228, the dataset-wise mode at 112 px); mosic's earlier
    variant: ``normalize=True, pca_clips=1, k=None, aggregate="all", upsample_dtype="float32",
    std=None, dataset_img_size=None``.

    Returns {"miou": percent, "mode", "units": frames/clips/1 scored, "clips", "per_clip":
    {video_id: percent}} (``per_clip`` is empty for ``dataset``)."""
    _check(mode, img_size, eval_size, pca_dim, niter, nredo, k, pca_clips, aggregate, upsample_dtype)
    std = tuple(std) if std is not None else None
    idx = list(_clips(ds, max_clips))
    if mode == "dataset":
        size = dataset_img_size or img_size
        return _dataset_wise(backbone, ds, idx, size, eval_size or size, pca_dim, niter, nredo, seed, batch, device,
                             ignore_index, progress, k, normalize, upsample_dtype, std)
    eval_size = eval_size or img_size
    scores: list[float] = []
    batch_means: list[float] = []
    per_clip: dict[str, float] = {}
    bar = _bar(None, len(idx), f"video {mode}-clustering", progress) if progress else None
    for start in range(0, len(idx), pca_clips):
        samples = [ds[i] for i in idx[start:start + pca_clips]]
        feats = [patch_features(backbone, s.frames, img_size, batch=batch, device=device, normalize=normalize, std=std)
                 for s in samples]
        in_batch: list[float] = []
        for s, x in zip(samples, project_batch(feats, pca_dim)):
            _, sc, _ = cluster_projected(x, s.labels, mode, eval_size, niter, nredo, seed, k, ignore_index,
                                         upsample_dtype)
            in_batch += sc  # its frames (frame) or the clip (clip)
            scores += sc
            if sc:
                per_clip[str(s.video_id)] = 100 * float(np.mean(sc))
            if bar is not None:
                bar.update(1)
        if in_batch:
            batch_means.append(float(np.mean(in_batch)))
    if bar is not None:
        bar.close()
    if not scores:
        raise MosicError("video segmentation: no clip has a scored (non-ignored) pixel")
    miou = np.mean(batch_means) if aggregate == "batch" else np.mean(scores)
    return {"miou": 100 * float(miou), "mode": mode, "units": len(scores), "clips": len(idx),
            "per_clip": per_clip}


def _dataset_wise(backbone, ds, idx, img_size, eval_size, pca_dim, niter, nredo, seed, batch, device, ignore_index,
                  progress, k=None, normalize=False, upsample_dtype="float32", std=None) -> dict:
    """All clips' pixels clustered together (memory: clips x F x eval_size^2 x pca_dim floats)."""
    feats, labels = [], []
    for i in _bar(idx, len(idx), "video dataset-clustering", progress):
        s = ds[i]
        feats.append(patch_features(backbone, s.frames, img_size, batch=batch, device=device, normalize=normalize,
                                    std=std))
        labels.append(resize_labels_floor(s.labels, eval_size))
    f = torch.cat(feats)
    N, h, w, D = f.shape
    x = upsample(standardise_pca(f.reshape(-1, D), pca_dim).view(N, h, w, -1), eval_size, upsample_dtype)
    gt = np.concatenate(labels)
    kk = k or max(1, len(present_labels(gt, ignore_index)))
    pred = cluster_pixels(x.reshape(-1, x.shape[-1]), kk, seed=seed, niter=niter, nredo=nredo).reshape(gt.shape)
    miou, _, _ = match_and_score(pred, gt, ignore_index)
    if np.isnan(miou):
        raise MosicError("video segmentation: no clip has a scored (non-ignored) pixel")
    return {"miou": 100 * miou, "mode": "dataset", "units": 1, "clips": len(idx), "per_clip": {}}


def show_clusters(backbone: torch.nn.Module, sample, mode: str = "clip", img_size: int = 224,
                  eval_size: int | None = None, k: int | None = None, pca_dim: int = 50, niter: int = 50,
                  nredo: int = 5, seed: int = 0, device: str | torch.device = "cpu",
                  matched: bool = True, normalize: bool = False) -> tuple[np.ndarray, float]:
    """Cluster maps of one ``VideoClipSample`` for drawing: [F, S, S] (matched to the labels, so a
    class keeps its colour across frames, when ``matched``; raw cluster ids otherwise) and the
    clip's mIoU (percent)."""
    _check(mode, img_size, eval_size, pca_dim, niter, nredo)
    if mode == "dataset":
        raise MosicError("show: mode must be 'frame' or 'clip'")
    feats = patch_features(backbone, sample.frames, img_size, device=device, normalize=normalize)
    clusters, scores, relabelled = cluster_clip(feats, sample.labels, mode, eval_size or img_size, pca_dim, niter,
                                                nredo, seed, k=k)
    maps = relabelled if matched else clusters
    return maps, 100 * float(np.mean(scores)) if scores else float("nan")


# ------------------------------------------------------------------------------------------------
# trajectory consistency (synthetic set, exact ground-truth tracks)
# ------------------------------------------------------------------------------------------------
def temporal_consistency(backbone: torch.nn.Module, synthetic_root: str | Path, split: str = _TC.split,
                         img_size: int = _TC.img_size, frames_per_video: int = _TC.frames_per_video,
                         step: int = _TC.step, max_videos: int | None = _TC.max_videos, clusters: int = _TC.clusters,
                         seed: int = _TC.seed) -> dict:
    """How often a ground-truth trajectory's patch keeps its K-means cluster (``clusters``
    clusters over all frames' patch features) from a clip's first frame to its later frames, on
    the synthetic set (visible points only). Wraps :func:`mosic.evaluation.synthetic_probe.probe`, so the
    figure equals the training demo's ``track_consistency``; its ``correspondence`` (nearest
    first-frame point on the same layer) comes along. Percentages."""
    from mosic.evaluation.synthetic_probe import probe
    from mosic.data.synthetic import SyntheticSource

    root = Path(synthetic_root)
    try:
        SyntheticSource(root, split=split).videos()
    except MosicError as e:
        raise MosicError(f"trajectory consistency needs a synthetic set: {e}") from None
    r = probe(backbone, root, split=split, img_size=img_size, frames_per_video=frames_per_video, step=step,
              max_videos=max_videos, overcluster=clusters, seed=seed)
    return {"consistency": r["track_consistency"], "correspondence": r["correspondence"], "videos": r["videos"],
            "frames": r["frames"]}


__all__: Sequence[str] = (
    "MODES", "cluster_clip", "cluster_pixels", "cluster_projected", "match_and_score", "present_labels",
    "project_batch",
    "show_clusters", "standardise_pca", "temporal_consistency", "upsample", "video_segmentation",
)
