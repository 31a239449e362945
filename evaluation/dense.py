"""Small building blocks of dense-feature evaluation: patch features, patch labels, K-means,
Hungarian-matched mIoU."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@torch.no_grad()
def patch_features(backbone: torch.nn.Module, frames: np.ndarray, img_size: int, batch: int = 32,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 frames [B, H, W, 3] -> L2-normalised patch tokens [B, h, w, D] of a timm ViT, frames
    resized to img_size x img_size."""
    backbone = backbone.eval().to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    p = backbone.patch_embed.patch_size[0]
    h = img_size // p
    out = []
    for s in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[s:s + batch])).to(device).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)
        tok = backbone.forward_features((x - mean) / std)[:, backbone.num_prefix_tokens:]
        out.append(F.normalize(tok.float(), dim=-1).view(len(x), h, h, -1).cpu())
    return torch.cat(out)


def patch_labels(labels: np.ndarray, grid: int, num_classes: int) -> np.ndarray:
    """Per-pixel labels [B, H, W] -> the majority label of each cell of a grid x grid partition
    [B, grid, grid] (the image is resized to a multiple of grid first, nearest)."""
    B = len(labels)
    t = torch.from_numpy(labels.astype(np.int64))[:, None].float()
    side = grid * 8
    t = F.interpolate(t, size=(side, side), mode="nearest")[:, 0].long()
    onehot = F.one_hot(t.clamp(0, num_classes - 1), num_classes).view(B, grid, 8, grid, 8, num_classes)
    return onehot.sum((2, 4)).argmax(-1).numpy()


def kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = 50, nredo: int = 3) -> np.ndarray:
    """K-means (faiss) cluster index of each row of x [M, D]."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, verbose=False)
    km.train(x)
    return km.index.search(x, 1)[1].ravel()


def hungarian_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int, k: int | None = None) -> tuple[float, np.ndarray]:
    """mIoU of cluster ids ``pred`` against ``gt`` after the one-to-one matching of clusters to
    classes that maximises total IoU (scipy's linear_sum_assignment); unmatched clusters count as
    wrong. Returns (mIoU over classes present in gt, per-class IoU)."""
    from scipy.optimize import linear_sum_assignment

    k = k or int(pred.max()) + 1
    inter = np.zeros((k, num_classes))
    np.add.at(inter, (pred.ravel(), gt.ravel()), 1)
    area_p = inter.sum(1, keepdims=True)
    area_g = inter.sum(0, keepdims=True)
    iou = inter / np.maximum(area_p + area_g - inter, 1)
    rows, cols = linear_sum_assignment(-iou)
    per_class = np.zeros(num_classes)
    per_class[cols] = iou[rows, cols]
    present = area_g.ravel() > 0
    return float(per_class[present].mean()), per_class
