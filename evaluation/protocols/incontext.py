"""In-context scene understanding (Hummingbird, Balazevic et al. 2023): dense nearest-neighbour
retrieval of patch labels from a memory bank of annotated training patches.

Memory: ``augment_passes`` passes over ``train_ds.subset(fraction, seed)``; each image is
augmented (below), resized to img_size x img_size, and its L2-normalised patch tokens are stored
with soft labels (the mean of its pixels' one-hot class vectors, an ignore pixel contributing
zeros; patches with no scored pixel are never stored). Each image contributes at most
``memory_size // (images x passes)`` patches (at least 1), clamped to the patches it has, drawn
without replacement with weights 1 / (number of patches of this image with the same majority
class): every class present in an image gets the same expected share, so rare classes are kept.

Augmentation (the official code's, made explicit): a random resized crop of area 0.5-1.0 of the
image and aspect ratio 3/4-4/3 (the official "scale 0.5-2" is torchvision's RandomResizedCrop, whose
draws above 1.0 can never fit and fall back to another draw or the whole image), then brightness,
contrast and saturation each scaled by a factor in [0.9, 1.1] with probability 0.5 (no hue jitter).

Prediction: the k nearest memory patches of each val patch by dot product (exact, chunked
matmul), weights softmax(similarity / temperature), the weighted mean of their label
distributions, upsampled bilinearly to the mask's own size, argmax; mIoU with the data set's
ignore index (direct class predictions, no cluster matching).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mosic.evaluation.dense import (check_sample, confusion, dataset_features, iou_list, miou_from_confusion,
                              patch_features, resize_image, resize_labels)
from mosic import MosicError


def augment(image: np.ndarray, label: np.ndarray, size: int, rng: np.random.Generator,
            scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
            jitter: float = 0.1, p_jitter: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Random resized crop (image bilinear, label nearest) to size x size, then colour jitter."""
    H, W = label.shape
    i, j, h, w = 0, 0, H, W  # the whole image if no draw fits (as torchvision)
    for _ in range(10):
        area = H * W * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * r)), round(math.sqrt(area / r))
        if 0 < cw <= W and 0 < ch <= H:
            i, j, h, w = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1)), ch, cw
            break
    img = resize_image(np.ascontiguousarray(image[i:i + h, j:j + w]), size).astype(np.float32)
    lab = resize_labels(label[i:i + h, j:j + w], size)
    def gray(x):
        return x @ np.array([0.299, 0.587, 0.114], np.float32)

    if rng.random() < p_jitter:  # brightness
        img = img * rng.uniform(1 - jitter, 1 + jitter)
    if rng.random() < p_jitter:  # contrast
        m = gray(img).mean()
        img = (img - m) * rng.uniform(1 - jitter, 1 + jitter) + m
    if rng.random() < p_jitter:  # saturation
        g = gray(img)[..., None]
        img = g + (img - g) * rng.uniform(1 - jitter, 1 + jitter)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lab


def soft_patch_labels(label: np.ndarray, grid: int, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Label map [S, S] (S a multiple of grid) -> soft label of each patch [grid * grid, C]: the mean
    over its pixels of their one-hot class vectors, an ignore pixel contributing zeros (so a patch
    that is mostly ignore carries little label mass, and one that is all ignore none)."""
    S = label.shape[0]
    p = S // grid
    patch = (np.arange(S)[:, None] // p) * grid + np.arange(S)[None, :] // p
    lab = label.astype(np.int64)
    keep = lab != ignore_index
    counts = np.bincount(patch[keep] * num_classes + lab[keep], minlength=grid * grid * num_classes)
    return torch.from_numpy(counts.reshape(grid * grid, num_classes)).float() / (p * p)


def sample_patches(soft: torch.Tensor, budget: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of at most ``budget`` patches with a label (rows of ``soft`` [P, C] that are not all
    zero), drawn without replacement with weight 1 / (count of the patch's majority class)."""
    valid = soft.sum(1) > 0
    n = min(budget, int(valid.sum()))
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    major = soft.argmax(1)
    freq = torch.bincount(major[valid], minlength=soft.shape[1]).float()
    weight = torch.where(valid, 1 / freq[major].clamp(min=1), torch.zeros(()))
    return torch.multinomial(weight, n, replacement=False, generator=gen)


def build_memory(backbone: torch.nn.Module, ds, img_size: int, memory_size: int | None, augment_passes: int,
                 seed: int, batch_size: int = 16, device: str | torch.device = "cpu",
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features [M, D], soft labels [M, C], per-image budget) of the memory bank over all of ``ds``."""
    C, ignore = ds.num_classes, ds.ignore_index
    p = backbone.patch_embed.patch_size[0]
    grid = img_size // p
    budget = grid * grid if memory_size is None else min(grid * grid, max(1, memory_size // (len(ds) * augment_passes)))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    bar = tqdm(total=augment_passes * len(ds), desc="in-context: memory", unit="image", leave=False,
               disable=not progress)
    for _ in range(augment_passes):
        for s in range(0, len(ds), batch_size):
            images, soft = [], []
            for i in range(s, min(s + batch_size, len(ds))):
                smp = ds[i]
                check_sample(smp, C, ignore)
                img, lab = augment(smp.image, smp.label, img_size, rng)
                images.append(img)
                soft.append(soft_patch_labels(lab, grid, C, ignore))
            tok = patch_features(backbone, np.stack(images), img_size, batch_size, device)
            for t, sl in zip(tok.reshape(len(images), grid * grid, -1), soft):
                keep = sample_patches(sl, budget, gen)
                feats.append(t[keep])
                labels.append(sl[keep])
            bar.update(len(images))
    bar.close()
    return torch.cat(feats), torch.cat(labels), budget


@torch.no_grad()
def knn_labels(queries: torch.Tensor, mem_feats: torch.Tensor, mem_labels: torch.Tensor, k: int,
               temperature: float, chunk_elems: int = 2 ** 26) -> torch.Tensor:
    """Label distribution [Q, C] of each query [Q, D]: softmax(sim / temperature) over its k
    nearest memory rows (dot product) applied to their labels."""
    k = min(k, len(mem_feats))
    out = []
    for q in queries.split(max(1, chunk_elems // len(mem_feats))):
        sim, idx = (q @ mem_feats.T).topk(k, dim=1)
        w = torch.softmax(sim / temperature, dim=1)
        out.append(torch.einsum("qk,qkc->qc", w, mem_labels[idx]))
    return torch.cat(out)


def incontext_segmentation(backbone: torch.nn.Module, train_ds, val_ds, fraction: float = 1.0, img_size: int = 504,
                           memory_size: int | None = 102400, k: int = 30, temperature: float = 0.02,
                           augment_passes: int = 2, seed: int = 0, batch_size: int = 16,
                           device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """Hummingbird mIoU (percent) of ``backbone`` on ``val_ds`` with a memory bank built from the
    seeded ``fraction`` of ``train_ds`` (``memory_size=None``: keep every labelled patch). Loop over
    fractions and seeds at the caller."""
    if not 0 < fraction <= 1:
        raise MosicError(f"fraction must be in (0, 1], got {fraction}")
    if train_ds.num_classes != val_ds.num_classes or train_ds.ignore_index != val_ds.ignore_index:
        raise MosicError(f"train set {train_ds.name!r} and val set {val_ds.name!r} differ in classes or ignore index")
    p = backbone.patch_embed.patch_size[0]
    if img_size % p:
        raise MosicError(f"img_size {img_size} is not a multiple of the backbone's patch size {p}")
    train = train_ds.subset(fraction, seed) if fraction < 1 else train_ds
    if len(train) == 0 or len(val_ds) == 0:
        raise MosicError(f"empty data set: train {len(train)} images (fraction {fraction}), val {len(val_ds)} images")
    C, ignore = val_ds.num_classes, val_ds.ignore_index
    mem_feats, mem_labels, budget = build_memory(backbone, train, img_size, memory_size, augment_passes, seed,
                                                 batch_size, device, progress)
    if len(mem_feats) == 0:
        raise MosicError(f"no labelled patch in the {len(train)} training images of {train_ds.name!r}")
    mem_feats, mem_labels = mem_feats.to(device), mem_labels.to(device)
    conf = np.zeros((C, C), np.int64)
    for tok, labels in dataset_features(backbone, val_ds, range(len(val_ds)), img_size, batch_size, device,
                                        progress="in-context: val" if progress else None):
        B, h, w, D = tok.shape
        dist = knn_labels(tok.reshape(-1, D).to(device), mem_feats, mem_labels, k, temperature)
        dist = dist.reshape(B, h, w, C).permute(0, 3, 1, 2)
        for d, lab in zip(dist, labels):
            up = F.interpolate(d[None], size=lab.shape, mode="bilinear", align_corners=False)
            conf += confusion(up[0].argmax(0).cpu().numpy(), lab, C, ignore)
    miou, per_class = miou_from_confusion(conf, ignore)
    return {"miou": 100 * miou, "per_class_iou": iou_list(per_class), "fraction": fraction, "seed": seed,
            "train_images": len(train), "memory": len(mem_feats), "per_image_budget": budget,
            "val_images": len(val_ds), "k": k, "temperature": temperature, "img_size": img_size}
