"""In-context scene understanding (Hummingbird, Balazevic et al. 2023): dense nearest-neighbour
retrieval of patch labels from a memory bank of annotated training patches.

The defaults are the settings behind the published figures (open-hummingbird-eval 2.0.0, the
standalone evaluation of the MoSiC paper); every choice where mosic had a cleaner variant is a
setting, and the variant is named below.

Memory: ``augment_passes`` (2) passes over the training images (a fraction of the train split:
:mod:`mosic.evaluation.file_sets` gives the reference's fixed lists); each image is augmented,
resized to img_size x img_size, and its L2-normalised patch tokens are stored (float16) with soft
labels (the mean one-hot class vector of its pixels).

- ``memory_ignore``: what an ignore pixel (255) is in the memory's labels. ``"background"``
  (reference, VOC): class 0; ``"class"``: one more label, which a prediction can take and which
  counts for no class (the reference on ADE20K, whose "other" is a label of the memory);
  ``"drop"`` (mosic): it contributes nothing. ``"auto"`` (default): background when class 0 is
  named "background", else "class".
- ``sampling``: which K = memory_size // (images x passes) patches of an image enter the memory.
  ``"reference"``: K is not clamped to the labelled patches; each patch scores the sum, over the
  classes present in it, of the number of the image's patches containing that class, times
  U(0, 1); patches with no label score last; the K smallest are kept (favours rare classes; all
  patches when K exceeds them). ``"inverse_frequency"`` (mosic): at most K labelled patches drawn
  without replacement with weight 1 / (patches of the same majority class). (Unlabelled patches
  only exist with ``memory_ignore="drop"``; they carry a zero label vote, so pair "drop" with
  "inverse_frequency", which leaves them out.)
- ``augmentation``: ``"reference"``: colour jitter (brightness, contrast, saturation, hue, 0.1
  each, each applied with probability 0.5) on the whole image, then torchvision's
  RandomResizedCrop(img_size, scale ``crop_scale`` = (0.5, 2.0), ratio 3/4-4/3) of image and labels,
  no flip. ``"mosic"``: the crop first, then brightness, contrast, saturation jitter (no hue).
  (Crop draws whose area exceeds the image never fit: torchvision redraws, up to 10 times, then
  takes the centre crop.)
- ``std``: the image normalisation's standard deviation; the reference uses (0.229, 0.224,
  0.255), a typo of ImageNet's (0.229, 0.224, 0.225) (mosic's cleaner variant).

Search: the k (30) nearest memory patches of each val patch by dot product, exact, in chunks of
queries and of memory rows (``search="torch"``: matmul + top-k, float16 on a GPU, float32 per
memory chunk on a CPU; ``"faiss"``: an exact faiss inner-product index, on the GPU with float16
storage where faiss has GPUs; ``"auto"``, the default: faiss on the GPU when the device is a GPU and
the installed faiss has GPUs, else torch). Weights softmax(similarity / 0.02), label distributions averaged,
upsampled bilinearly, argmax.

Scoring: ``val_resolution="input"`` (reference): val images and masks resized to img_size and
scored there; ``"original"`` (mosic): predictions upsampled to each mask's own size.
``matching="hungarian"`` (reference, ``eval_metrics.py``): predicted labels are assigned to
ground-truth classes by the Hungarian algorithm on 1 - IoU before the IoUs;
``"hungarian_overlap"`` (mosic's earlier rule): on the pixels in agreement, which can pick another
assignment; ``"none"``: label c is class c.
``absent_classes="zero"`` (reference): a class neither present nor predicted scores 0 in the mean;
``"skip"``: it is left out. Ignore pixels are never scored. ``class_rows="reference"``: the mean
divides by the reference's number of rows (ADE20K: 151, its ignored 'other' row scoring 0;
:func:`mosic.evaluation.dense.rows_mean`); ``"classes"``: by the classes scored (ADE20K: 150).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mosic import MosicError
from mosic.evaluation.dense import (check_sample, confusion, dataset_features, iou_list, patch_features, resize_image,
                                    resize_labels_centres, scored_miou, rows_mean)
from mosic.evaluation.settings import HUMMINGBIRD_STD, IncontextSettings

_P = IncontextSettings()  # the paper's settings: the keyword defaults of incontext_segmentation

SAMPLINGS = ("reference", "inverse_frequency")
AUGMENTATIONS = ("reference", "mosic")
MEMORY_IGNORE = ("auto", "background", "class", "drop")
SEARCHES = ("auto", "torch", "faiss")


# ------------------------------------------------------------------------------------------------
# augmentation
# ------------------------------------------------------------------------------------------------
def _gray(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114], np.float32)


def crop_box(H: int, W: int, rng: np.random.Generator, scale: tuple[float, float],
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop's box (top, left, height, width): area a uniform fraction
    ``scale`` of the image, log-uniform aspect ratio, 10 tries, then the centre crop with the ratio
    clamped to ``ratio``."""
    for _ in range(10):
        area = H * W * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * r)), round(math.sqrt(area / r))
        if 0 < cw <= W and 0 < ch <= H:
            return int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1)), ch, cw
    in_ratio = W / H
    if in_ratio < min(ratio):
        w, h = W, int(round(W / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = H, int(round(H * max(ratio)))
    else:
        w, h = W, H
    return (H - h) // 2, (W - w) // 2, h, w


def colour_jitter(img: np.ndarray, rng: np.random.Generator, jitter: float = 0.1, p_jitter: float = 0.5,
                  hue: float = 0.0) -> np.ndarray:
    """Brightness, contrast, saturation (factors in [1 - jitter, 1 + jitter]) and, with ``hue`` > 0,
    a hue shift in [-hue, hue] of the colour circle: each applied with probability ``p_jitter``.
    uint8 [H, W, 3] in, uint8 out."""
    x = img.astype(np.float32)
    if rng.random() < p_jitter:  # brightness
        x = np.clip(x * rng.uniform(1 - jitter, 1 + jitter), 0, 255)
    if rng.random() < p_jitter:  # contrast
        m = _gray(x).mean()
        x = np.clip((x - m) * rng.uniform(1 - jitter, 1 + jitter) + m, 0, 255)
    if rng.random() < p_jitter:  # saturation
        g = _gray(x)[..., None]
        x = np.clip(g + (x - g) * rng.uniform(1 - jitter, 1 + jitter), 0, 255)
    out = np.rint(x).astype(np.uint8)
    if hue > 0 and rng.random() < p_jitter:
        import cv2

        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL)  # hue in 0..255 = the whole circle
        shift = int(round(rng.uniform(-hue, hue) * 256))
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 256).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return out


def augment(image: np.ndarray, label: np.ndarray, size: int, rng: np.random.Generator,
            scale: tuple[float, float] = (0.5, 2.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
            jitter: float = 0.1, p_jitter: float = 0.5, mode: str = "reference") -> tuple[np.ndarray, np.ndarray]:
    """One augmented view (image bilinear, label nearest) at size x size: ``mode="reference"``:
    colour jitter with hue on the whole image, then the random resized crop; ``"mosic"``: the crop,
    then jitter without hue."""
    if mode not in AUGMENTATIONS:
        raise MosicError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {mode!r}")
    if mode == "reference":
        image = colour_jitter(image, rng, jitter, p_jitter, hue=jitter)
    i, j, h, w = crop_box(*label.shape, rng, scale, ratio)
    img = resize_image(np.ascontiguousarray(image[i:i + h, j:j + w]), size)
    lab = resize_labels_centres(label[i:i + h, j:j + w], size)
    if mode == "mosic":
        img = colour_jitter(img, rng, jitter, p_jitter)
    return img, lab


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------
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
    """mosic's sampling: indices of at most ``budget`` patches with a label (rows of ``soft``
    [P, C] that are not all zero), drawn without replacement with weight 1 / (count of the patch's
    majority class)."""
    valid = soft.sum(1) > 0
    n = min(budget, int(valid.sum()))
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    major = soft.argmax(1)
    freq = torch.bincount(major[valid], minlength=soft.shape[1]).float()
    weight = torch.where(valid, 1 / freq[major].clamp(min=1), torch.zeros(()))
    return torch.multinomial(weight, n, replacement=False, generator=gen)


def reference_patch_scores(soft: torch.Tensor) -> torch.Tensor:
    """The reference's rarity score of each patch before the random factor: the sum, over the
    classes present in the patch, of the number of the image's patches that contain that class;
    +inf for a patch without any label."""
    present = soft > 0
    freq = present.sum(0).float()  # patches containing each class
    score = (present.float() * freq).sum(1)
    return torch.where(present.any(1), score, torch.full_like(score, float("inf")))


def sample_patches_reference(soft: torch.Tensor, budget: int, gen: torch.Generator) -> torch.Tensor:
    """The reference's sampling: the ``budget`` patches (all of them if the image has fewer) with
    the smallest rarity score x U(0, 1); unlabelled patches come last but are kept when the budget
    exceeds the labelled ones."""
    score = reference_patch_scores(soft) * torch.rand(len(soft), generator=gen)
    n = min(budget, len(soft))
    return torch.sort(score, stable=True).indices[:n]


def _memory_labels(label: np.ndarray, num_classes: int, ignore: int, memory_ignore: str) -> tuple[np.ndarray, int]:
    """Label map as the memory sees it, and the number of memory labels."""
    if memory_ignore == "background":
        return np.where(label == ignore, 0, label), num_classes
    if memory_ignore == "class":
        return np.where(label == ignore, num_classes, label), num_classes + 1
    return label, num_classes


def resolve_memory_ignore(memory_ignore: str, class_names: Sequence[str]) -> str:
    if memory_ignore not in MEMORY_IGNORE:
        raise MosicError(f"memory_ignore must be one of {', '.join(MEMORY_IGNORE)}, got {memory_ignore!r}")
    if memory_ignore == "auto":
        return "background" if class_names and str(class_names[0]).lower() == "background" else "class"
    return memory_ignore


def build_memory(backbone: torch.nn.Module, ds, img_size: int, memory_size: int | None, augment_passes: int,
                 seed: int, batch_size: int = 16, device: str | torch.device = "cpu", progress: bool = False,
                 sampling: str = "reference", augmentation: str = "reference",
                 crop_scale: tuple[float, float] = (0.5, 2.0), std: tuple[float, float, float] = HUMMINGBIRD_STD,
                 memory_ignore: str = "auto", dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features [M, D] in ``dtype`` on ``device``, soft labels [M, L] float16, per-image budget K)
    of the memory bank over all of ``ds``; L is the number of classes, plus one with
    ``memory_ignore="class"``. The tensors are allocated once at their largest size."""
    if sampling not in SAMPLINGS:
        raise MosicError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    mode = resolve_memory_ignore(memory_ignore, getattr(ds, "class_names", []))
    C, ignore = ds.num_classes, ds.ignore_index
    p = backbone.patch_embed.patch_size[0]
    grid = img_size // p
    P = grid * grid
    n_views = len(ds) * augment_passes
    budget = P if memory_size is None else max(1, memory_size // n_views)
    if sampling == "inverse_frequency":
        budget = min(budget, P)
    per_image = min(budget, P)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    L = C + (mode == "class")
    feats = labels = None
    n = 0
    bar = tqdm(total=n_views, desc="in-context: memory", unit="image", leave=False, disable=not progress)
    for _ in range(augment_passes):
        for s in range(0, len(ds), batch_size):
            images, soft = [], []
            for i in range(s, min(s + batch_size, len(ds))):
                smp = ds[i]
                check_sample(smp, C, ignore)
                img, lab = augment(smp.image, smp.label, img_size, rng, scale=tuple(crop_scale), mode=augmentation)
                lab, _ = _memory_labels(lab, C, ignore, mode)
                images.append(img)
                soft.append(soft_patch_labels(lab, grid, L, ignore))
            tok = patch_features(backbone, np.stack(images), img_size, batch_size, device, std=std)
            if feats is None:
                feats = torch.empty(n_views * per_image, tok.shape[-1], dtype=dtype, device=device)
                labels = torch.empty(n_views * per_image, L, dtype=torch.float16, device=device)
            for t, sl in zip(tok.reshape(len(images), P, -1), soft):
                keep = (sample_patches_reference if sampling == "reference" else sample_patches)(sl, budget, gen)
                m = len(keep)
                feats[n:n + m] = t[keep].to(device=device, dtype=dtype)
                labels[n:n + m] = sl[keep].to(device=device, dtype=torch.float16)
                n += m
            bar.update(len(images))
    bar.close()
    if feats is None:
        return torch.zeros(0, 1), torch.zeros(0, L), budget
    return feats[:n], labels[:n], budget


# ------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def knn_search(queries: torch.Tensor, mem_feats: torch.Tensor, k: int, chunk_elems: int | None = None,
               mem_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest memory rows of each query by dot product: (similarities [Q, k] float32,
    indices [Q, k]), best first. Works in chunks: ``mem_chunk`` memory rows at a time (each cast
    once to float32 on a CPU; on a GPU the product runs in the memory's dtype, float16), against
    ``chunk_elems // mem_chunk`` queries at a time, keeping a running top-k per query. Defaults: GPU
    2M rows x 1,024 queries, CPU 256k rows x 256 queries."""
    M = len(mem_feats)
    k = min(k, M)
    cuda = mem_feats.device.type == "cuda"
    mc = min(M, mem_chunk or (2 ** 21 if cuda else 2 ** 18))
    qc = max(1, (chunk_elems or (2 ** 31 if cuda else 2 ** 26)) // mc)
    q_all = queries.to(mem_feats.device, mem_feats.dtype if cuda else torch.float32)
    top_s = top_i = None
    for m0 in range(0, M, mc):
        block = mem_feats[m0:m0 + mc]
        block = block if cuda else block.float()
        kk = min(k, len(block))
        ss, ii = [], []
        for q in q_all.split(qc):
            s, i = (q @ block.T).topk(kk, dim=1)
            ss.append(s.float())
            ii.append(i + m0)
        s, i = torch.cat(ss), torch.cat(ii)
        if top_s is not None:
            s, j = torch.cat([top_s, s], 1).topk(k, dim=1)
            i = torch.cat([top_i, i], 1).gather(1, j)
        top_s, top_i = s, i
    return top_s, top_i


def faiss_gpus() -> int:
    try:
        import faiss
    except ImportError:
        return 0
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


class FaissSearch:
    """An exact faiss inner-product index over the memory (on the GPU with float16 storage where
    faiss has GPUs, else on the CPU in float32), filled in chunks."""

    def __init__(self, mem_feats: torch.Tensor, chunk: int = 2 ** 20):
        import faiss

        D = mem_feats.shape[1]
        gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if gpu:
            self.res = faiss.StandardGpuResources()
            cfg = faiss.GpuIndexFlatConfig()
            cfg.useFloat16 = True
            self.index = faiss.GpuIndexFlatIP(self.res, D, cfg)
        else:
            self.index = faiss.IndexFlatIP(D)
        for m0 in range(0, len(mem_feats), chunk):
            self.index.add(np.ascontiguousarray(mem_feats[m0:m0 + chunk].float().cpu().numpy()))

    def __call__(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, i = self.index.search(np.ascontiguousarray(queries.float().cpu().numpy()), min(k, self.index.ntotal))
        return torch.from_numpy(s), torch.from_numpy(i)


@torch.no_grad()
def knn_labels(queries: torch.Tensor, mem_feats: torch.Tensor, mem_labels: torch.Tensor, k: int,
               temperature: float, chunk_elems: int | None = None, searcher=None) -> torch.Tensor:
    """Label distribution [Q, L] (float32) of each query [Q, D]: softmax(sim / temperature) over its
    k nearest memory rows (dot product, :func:`knn_search` or ``searcher``) applied to their labels."""
    sim, idx = searcher(queries, k) if searcher is not None else knn_search(queries, mem_feats, k, chunk_elems)
    w = torch.softmax(sim / temperature, dim=1).to(mem_labels.device)
    return torch.einsum("qk,qkc->qc", w, mem_labels[idx.to(mem_labels.device)].float())


# ------------------------------------------------------------------------------------------------
# the protocol
# ------------------------------------------------------------------------------------------------
def incontext_segmentation(backbone: torch.nn.Module, train_ds, val_ds, fraction: float = _P.fraction,
                           img_size: int = _P.img_size, memory_size: int | None = _P.memory_size, k: int = _P.k,
                           temperature: float = _P.temperature, augment_passes: int = _P.augment_passes,
                           seed: int = _P.seed, batch_size: int = _P.batch_size, subsets: str = _P.subsets,
                           sampling: str = _P.sampling, augmentation: str = _P.augmentation,
                           crop_scale: Sequence[float] = _P.crop_scale, std: Sequence[float] = _P.std,
                           memory_ignore: str = _P.memory_ignore, memory_dtype: str = _P.memory_dtype,
                           search: str = _P.search, val_resolution: str = _P.val_resolution,
                           matching: str = _P.matching, absent_classes: str = _P.absent_classes,
                           class_rows: str = _P.class_rows, device: str | torch.device = "cpu",
                           progress: bool = False) -> dict:
    """Hummingbird mIoU (percent) of ``backbone`` on ``val_ds`` with a memory bank built from
    ``fraction`` of ``train_ds`` (``memory_size=None``: keep every patch). ``subsets="reference"``:
    the reference's fixed file list for this data set, split, fraction and ``seed`` where there is
    one (:mod:`mosic.evaluation.file_sets`), else a seeded random draw; ``"random"``: always the
    seeded draw. Loop over fractions and seeds at the caller. See the module docstring for the
    other settings."""
    from mosic.evaluation.file_sets import training_subset

    if not 0 < fraction <= 1:
        raise MosicError(f"fraction must be in (0, 1], got {fraction}")
    if train_ds.num_classes != val_ds.num_classes or train_ds.ignore_index != val_ds.ignore_index:
        raise MosicError(f"train set {train_ds.name!r} and val set {val_ds.name!r} differ in classes or ignore index")
    p = backbone.patch_embed.patch_size[0]
    if img_size % p:
        raise MosicError(f"img_size {img_size} is not a multiple of the backbone's patch size {p}")
    for name, v, allowed in (("search", search, SEARCHES), ("val_resolution", val_resolution, ("input", "original")),
                             ("memory_dtype", memory_dtype, ("float16", "float32")),
                             ("subsets", subsets, ("reference", "random"))):
        if v not in allowed:
            raise MosicError(f"{name} must be one of {', '.join(allowed)}, got {v!r}")
    train, subset_source = training_subset(train_ds, fraction, seed, subsets)
    if len(train) == 0 or len(val_ds) == 0:
        raise MosicError(f"empty data set: train {len(train)} images (fraction {fraction}), val {len(val_ds)} images")
    C, ignore = val_ds.num_classes, val_ds.ignore_index
    mode = resolve_memory_ignore(memory_ignore, train_ds.class_names)
    dtype = torch.float16 if memory_dtype == "float16" else torch.float32
    std = tuple(float(s) for s in std)
    mem_feats, mem_labels, budget = build_memory(backbone, train, img_size, memory_size, augment_passes, seed,
                                                 batch_size, device, progress, sampling=sampling,
                                                 augmentation=augmentation, crop_scale=tuple(crop_scale), std=std,
                                                 memory_ignore=mode, dtype=dtype)
    if len(mem_feats) == 0 or not (mem_labels.float().sum(1) > 0).any():
        raise MosicError(f"no labelled patch in the {len(train)} training images of {train_ds.name!r}")
    if search == "auto":
        search = "faiss" if torch.device(device).type == "cuda" and faiss_gpus() > 0 else "torch"
    searcher = None
    if search == "faiss":
        searcher = FaissSearch(mem_feats)
        mem_feats = mem_feats[:0]  # the index holds its own copy
    L = mem_labels.shape[1]
    conf = np.zeros((C, L), np.int64)
    for tok, labels in dataset_features(backbone, val_ds, range(len(val_ds)), img_size, batch_size, device,
                                        progress="in-context: val" if progress else None, std=std):
        B, h, w, D = tok.shape
        dist = knn_labels(tok.reshape(-1, D), mem_feats, mem_labels, k, temperature, searcher=searcher)
        dist = dist.reshape(B, h, w, L).permute(0, 3, 1, 2)
        for d, lab in zip(dist, labels):
            if val_resolution == "input":
                lab = resize_labels_centres(lab, img_size)
            up = F.interpolate(d[None], size=lab.shape, mode="bilinear", align_corners=False)
            conf += confusion(up[0].argmax(0).cpu().numpy(), lab, C, ignore, num_pred=L)
    _, per_class = scored_miou(conf, ignore, matching, absent_classes)
    miou, rows = rows_mean(per_class, val_ds.name, class_rows)
    return {"miou": 100 * miou, "per_class_iou": iou_list(per_class), "rows_averaged": rows, "fraction": fraction,
            "seed": seed,
            "train_images": len(train), "subset": subset_source, "memory": len(mem_labels), "search_used": search,
            "per_image_budget": budget, "memory_ignore_used": mode, "val_images": len(val_ds), "k": k,
            "temperature": temperature, "img_size": img_size}
