"""Small building blocks of dense-feature evaluation: patch features, patch labels, label resizing
(one helper per pixel convention, the convention in its name), K-means, confusion-matrix mIoU.
Matching clusters or predictions to classes: :mod:`mosic.evaluation.matching`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mosic.backbones import mean_std
from mosic.evaluation.matching import match_predictions


@torch.no_grad()
def patch_features(backbone: torch.nn.Module, frames: np.ndarray, img_size: int, batch: int = 32,
                   device: str | torch.device = "cpu", normalize: bool = True,
                   std: tuple[float, float, float] | None = None) -> torch.Tensor:
    """uint8 frames [B, H, W, 3] -> L2-normalised patch tokens [B, h, w, D] of a timm ViT, frames
    resized to img_size x img_size and normalised with the mean and std of the backbone's
    ``pretrained_cfg`` (``std`` given: that std instead). ``normalize=False``: the tokens as the
    backbone returns them."""
    backbone = backbone.eval().to(device)
    model_mean, model_std = mean_std(backbone)
    mean = torch.tensor(model_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(tuple(std or model_std), device=device).view(1, 3, 1, 1)
    p = backbone.patch_embed.patch_size[0]
    h = img_size // p
    out = []
    for s in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[s:s + batch])).to(device).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)
        tok = backbone.forward_features((x - mean) / std)[:, backbone.num_prefix_tokens:]
        tok = F.normalize(tok.float(), dim=-1) if normalize else tok.float()
        out.append(tok.reshape(len(x), h, h, -1).cpu())
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


# --- helpers of the image protocols (evaluation/protocols) ------------------------------------


def nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each of ``dst`` output positions, nearest to the output pixel's centre."""
    return np.minimum(((np.arange(dst) + 0.5) * src / dst).astype(np.int64), src - 1)


def resize_labels_centres(labels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest resize of a label map [H, W] to size x size or (h, w), each output pixel taking the
    source pixel under its centre (:func:`nearest_index`); dtype kept. The image protocols'
    convention (linear, clustering, in-context)."""
    h, w = (size, size) if isinstance(size, int) else size
    return labels[nearest_index(labels.shape[0], h)[:, None], nearest_index(labels.shape[1], w)[None, :]]


def resize_labels_floor(labels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest resize of label maps [B, H, W] to [B, size, size] (int64), each output pixel i taking
    source pixel floor(i * H / size) (torch's ``interpolate(mode="nearest")``, as TimeTuning resizes
    its masks). The video protocol's convention."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    labels = np.asarray(labels)
    if tuple(labels.shape[1:]) == size:
        return labels.astype(np.int64)
    t = torch.from_numpy(labels.astype(np.int64))[:, None].float()
    return F.interpolate(t, size=size, mode="nearest")[:, 0].long().numpy()


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of a uint8 RGB image [H, W, 3] to size x size or (h, w)."""
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def check_sample(sample, num_classes: int, ignore_index: int) -> None:
    """Raise MosicError naming the sample when its image or label map is malformed."""
    from mosic import MosicError

    img, lab = sample.image, sample.label
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise MosicError(f"sample {sample.id!r}: image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
    if lab.shape != img.shape[:2]:
        raise MosicError(f"sample {sample.id!r}: label map {lab.shape} does not match image {img.shape[:2]}")
    bad = (lab != ignore_index) & ((lab < 0) | (lab >= num_classes))
    if bad.any():
        raise MosicError(f"sample {sample.id!r}: label value {int(lab[bad][0])} is outside 0..{num_classes - 1} "
                         f"and is not the ignore index {ignore_index}")


def dataset_features(backbone: torch.nn.Module, ds, indices, img_size: int, batch: int = 32,
                     device: str | torch.device = "cpu", normalize: bool = True, progress: str | None = None,
                     std: tuple[float, float, float] | None = None):
    """Yield (patch tokens [B, h, w, D], label maps at their own size) over ``ds[indices]`` in
    batches; images square-resized to img_size (bilinear), tokens by :func:`patch_features`.
    ``progress``: a tqdm bar with this description."""
    indices = list(indices)
    starts = range(0, len(indices), batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", dynamic_ncols=True, leave=False)
    for s in starts:
        samples = [ds[i] for i in indices[s:s + batch]]
        for smp in samples:
            check_sample(smp, ds.num_classes, ds.ignore_index)
        images = np.stack([resize_image(smp.image, img_size) for smp in samples])
        tokens = patch_features(backbone, images, img_size, batch, device, normalize=normalize, std=std)
        yield tokens, [smp.label for smp in samples]


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255,
              num_pred: int | None = None) -> np.ndarray:
    """Confusion matrix [num_classes, num_pred] (rows: ground truth, columns: prediction, int64)
    over the pixels whose ground truth is not ``ignore_index``. ``num_pred`` (default num_classes)
    allows cluster ids as predictions."""
    from mosic import MosicError

    num_pred = num_classes if num_pred is None else num_pred
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"pred and gt differ in size: {pred.size} vs {gt.size}")
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise MosicError(f"ground-truth label {int(gt[(gt < 0) | (gt >= num_classes)][0])} is outside "
                         f"0..{num_classes - 1} and is not the ignore index {ignore_index}")
    if pred.size and (pred.min() < 0 or pred.max() >= num_pred):
        raise ValueError(f"prediction outside 0..{num_pred - 1}")
    return np.bincount(gt * num_pred + pred, minlength=num_classes * num_pred).reshape(num_classes, num_pred)


def miou_from_confusion(conf: np.ndarray, ignore_index: int | None = None) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU) from a confusion matrix [C, C'] (C' >= C; columns past C are
    predictions that count for no class, e.g. unmatched clusters). IoU_c = TP / (GT + P - TP); a
    class is scored when its union is non-empty (so predicting an absent class costs) and it is
    not ``ignore_index`` (a data set may ignore a class, e.g. 0); unscored classes are NaN in the
    per-class IoU. mIoU is a fraction in [0, 1] (NaN if no class is scored)."""
    C = conf.shape[0]
    conf = conf.astype(np.float64)
    tp = np.diag(conf[:, :C])
    union = conf.sum(1) + conf[:, :C].sum(0) - tp
    iou = np.full(C, np.nan)
    scored = union > 0
    if ignore_index is not None and 0 <= ignore_index < C:
        scored[ignore_index] = False
    iou[scored] = tp[scored] / union[scored]
    return (float(iou[scored].mean()) if scored.any() else float("nan")), iou


def confusion_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                   ignore_index: int = 255) -> tuple[float, np.ndarray]:
    """mIoU of class predictions ``pred`` against ``gt`` (same shape), pixels with gt ==
    ignore_index not counted: see :func:`confusion` and :func:`miou_from_confusion`."""
    return miou_from_confusion(confusion(pred, gt, num_classes, ignore_index), ignore_index)


def iou_list(per_class: np.ndarray) -> list:
    """Per-class IoU as JSON-safe percentages (None for unscored classes)."""
    return [None if np.isnan(v) else round(100 * float(v), 2) for v in per_class]


#: how :func:`scored_miou` assigns predicted labels to classes
MATCHINGS = ("hungarian", "hungarian_overlap", "none")


def scored_miou(conf: np.ndarray, ignore_index: int | None = None, matching: str = "none",
                absent: str = "skip") -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU) of predictions with overlap counts ``conf`` [C, P] (P >= C; a column
    past C is a label that is no class). ``matching="hungarian"``: predicted labels are first
    assigned to classes by :func:`~mosic.evaluation.matching.match_predictions` on 1 - IoU (as
    open-hummingbird-eval); ``"hungarian_overlap"``: on the pixels in agreement (mosic's earlier
    rule); ``"none"``: label c is class c.
    ``absent="zero"``: a class that is neither present nor predicted scores 0 and counts in the
    mean (the reference in-context scorer); ``"skip"``: it is left out (NaN). An ignore index
    inside 0..C-1 is never scored."""
    from mosic import MosicError

    if matching not in MATCHINGS:
        raise MosicError(f"matching must be one of {', '.join(MATCHINGS)}, got {matching!r}")
    if absent not in ("skip", "zero"):
        raise MosicError(f"absent must be 'skip' or 'zero', got {absent!r}")
    C, P = conf.shape
    if matching != "none":
        mapping = match_predictions(conf, "overlap" if matching == "hungarian_overlap" else "one_minus_iou")
        matched = np.zeros((C, C + 1), np.int64)
        for p in range(P):
            matched[:, mapping[p] if mapping[p] >= 0 else C] += conf[:, p]
        conf = matched
    miou, iou = miou_from_confusion(conf, ignore_index)
    if absent == "zero":
        iou = np.where(np.isnan(iou), 0.0, iou)
        if ignore_index is not None and 0 <= ignore_index < C:
            iou[ignore_index] = np.nan
        scored = ~np.isnan(iou)
        miou = float(iou[scored].mean()) if scored.any() else float("nan")
    return miou, iou


# data sets whose reference scorers average one more row than mosic's classes: open-hummingbird-eval
# and NeCo build ADE20K with 151 classes, keep class 0 ('other') as an ignored row that always
# scores 0, and divide the sum of IoUs by 151; mosic's ADE20K has the 150 real classes
REFERENCE_ZERO_ROWS = {"ade20k": 1}
CLASS_ROWS = ("reference", "classes")


def rows_mean(per_class: np.ndarray, dataset: str, class_rows: str = "reference") -> tuple[float, int]:
    """(mIoU as a fraction, number of rows averaged) from per-class IoUs (NaN = not scored).
    ``class_rows="reference"``: the scored classes plus the data set's always-zero rows of the
    reference scorers (:data:`REFERENCE_ZERO_ROWS`: ADE20K's ignored 'other', so 150 scored classes
    are divided by 151); ``"classes"``: the scored classes only."""
    from mosic import MosicError

    if class_rows not in CLASS_ROWS:
        raise MosicError(f"class_rows must be one of {', '.join(CLASS_ROWS)}, got {class_rows!r}")
    iou = np.asarray(per_class, dtype=np.float64)
    scored = iou[~np.isnan(iou)]
    extra = REFERENCE_ZERO_ROWS.get(str(dataset).lower(), 0) if class_rows == "reference" else 0
    n = len(scored) + extra
    return (float(scored.sum() / n) if len(scored) else float("nan")), n
