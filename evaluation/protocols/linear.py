"""Linear segmentation (NeCo settings): a 1x1 conv on frozen patch tokens, trained with
cross-entropy against masks resized (nearest) to feat_size x feat_size (100); mIoU on the val split.

- Training augmentation (NeCo ``linear_finetune.py``, the default ``augment=True``): each image, in
  every epoch, gets a random resized crop (torchvision's: area ``crop_scale`` = 0.8-1 of the image,
  aspect ratio 3/4-4/3) resized to img_size (448), and a horizontal flip with probability 0.5; its
  tokens are recomputed for every augmented view (one backbone pass per image and epoch).
  ``augment=False`` (mosic's fast variant): the tokens of the plain resized images are extracted once
  and kept in memory as float16 ([N, h, w, D]: about 8 GB for VOC trainaug at 448 px with a ViT-S;
  ``max_train`` bounds it).
- The head runs on the h x w tokens and its logits are upsampled bilinearly to feat_size: the same
  function as upsampling the tokens first (bilinear interpolation and a 1x1 conv are both linear
  and the interpolation weights sum to 1), at a fraction of the cost.
- SGD (lr 0.01, momentum 0.9, weight decay 1e-4), batch 128, 25 epochs, learning rate x0.1 after 20.
- Val: masks resized (nearest) to ``val_mask_size`` x ``val_mask_size`` (100, NeCo) and logits
  upsampled bilinearly to it (``val_mask_size=None``: to each mask's own size), argmax,
  confusion-matrix mIoU with the data set's ignore index; ADE20K's mean over 151 rows as NeCo
  (``class_rows="reference"``: its ignored class 0 is a row that scores 0), or over the 150 classes
  (``class_rows="classes"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import trange

from mosic import MosicError
from mosic.evaluation.dense import (check_sample, confusion, dataset_features, iou_list, miou_from_confusion,
                                    patch_features, resize_image, resize_labels_centres, rows_mean)
from mosic.evaluation.settings import LinearSettings

_P = LinearSettings()  # the paper's settings: the keyword defaults below


def augmented_view(image: np.ndarray, label: np.ndarray, img_size: int, feat_size: int, rng: np.random.Generator,
                   crop_scale: Sequence[float] = (0.8, 1.0), flip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """NeCo's training view: random resized crop (image bilinear to img_size, mask nearest to
    feat_size) and a horizontal flip with probability 0.5 when ``flip``."""
    from mosic.evaluation.protocols.incontext import crop_box

    i, j, h, w = crop_box(*label.shape, rng, tuple(crop_scale))
    img = resize_image(np.ascontiguousarray(image[i:i + h, j:j + w]), img_size)
    lab = resize_labels_centres(label[i:i + h, j:j + w], feat_size)
    if flip and rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def linear_segmentation(backbone: nn.Module, train_ds, val_ds, img_size: int = _P.img_size,
                        feat_size: int = _P.feat_size, epochs: int = _P.epochs, lr: float = _P.lr,
                        momentum: float = _P.momentum, weight_decay: float = _P.weight_decay,
                        step_at: int = _P.step_at, batch_size: int = _P.batch_size, augment: bool = _P.augment,
                        crop_scale: Sequence[float] = _P.crop_scale, flip: bool = _P.flip,
                        val_mask_size: int | None = _P.val_mask_size, device: str | torch.device = "cpu",
                        seed: int = _P.seed, max_train: int | None = _P.max_train, class_rows: str = _P.class_rows,
                        progress: bool = False) -> dict:
    """Train a linear head on frozen patch tokens of ``train_ds`` and score it on ``val_ds``.
    SGD with momentum, learning rate x0.1 after ``step_at`` epochs; ``max_train``: train on a
    seeded random subset of that many images. Returns mIoU (percent), per-class IoU (percent; None
    for a class neither present nor predicted in val) and the per-epoch mean train loss."""
    if train_ds.num_classes != val_ds.num_classes or train_ds.ignore_index != val_ds.ignore_index:
        raise MosicError(f"train set {train_ds.name!r} and val set {val_ds.name!r} differ in classes or ignore index")
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise MosicError(f"empty data set: train {len(train_ds)} images, val {len(val_ds)} images")
    C, ignore = train_ds.num_classes, train_ds.ignore_index
    rng = np.random.default_rng(seed)
    idx = np.arange(len(train_ds))
    if max_train is not None and max_train < len(idx):
        idx = np.sort(rng.choice(idx, max_train, replace=False))

    feats = targets = None
    if not augment:
        feats, targets = [], []
        for tok, labels in dataset_features(backbone, train_ds, idx, img_size, batch_size, device, normalize=False,
                                            progress="linear: train features" if progress else None):
            feats.append(tok.half())
            targets += [torch.from_numpy(resize_labels_centres(lab, feat_size).astype(np.int16)) for lab in labels]
        feats, targets = torch.cat(feats), torch.stack(targets)
    aug_rng = np.random.default_rng([seed, 1])

    def batch_views(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens [B, h, w, D] and masks [B, feat_size, feat_size] of a batch (positions into idx)."""
        if not augment:
            return feats[b], targets[b]
        imgs, labs = [], []
        for j in b.tolist():
            smp = train_ds[int(idx[j])]
            check_sample(smp, C, ignore)
            img, lab = augmented_view(smp.image, smp.label, img_size, feat_size, aug_rng, crop_scale, flip)
            imgs.append(img)
            labs.append(torch.from_numpy(lab.astype(np.int16)))
        return patch_features(backbone, np.stack(imgs), img_size, len(imgs), device, normalize=False), torch.stack(labs)

    with torch.random.fork_rng(devices=[]):  # a seeded head, the caller's RNG left alone
        torch.manual_seed(seed)
        dim = feats.shape[-1] if feats is not None else getattr(backbone, "embed_dim", None)
        if dim is None:
            dim = batch_views(torch.zeros(1, dtype=torch.long))[0].shape[-1]
        head = nn.Conv2d(dim, C, 1).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_at, gamma=0.1)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in trange(epochs, desc="linear: epochs", leave=False, disable=not progress):
        total, n = 0.0, 0
        for b in torch.randperm(len(idx), generator=gen).split(batch_size):
            x, y = batch_views(b)
            y = y.to(device).long()
            if not (y != ignore).any():
                continue
            x = x.to(device).float().permute(0, 3, 1, 2)
            logits = F.interpolate(head(x), size=(feat_size, feat_size), mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y, ignore_index=ignore)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        sched.step()
        losses.append(total / max(n, 1))

    head.eval()
    conf = np.zeros((C, C), np.int64)
    with torch.no_grad():
        for tok, labels in dataset_features(backbone, val_ds, range(len(val_ds)), img_size, batch_size, device,
                                            normalize=False, progress="linear: val" if progress else None):
            logits = head(tok.to(device).permute(0, 3, 1, 2))
            for lg, lab in zip(logits, labels):
                if val_mask_size:
                    lab = resize_labels_centres(lab, val_mask_size)
                up = F.interpolate(lg[None], size=lab.shape, mode="bilinear", align_corners=False)
                conf += confusion(up[0].argmax(0).cpu().numpy(), lab, C, ignore)
    _, per_class = miou_from_confusion(conf, ignore)
    miou, rows = rows_mean(per_class, val_ds.name, class_rows)  # ADE20K: over 151 rows as NeCo
    return {"miou": 100 * miou, "per_class_iou": iou_list(per_class), "rows_averaged": rows, "train_loss": losses,
            "train_images": len(idx), "val_images": len(val_ds), "img_size": img_size, "feat_size": feat_size}
