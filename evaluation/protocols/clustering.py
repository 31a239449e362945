"""Frozen clustering: K-means on the patch tokens of a whole data set, matched to the classes.

NeCo's settings are the defaults (``eval_overcluster.py``, ``configs/pascal``): raw patch tokens
(``l2_normalize=True`` normalises them first, mosic's earlier default), standardised per dimension,
projected on their top ``pca_dim`` (50) principal components, faiss K-means with ``niter`` 100
iterations x ``nredo`` 5 restarts (the run of lowest inertia is kept), for each of 5 seeds, whose
mIoUs are averaged. Masks are resized (nearest) to ``mask_size`` x ``mask_size`` (100) and each of
their pixels takes its patch's cluster (nearest upsampling; ``mask_size=None``: the mask's own
size), so the cluster-by-class overlap counts come from per-patch class histograms computed once.
Clusters are matched to classes over the whole data set:

- K <= number of classes: one-to-one (Hungarian, maximal total IoU); a class without a cluster
  scores 0.
- K > number of classes (overclustering): many-to-one, each cluster takes the class it overlaps
  most (the "precision-based" greedy matching of NeCo/Leopart: precision = overlap / cluster size).

mIoU from the matched confusion matrix (ignore pixels never counted), averaged over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mosic import MosicError
from mosic.evaluation.dense import (dataset_features, iou_list, kmeans, miou_from_confusion, nearest_index,
                                    resize_labels_centres)
from mosic.evaluation.matching import match_clusters
from mosic.evaluation.settings import ClusteringSettings

_P = ClusteringSettings()  # the paper's settings: the keyword defaults below


def matched_miou(cont: np.ndarray, mapping: np.ndarray, ignore_index: int | None = None) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU) of clusters relabelled by ``mapping``, over the classes present in the
    ground truth (a cluster matched to an absent class is simply wrong); pixels of unmatched
    clusters (-1) are errors for their true class and count for no other."""
    K, C = cont.shape
    conf = np.zeros((C, C + 1), np.int64)
    for c in range(K):
        conf[:, mapping[c] if mapping[c] >= 0 else C] += cont[c]
    _, iou = miou_from_confusion(conf, ignore_index)
    iou[conf.sum(1) == 0] = np.nan
    scored = ~np.isnan(iou)
    return (float(iou[scored].mean()) if scored.any() else float("nan")), iou


def frozen_clustering(backbone: torch.nn.Module, ds, ks: Sequence[int] | None = _P.ks, img_size: int = _P.img_size,
                      pca_dim: int | None = _P.pca_dim, niter: int = _P.niter, nredo: int = _P.nredo,
                      seeds: Sequence[int] = _P.seeds, l2_normalize: bool = _P.l2_normalize,
                      mask_size: int | None = _P.mask_size, batch_size: int = _P.batch_size,
                      device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """K-means of the frozen patch tokens of ``ds`` for each K in ``ks`` (default: the number of
    scored classes, 21 for VOC), each with every seed. Returns ``{str(K): {"miou", "miou_std",
    "miou_per_seed", "per_class_iou", "matching"}}``: percentages, mIoU averaged over the seeds,
    over the classes present in ``ds``."""
    if len(ds) == 0:
        raise MosicError(f"data set {ds.name!r} is empty")
    C, ignore = ds.num_classes, ds.ignore_index
    scored = C - int(0 <= ignore < C)  # an ignore index inside the class range is no class
    ks = tuple(ks) if ks is not None else (scored,)
    feats, hists = [], []
    for tok, labels in dataset_features(backbone, ds, range(len(ds)), img_size, batch_size, device,
                                        normalize=l2_normalize, progress="clustering: features" if progress else None):
        _, h, w, D = tok.shape
        feats.append(tok.reshape(-1, D))
        for lab in labels:  # class histogram of the pixels each patch covers (nearest upsampling)
            if mask_size:
                lab = resize_labels_centres(lab, mask_size)
            H, W = lab.shape
            patch = nearest_index(h, H)[:, None] * w + nearest_index(w, W)[None, :]
            lab = lab.astype(np.int64)
            keep = lab != ignore
            counts = np.bincount(patch[keep] * C + lab[keep], minlength=h * w * C)
            hists.append(counts.reshape(h * w, C).astype(np.int32))
    x = torch.cat(feats)
    hist = torch.from_numpy(np.concatenate(hists))
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    if pca_dim and pca_dim < x.shape[1]:
        _, vecs = torch.linalg.eigh((x.T @ x).double() / len(x))  # ascending eigenvalues
        x = x @ vecs[:, -pca_dim:].flip(1).float()
    x = x.numpy()

    out = {}
    for k in ks:
        if k > len(x):
            raise MosicError(f"K = {k} clusters but only {len(x)} patches in {ds.name!r}")
        many = k > scored
        mious, per_class = [], []
        for seed in seeds:
            assign = kmeans(x, k, seed=seed, niter=niter, nredo=nredo)
            cont = torch.zeros(k, C, dtype=torch.int64).index_add_(0, torch.from_numpy(assign), hist.long()).numpy()
            miou, iou = matched_miou(cont, match_clusters(cont, many, ignore), ignore)
            mious.append(100 * miou)
            per_class.append(iou)
        out[str(k)] = {"miou": float(np.mean(mious)), "miou_std": float(np.std(mious)), "miou_per_seed": mious,
                       "per_class_iou": iou_list(np.mean(per_class, 0)),
                       "matching": "many_to_one" if many else "hungarian"}
    return out
