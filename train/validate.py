"""In-training validation: every ``validate.every`` optimiser steps (step 0 included) and at the
end, a quick dense protocol on a held-out image set scores the teacher's backbone (or the
student's). The official training validates too, differently: a Hummingbird in-context run of
the student on Pascal VOC val at the start of every epoch, on every rank (docs/recipes.md, the
deviation table). Here rank 0 only; the other ranks wait in the next step's collectives for the
time the validation itself takes.

- ``clustering``: K-means of the patch tokens (standardised, PCA 50; K = the classes, Hungarian
  matching), 20 iterations x 1 restart, one seed: :func:`mosic.evaluation.validation.clustering_miou`;
- ``incontext``: a Hummingbird memory of ``memory_size`` patches (10,240; ``ytvos-official``:
  102,400, as the official) from ``memory_images`` training images (None: as many as hold the
  memory, 400 at 102,400 and 224 px), one augmented pass, k 30:
  :func:`mosic.evaluation.validation.incontext_miou`.

Evaluation is reached only through :mod:`mosic.evaluation.validation`, its interface for training.

The same ``max_images`` validation images every time (a fixed draw), decoded once and kept in
memory, at the training input size. Each validation is a row of ``log.jsonl`` (``"kind":
"validation"``, ``val_<protocol>`` in percent, ``val_seconds``), TensorBoard scalars ``val/...``
when it is on, and ``validation.png``, the curve so far, redrawn from ``log.jsonl`` so a resumed
run keeps its curve.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from mosic import MosicError
from mosic.evaluation import validation
from mosic.train.run_log import read_log

log = logging.getLogger("mosic.train")

PROTOCOLS = ("clustering", "incontext")


def _defaults(vs, cfg) -> tuple[str, Path, str, str]:
    """(data set kind, root, val split, train split) of the validation set: synthetic pipelines score
    their own data's ``valid`` split, the others Pascal VOC ``val``."""
    kind = vs.dataset or ("synthetic" if cfg.dataset.kind == "synthetic" else "voc")
    root = vs.root or (cfg.dataset.root if kind == "synthetic" and cfg.dataset.kind == "synthetic" else None)
    if root is None:
        raise MosicError(f"validation (validate.every={vs.every}) needs the root of its {kind} data set: "
                         "--set validate.root=PATH, or --set validate.every=0 to train without validation")
    tr, va = validation.default_splits(kind)
    return kind, Path(root), vs.split or va, vs.train_split or tr


class Validator:
    """Opens the validation set once (every rank: a missing set fails before training) and runs
    the protocols on rank 0 (:meth:`run`)."""

    def __init__(self, vs, cfg, out: Path, img_size: int, device: torch.device, main: bool):
        self.vs, self.out, self.img_size, self.device, self.main = vs, Path(out), int(img_size), device, main
        kind, root, split, train_split = _defaults(vs, cfg)
        try:
            val = validation.open_image_set(kind, root, split)
            train = validation.open_image_set(kind, root, train_split) if "incontext" in vs.protocols else None
        except MosicError as e:
            raise MosicError(f"validation (validate.every={vs.every}): {e}; point validate.root / validate.split at "
                             "a held-out set, or --set validate.every=0 to train without validation") from None
        self.label = f"{kind}/{split}"
        self.val = validation.in_memory(val, vs.max_images) if main else None
        self._train_set = train if main else None
        self.train = None  # the memory's images, decoded at the first validation (their number needs the patch)

    def due(self, step: int, total: int) -> bool:
        e = self.vs.every
        return e > 0 and (step % e == 0 or step == total)

    @torch.no_grad()
    def run(self, model: torch.nn.Module, step: int, epoch: int) -> dict[str, Any]:
        """Score ``model``'s backbone (a MoSiCModel; its train/eval mode is restored)."""
        bb = model.backbone
        was_training = bb.training
        t = time.perf_counter()
        row: dict[str, Any] = {"kind": "validation", "step": step, "epoch": epoch, "network": self.vs.network,
                               "data": self.label, "images": len(self.val)}
        if self.train is None and self._train_set is not None:
            n = self.vs.memory_images or validation.memory_images(self.vs.memory_size, self.img_size,
                                                                  bb.patch_embed.patch_size[0])
            self.train = validation.in_memory(self._train_set, n)
        try:
            with torch.autocast(self.device.type, enabled=False):
                if "clustering" in self.vs.protocols:
                    row["val_clustering"] = validation.clustering_miou(bb, self.val, self.img_size, self.device)
                if "incontext" in self.vs.protocols:
                    row["val_incontext"] = validation.incontext_miou(bb, self.train, self.val, self.img_size,
                                                                     self.device, self.vs.memory_size)
        finally:
            bb.train(was_training)
        row["val_seconds"] = time.perf_counter() - t
        return row


def read_curve(log_path: Path) -> list[dict]:
    """The validation rows of a run's log.jsonl, one per step, by step (:func:`mosic.train.run_log.read_log`)."""
    return read_log(log_path, "validation")


def plot_curve(log_path: Path, png: Path) -> Path | None:
    """Draw the validation curve(s) of ``log_path`` into ``png`` (None when there is nothing yet)."""
    rows = read_curve(log_path)
    keys = sorted({k for r in rows for k in r if k.startswith("val_") and k != "val_seconds"})
    if not rows or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k[4:])
    ax.set_xlabel("step")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"validation: {rows[-1].get('network', '')} on {rows[-1].get('data', '')}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = Path(png)
    tmp = png.with_name(f".{png.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png)
    return png


def validate_and_log(validator: Validator, model: torch.nn.Module, step: int, epoch: int, runlog) -> dict:
    """Run a validation on rank 0 and write it: a row of the run's log (:class:`mosic.train.run_log.RunLog`:
    log.jsonl, TensorBoard, wandb), then the plot."""
    row = validator.run(model, step, epoch)
    runlog.write(row)
    plot_curve(validator.out / "log.jsonl", validator.out / "validation.png")
    figs = ", ".join(f"{k[4:]} {v:.1f}" for k, v in row.items() if k.startswith("val_") and k != "val_seconds")
    log.info("validation at step %d: %s (%.1fs)", step, figs, row["val_seconds"])
    return row
