"""Held-out videos: a fixed part of a data set's videos that training leaves out, so that the video
protocols can score videos the model has not trained on.

YouTube-VOS publishes categories and every annotated frame only for its ``train`` split (the
challenge's valid/test hide them), and MoSiC trains on that split's 30 fps release
(``train_all_frames``, the same video ids). TimeTuning scores a held-out part of ``train`` (its
``val1``, whose list is not published); the official MoSiC training reads every video of
``train_all_frames``, so its evaluation on ``val1`` scored videos it had trained on. mosic picks
the held-out videos by a hash of the video id: the same on every machine, independent of the
other videos and of their order. The fraction is a setting of the training (``train.holdout``); the
evaluation takes it from the run it scores, and otherwise from the packaged ``ytvos`` pipeline
(:func:`ytvos_holdout`).
"""

from __future__ import annotations

import hashlib

from mosic import MosicError
from mosic.config import load_pipeline, packaged_pipelines_file


def ytvos_holdout() -> float:
    """The fraction of YouTube-VOS videos that the packaged ``ytvos`` pipeline leaves out of
    training (its ``train.holdout``)."""
    return load_pipeline("ytvos", packaged_pipelines_file()).train.holdout


def _check(fraction: float) -> float:
    f = float(fraction)
    if not 0 <= f < 1:
        raise MosicError(f"holdout must be a fraction in [0, 1), got {fraction!r}")
    return f


def heldout_rank(video_id: str) -> float:
    """A number in [0, 1) fixed by the video id (SHA-256)."""
    h = hashlib.sha256(str(video_id).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def is_heldout(video_id: str, fraction: float) -> bool:
    """Whether ``video_id`` belongs to the held-out ``fraction`` of videos."""
    return heldout_rank(video_id) < _check(fraction)


def split_heldout(video_ids, fraction: float) -> tuple[list[str], list[str]]:
    """(kept for training, held out) of ``video_ids``, each in the given order."""
    f = _check(fraction)
    keep, out = [], []
    for v in video_ids:
        (out if heldout_rank(v) < f else keep).append(v)
    return keep, out
