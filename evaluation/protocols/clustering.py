"""Frozen clustering: K-means on the patch tokens of a whole data set, matched to the classes.

NeCo's settings are the defaults (``experiments/overcluster/eval_overcluster.py``,
``experiments/utils.py`` ``PredsmIoU``, ``configs/pascal``, ``configs/ade20k``): raw patch tokens
(``l2_normalize=True`` normalises them first, mosic's earlier default), standardised per dimension
(``std_ddof=0``: scikit-learn's StandardScaler, a constant dimension divided by 1; ``1``: the sample
std plus 1e-6, mosic's earlier rule), projected on their top ``pca_dim`` (50) principal components,
faiss K-means with ``niter`` 100 iterations x ``nredo`` 5 restarts (the run of lowest inertia is
kept), for each of 5 seeds, whose mIoUs are averaged. ``drop_last``: the data sets whose last
partial batch of ``batch_size`` images is left out, as NeCo's VOC val loader (32: 9 of VOC val's
1,449 images).

Masks and cluster maps (``resize``): ``"reference"`` (NeCo): masks resized to img_size (nearest,
the source pixel under each output pixel's centre, as PIL), then to ``mask_size`` x ``mask_size``
(100) by floor-nearest (torch's ``interpolate(mode="nearest")``), and the patch grid upsampled to the
mask floor-nearest; ``"centres"`` (mosic's earlier rule): masks resized once to mask_size and the
grid upsampled, both by the pixel under each centre. ``mask_size=None``: the mask's own size. The
cluster-by-class overlap counts come from per-patch class histograms computed once.

Scoring (``matching``, ``absent_classes``, ``class_rows``): the rows are the classes, plus, with
``class_rows="reference"``, the reference's always-absent rows (ADE20K: NeCo's 151 classes, class 0
'other' ignored in the pixels but a row; :data:`~mosic.evaluation.dense.REFERENCE_ZERO_ROWS`).

- ``matching="reference"`` (NeCo): K equal to the number of rows is matched one-to-one (Hungarian on
  1 - IoU); every other K, below or above, many-to-one: each cluster takes the class of highest
  precision (overlap / cluster size), i.e. the class it overlaps most.
- ``matching="mosic"`` (mosic's earlier rule): Hungarian (maximal total IoU) for every K up to the
  number of classes, many-to-one above.
- ``absent_classes="zero"`` (NeCo): a row whose class has no pixel scores 0 and counts in the mean
  (so do the reference rows); ``"skip"``: it is left out.

mIoU from the matched confusion matrix (ignore pixels never counted), averaged over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mosic import MosicError
from mosic.evaluation.dense import (CLASS_ROWS, REFERENCE_ZERO_ROWS, dataset_features, iou_list, kmeans,
                                    miou_from_confusion, nearest_index, resize_labels_centres, resize_labels_floor)
from mosic.evaluation.matching import match_clusters
from mosic.evaluation.settings import ClusteringSettings

_P = ClusteringSettings()  # the paper's settings: the keyword defaults below

MATCHING_RULES = ("reference", "mosic")
RESIZE_RULES = ("reference", "centres")
ABSENT_RULES = ("zero", "skip")
#: the K values a run scores by default where the reference has a configuration (NeCo's configs:
#: VOC 21, ADE20K 151; VOC also 500, the paper's overclustering row); elsewhere the classes and 100,
#: 300, 500. ``None``: the number of rows (classes plus the reference's rows).
DEFAULT_KS = {"voc": (None, 500), "ade20k": (None,)}


def reference_rows(dataset: str, class_rows: str = _P.class_rows) -> int:
    """The rows the scorer adds to the data set's classes (ADE20K under ``"reference"``: 1)."""
    if class_rows not in CLASS_ROWS:
        raise MosicError(f"clustering.class_rows must be one of {', '.join(CLASS_ROWS)}, got {class_rows!r}")
    return REFERENCE_ZERO_ROWS.get(str(dataset).lower(), 0) if class_rows == "reference" else 0


def default_ks(dataset: str, num_classes: int, ignore_index: int, class_rows: str = _P.class_rows) -> list[int]:
    """The K values scored when none are asked for (:data:`DEFAULT_KS`)."""
    rows = num_classes - int(0 <= ignore_index < num_classes) + reference_rows(dataset, class_rows)
    return [rows if k is None else k for k in DEFAULT_KS.get(str(dataset).lower(), (None, 100, 300, 500))]


def matched_miou(cont: np.ndarray, mapping: np.ndarray, ignore_index: int | None = None,
                 absent: str = "skip") -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU) of clusters relabelled by ``mapping`` from the overlap counts ``cont``
    [K, C]; pixels of unmatched clusters (-1) are errors for their true class and count for no
    other. ``absent="skip"``: over the classes present in the ground truth (a cluster matched to an
    absent class is simply wrong); ``"zero"``: an absent class scores 0 and counts in the mean, as
    NeCo's ``PredsmIoU``. An ignore index inside 0..C-1 is never scored."""
    if absent not in ABSENT_RULES:
        raise MosicError(f"clustering.absent_classes must be one of {', '.join(ABSENT_RULES)}, got {absent!r}")
    K, C = cont.shape
    conf = np.zeros((C, C + 1), np.int64)
    for c in range(K):
        conf[:, mapping[c] if mapping[c] >= 0 else C] += cont[c]
    _, iou = miou_from_confusion(conf, ignore_index)
    iou[conf.sum(1) == 0] = 0.0 if absent == "zero" else np.nan
    if ignore_index is not None and 0 <= ignore_index < C:
        iou[ignore_index] = np.nan
    scored = ~np.isnan(iou)
    return (float(iou[scored].mean()) if scored.any() else float("nan")), iou


def score_clusters(cont: np.ndarray, ignore_index: int | None = None, extra_rows: int = 0,
                   matching: str = _P.matching, absent: str = _P.absent_classes) -> tuple[float, np.ndarray, bool]:
    """(mIoU, per-row IoU, many-to-one?) of K clusters with overlap counts ``cont`` [K, C]
    (ignore pixels not counted), the classes plus ``extra_rows`` always-absent reference rows (as
    columns after the classes) matched by ``matching`` (see the module's text)."""
    if matching not in MATCHING_RULES:
        raise MosicError(f"clustering.matching must be one of {', '.join(MATCHING_RULES)}, got {matching!r}")
    K, C = cont.shape
    scored = C - int(ignore_index is not None and 0 <= ignore_index < C)
    cont = np.concatenate([cont, np.zeros((K, extra_rows), cont.dtype)], 1)
    if matching == "reference":
        many = K != scored + extra_rows
        mapping = match_clusters(cont, many, ignore_index, "one_minus_iou")
    else:
        many = K > scored
        mapping = match_clusters(cont, many, ignore_index, "iou")
    miou, iou = matched_miou(cont, mapping, ignore_index, absent)
    return miou, iou, many


def _patch_index(h: int, w: int, H: int, W: int, resize: str) -> np.ndarray:
    """Patch of each pixel of an H x W mask, the h x w grid upsampled nearest by ``resize``'s rule."""
    if resize == "reference":
        return resize_labels_floor(np.arange(h * w).reshape(1, h, w), (H, W))[0]
    return nearest_index(h, H)[:, None] * w + nearest_index(w, W)[None, :]


def _resized_mask(lab: np.ndarray, img_size: int, mask_size: int | None, resize: str) -> np.ndarray:
    if resize == "reference":
        lab = resize_labels_centres(lab, img_size)
        return resize_labels_floor(lab[None], mask_size)[0] if mask_size else lab
    return resize_labels_centres(lab, mask_size) if mask_size else lab


def standardise(x: torch.Tensor, ddof: int = _P.std_ddof) -> torch.Tensor:
    """Per-dimension standardisation: ``ddof=0`` as scikit-learn's StandardScaler (a constant
    dimension divided by 1); ``1``: the sample std plus 1e-6."""
    x = x - x.mean(0)
    if ddof == 0:
        std = x.std(0, correction=0)
        return x / torch.where(std == 0, torch.ones_like(std), std)
    return x / (x.std(0, correction=ddof) + 1e-6)


def frozen_clustering(backbone: torch.nn.Module, ds, ks: Sequence[int] | None = _P.ks, img_size: int = _P.img_size,
                      pca_dim: int | None = _P.pca_dim, niter: int = _P.niter, nredo: int = _P.nredo,
                      seeds: Sequence[int] = _P.seeds, l2_normalize: bool = _P.l2_normalize,
                      mask_size: int | None = _P.mask_size, batch_size: int = _P.batch_size,
                      matching: str = _P.matching, absent_classes: str = _P.absent_classes,
                      class_rows: str = _P.class_rows, resize: str = _P.resize, std_ddof: int = _P.std_ddof,
                      drop_last: Sequence[str] = _P.drop_last,
                      device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """K-means of the frozen patch tokens of ``ds`` for each K in ``ks`` (default: the number of
    rows, 21 for VOC, 151 for ADE20K under ``class_rows="reference"``), each with every seed.
    Returns ``{str(K): {"miou", "miou_std", "miou_per_seed", "per_class_iou", "matching",
    "rows", "images"}}``: percentages, mIoU averaged over the seeds."""
    if resize not in RESIZE_RULES:
        raise MosicError(f"clustering.resize must be one of {', '.join(RESIZE_RULES)}, got {resize!r}")
    if std_ddof not in (0, 1):
        raise MosicError(f"clustering.std_ddof must be 0 or 1, got {std_ddof}")
    n = len(ds)
    if str(ds.name).lower() in {d.lower() for d in drop_last} and n > batch_size:
        n -= n % batch_size
    if n == 0:
        raise MosicError(f"data set {ds.name!r} is empty")
    C, ignore = ds.num_classes, ds.ignore_index
    extra = reference_rows(ds.name, class_rows)
    scored = C - int(0 <= ignore < C)  # an ignore index inside the class range is no class
    ks = tuple(ks) if ks is not None else (scored + extra,)
    feats, hists = [], []
    for tok, labels in dataset_features(backbone, ds, range(n), img_size, batch_size, device,
                                        normalize=l2_normalize, progress="clustering: features" if progress else None):
        _, h, w, D = tok.shape
        feats.append(tok.reshape(-1, D))
        for lab in labels:  # class histogram of the pixels each patch covers (nearest upsampling)
            lab = _resized_mask(lab, img_size, mask_size, resize).astype(np.int64)
            patch = _patch_index(h, w, *lab.shape, resize)
            keep = lab != ignore
            counts = np.bincount(patch[keep] * C + lab[keep], minlength=h * w * C)
            hists.append(counts.reshape(h * w, C).astype(np.int32))
    x = standardise(torch.cat(feats), std_ddof)
    hist = torch.from_numpy(np.concatenate(hists))
    if pca_dim and pca_dim < x.shape[1]:
        _, vecs = torch.linalg.eigh((x.T @ x).double() / len(x))  # ascending eigenvalues
        x = x @ vecs[:, -pca_dim:].flip(1).float()
    x = x.numpy()

    out = {}
    for k in ks:
        if k > len(x):
            raise MosicError(f"K = {k} clusters but only {len(x)} patches in {ds.name!r}")
        mious, per_class, many = [], [], False
        for seed in seeds:
            assign = kmeans(x, k, seed=seed, niter=niter, nredo=nredo)
            cont = torch.zeros(k, C, dtype=torch.int64).index_add_(0, torch.from_numpy(assign), hist.long()).numpy()
            miou, iou, many = score_clusters(cont, ignore, extra, matching, absent_classes)
            mious.append(100 * miou)
            per_class.append(iou)
        out[str(k)] = {"miou": float(np.mean(mious)), "miou_std": float(np.std(mious)), "miou_per_seed": mious,
                       "per_class_iou": iou_list(np.mean(per_class, 0)),
                       "matching": "many_to_one" if many else "hungarian", "rows": scored + extra, "images": n}
    return out
