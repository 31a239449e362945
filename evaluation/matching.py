"""Matching predicted labels (K-means clusters, or the labels a k-NN vote predicts) to ground-truth
classes: the one place for it. Every matcher starts from overlap counts (rows: one side, columns:
the other, pixels in common) and the Hungarian step names its criterion:

- ``"overlap"``: the one-to-one assignment with the most pixels in agreement (mosic's earlier
  in-context scorer, ``incontext.matching_criterion="overlap"``);
- ``"iou"``: the one-to-one assignment of maximal total IoU (frozen clustering's ``matching="mosic"``
  rule; the synthetic probe, :func:`hungarian_miou`);
- ``"one_minus_iou"``: minimal total 1 - IoU, as open-hummingbird-eval (``eval_metrics.py``, the
  in-context scorer, :func:`match_predictions`), NeCo (``PredsmIoU``, frozen clustering) and
  TimeTuning (video segmentation) write it.

``"iou"`` and ``"one_minus_iou"`` pick the same assignment in exact arithmetic; each protocol keeps
the cost its reference computes, so ties break as they do there. Many-to-one matching
(overclustering: each cluster takes the class it overlaps most) is :func:`match_clusters`'s other
mode.
"""

from __future__ import annotations

import numpy as np

from mosic import MosicError

CRITERIA = ("overlap", "iou", "one_minus_iou")


def iou_matrix(overlap: np.ndarray) -> np.ndarray:
    """IoU [R, C] of every row/column pair from their overlap counts [R, C] (float64; a pair with
    an empty union scores 0)."""
    o = np.asarray(overlap, dtype=np.float64)
    return o / np.maximum(o.sum(1, keepdims=True) + o.sum(0, keepdims=True) - o, 1)


def hungarian(overlap: np.ndarray, criterion: str) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one matching (row indices, column indices) of the overlap counts [R, C] that is
    best by ``criterion`` (one of :data:`CRITERIA`; scipy's linear_sum_assignment); min(R, C)
    pairs."""
    from scipy.optimize import linear_sum_assignment

    if criterion == "overlap":
        cost = -np.asarray(overlap, dtype=np.float64)
    elif criterion == "iou":
        cost = -iou_matrix(overlap)
    elif criterion == "one_minus_iou":
        cost = 1 - iou_matrix(overlap)
    else:
        raise MosicError(f"matching criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    return linear_sum_assignment(cost)


def match_predictions(conf: np.ndarray, criterion: str = "one_minus_iou") -> np.ndarray:
    """Ground-truth class of each predicted label from the overlap counts ``conf`` [C, P] (rows:
    ground truth, columns: predictions): the one-to-one assignment best by ``criterion`` (default:
    minimal total 1 - IoU, the Hungarian step of the reference in-context scorer; ``"overlap"``:
    the most pixels in agreement); -1 for a predicted label left without a class (possible when
    P > C)."""
    rows, cols = hungarian(conf, criterion)
    mapping = np.full(conf.shape[1], -1)
    mapping[cols] = rows
    return mapping


def match_clusters(cont: np.ndarray, many_to_one: bool, ignore_index: int | None = None,
                   criterion: str = "iou") -> np.ndarray:
    """Class of each cluster from the overlap counts ``cont`` [K, C]; -1 for an unmatched cluster.
    One-to-one: the Hungarian assignment best by ``criterion``; ``many_to_one``: each cluster the
    class it overlaps most (the class of highest precision, overlap / cluster size; ties and empty
    clusters: the first class). An ignore index inside 0..C-1 (a data set that ignores a class,
    e.g. 0) gets no cluster."""
    K, C = cont.shape
    classes = np.array([c for c in range(C) if c != ignore_index])
    cont = cont[:, classes].astype(np.float64)
    if many_to_one:
        return classes[cont.argmax(1)]
    rows, cols = hungarian(cont, criterion)
    mapping = np.full(K, -1)
    mapping[rows] = classes[cols]
    return mapping


def hungarian_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int, k: int | None = None) -> tuple[float, np.ndarray]:
    """mIoU of cluster ids ``pred`` against ``gt`` after the one-to-one matching of clusters to
    classes that maximises total IoU; unmatched clusters count as wrong. Returns (mIoU over classes
    present in gt, per-class IoU)."""
    k = k or int(pred.max()) + 1
    inter = np.zeros((k, num_classes))
    np.add.at(inter, (pred.ravel(), gt.ravel()), 1)
    iou = iou_matrix(inter)
    rows, cols = hungarian(inter, "iou")
    per_class = np.zeros(num_classes)
    per_class[cols] = iou[rows, cols]
    present = inter.sum(0) > 0
    return float(per_class[present].mean()), per_class
