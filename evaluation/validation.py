"""The interface in-training validation (``train/validate.py``) uses, and the only part of
evaluation that training imports: open a held-out image set, keep a fixed draw of its images in
memory, and score a backbone on it with a scaled-down dense protocol.

- :func:`default_splits`, :func:`open_image_set`, :func:`in_memory`: the image sets;
- :func:`clustering_miou`: frozen clustering (K = the classes, Hungarian matching), 20 K-means
  iterations x 1 restart, one seed (:data:`CLUSTERING`);
- :func:`incontext_miou`: a Hummingbird memory (10,240 patches unless told; the official
  validation's 102,400) from one augmented pass over the given training images, seeded random
  subsets (:data:`INCONTEXT`); :func:`memory_images` says how many images hold it.

Everything else of a protocol is its paper setting (:mod:`mosic.evaluation.settings`).
"""

from __future__ import annotations

from pathlib import Path

from mosic.evaluation.datasets import IMAGE_SPLITS, SegDataset, open_seg_dataset
from mosic.evaluation.settings import ClusteringSettings, IncontextSettings

#: the clustering and in-context settings of a validation (the input size is the training's)
CLUSTERING = ClusteringSettings(niter=20, nredo=1, seeds=(0,), drop_last=())  # every validation image
INCONTEXT = IncontextSettings(memory_size=10_240, augment_passes=1, subsets="random")


def default_splits(kind: str) -> tuple[str, str]:
    """(train split, val split) of an image data set kind (voc | ade20k | synthetic)."""
    return IMAGE_SPLITS[kind]


def open_image_set(kind: str, root: str | Path, split: str) -> SegDataset:
    """An image segmentation set, opened (so a wrong folder fails at once) but not decoded."""
    return open_seg_dataset(kind, root, split)


def in_memory(ds: SegDataset, n: int | None) -> SegDataset:
    """``n`` of ``ds``'s images (a fixed draw; all of them for None), decoded once and kept."""
    sub = ds if n is None or n >= len(ds) else ds.subset(n / len(ds), seed=0)
    samples = [sub[i] for i in range(len(sub))]
    return SegDataset(sub.name, sub.class_names, samples, lambda s: s, sub.root, sub.split)


def clustering_miou(backbone, val: SegDataset, img_size: int, device) -> float:
    """Frozen-clustering mIoU (percent) of ``backbone`` on ``val`` with :data:`CLUSTERING`."""
    from mosic.evaluation.protocols.clustering import frozen_clustering

    s = CLUSTERING.model_copy(update={"img_size": int(img_size)})
    r = frozen_clustering(backbone, val, **s.model_dump(), device=device)
    return float(next(iter(r.values()))["miou"])  # {str(K): {...}}, K = the classes


def memory_images(memory_size: int, img_size: int, patch: int) -> int:
    """The training images whose patches, one augmented pass each, hold ``memory_size`` patches at
    ``img_size`` (102,400 at 224 px, patch 14: 400)."""
    per_image = (int(img_size) // int(patch)) ** 2 * INCONTEXT.augment_passes
    return max(1, -(-int(memory_size) // per_image))


def incontext_miou(backbone, train: SegDataset, val: SegDataset, img_size: int, device,
                   memory_size: int | None = None) -> float:
    """In-context (Hummingbird) mIoU (percent) of ``backbone`` on ``val``, the memory of
    ``memory_size`` patches (None: :data:`INCONTEXT`'s) built from all of ``train``, with
    :data:`INCONTEXT`."""
    from mosic.evaluation.protocols.incontext import incontext_segmentation

    update = {"img_size": int(img_size)}
    if memory_size is not None:
        update["memory_size"] = int(memory_size)
    s = INCONTEXT.model_copy(update=update)
    return float(incontext_segmentation(backbone, train, val, **s.model_dump(), device=device)["miou"])
