"""Linear segmentation (NeCo settings): a 1x1 conv on frozen patch tokens, trained with
cross-entropy against masks resized (nearest) to feat_size x feat_size; mIoU on the val split.

- The train tokens are extracted once (un-normalised, as the backbone returns them) and kept in
  memory as float16 ([N, h, w, D]: about 8 GB for VOC trainaug at 448 px with a ViT-S; use
  ``max_train`` to bound it).
- The head runs on the h x w tokens and its logits are upsampled bilinearly to feat_size: the same
  function as upsampling the tokens first (bilinear interpolation and a 1x1 conv are both linear
  and the interpolation weights sum to 1), at a fraction of the cost.
- Val: logits upsampled bilinearly to each mask's own size, argmax, confusion-matrix mIoU with the
  data set's ignore index.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import trange

from mosic.evaluation.dense import confusion, dataset_features, iou_list, miou_from_confusion, resize_labels
from mosic import MosicError


def linear_segmentation(backbone: nn.Module, train_ds, val_ds, img_size: int = 448, feat_size: int = 100,
                        epochs: int = 25, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                        step_at: int = 20, batch_size: int = 32, device: str | torch.device = "cpu",
                        seed: int = 0, max_train: int | None = None, progress: bool = False) -> dict:
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

    feats, targets = [], []
    for tok, labels in dataset_features(backbone, train_ds, idx, img_size, batch_size, device, normalize=False,
                                        progress="linear: train features" if progress else None):
        feats.append(tok.half())
        targets += [torch.from_numpy(resize_labels(lab, feat_size).astype(np.int16)) for lab in labels]
    feats, targets = torch.cat(feats), torch.stack(targets)

    with torch.random.fork_rng(devices=[]):  # a seeded head, the caller's RNG left alone
        torch.manual_seed(seed)
        head = nn.Conv2d(feats.shape[-1], C, 1).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_at, gamma=0.1)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in trange(epochs, desc="linear: epochs", leave=False, disable=not progress):
        total, n = 0.0, 0
        for b in torch.randperm(len(feats), generator=gen).split(batch_size):
            y = targets[b].to(device).long()
            if not (y != ignore).any():
                continue
            x = feats[b].to(device).float().permute(0, 3, 1, 2)
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
                up = F.interpolate(lg[None], size=lab.shape, mode="bilinear", align_corners=False)
                conf += confusion(up[0].argmax(0).cpu().numpy(), lab, C, ignore)
    miou, per_class = miou_from_confusion(conf, ignore)
    return {"miou": 100 * miou, "per_class_iou": iou_list(per_class), "train_loss": losses,
            "train_images": len(feats), "val_images": len(val_ds), "img_size": img_size, "feat_size": feat_size}
