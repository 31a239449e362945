"""Frozen clustering is scored as NeCo scores it (``experiments/utils.py`` ``PredsmIoU`` called from
``experiments/overcluster/eval_overcluster.py``): its steps written out by hand on hand-made cluster
ids agree with mosic's scorer, below, at and above the number of classes, and on an ADE20K-like set
(NeCo's 151 classes: label 0 ignored in the pixels but a row of the mean)."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mosic import MosicError
from mosic.evaluation.dense import resize_labels_centres, resize_labels_floor
from mosic.evaluation.protocols.clustering import default_ks, score_clusters, standardise


def neco_miou(gt: np.ndarray, pred: np.ndarray, k: int, num_gt: int) -> float:
    """NeCo's steps, pixel by pixel: ignore pixels already removed; Hungarian on 1 - IoU when
    k == num_gt (unmatched clusters to 0), otherwise each cluster to the class of highest precision
    (the first on ties); then tp / (tp + fp + fn) per class (0 when empty), the mean over num_gt."""
    if k == num_gt:
        iou = np.zeros((num_gt, k))
        for g in range(num_gt):
            for c in range(k):
                tp = np.sum((gt == g) & (pred == c))
                fp = np.sum((gt != g) & (pred == c))
                fn = np.sum((gt == g) & (pred != c))
                iou[g, c] = tp / max(tp + fp + fn, 1e-8)
        rows, cols = linear_sum_assignment(1 - iou)
        remap = np.zeros(len(pred))
        for g, c in zip(rows, cols):
            remap[pred == c] = g
    else:
        remap = np.zeros(len(pred))
        for c in range(k):
            best, best_score = None, None
            for g in range(num_gt):
                tp = np.sum((gt == g) & (pred == c))
                fp = np.sum((gt != g) & (pred == c))
                score = tp / max(tp + fp, 1e-8)
                if best is None or score > best_score:
                    best, best_score = g, score
            remap[pred == c] = best
    jac = []
    for g in range(num_gt):
        tp = np.sum((gt == g) & (remap == g))
        fp = np.sum((gt != g) & (remap == g))
        fn = np.sum((gt == g) & (remap != g))
        jac.append(tp / max(tp + fp + fn, 1e-8))
    return float(np.mean(jac))


def handmade(classes: int, k: int, n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth over ``classes`` (class 'classes - 1' absent: never drawn) and cluster ids that
    follow it loosely, with ignore pixels (255)."""
    rng = np.random.default_rng(seed)
    gt = rng.choice(classes - 1, n, p=np.linspace(2, 1, classes - 1) / np.linspace(2, 1, classes - 1).sum())
    pred = np.where(rng.random(n) < 0.6, (gt * k) // classes + rng.integers(0, 2, n), rng.integers(0, k, n)) % k
    gt[rng.random(n) < 0.05] = 255
    return gt, pred


def overlap(gt: np.ndarray, pred: np.ndarray, k: int, classes: int) -> np.ndarray:
    keep = gt != 255
    cont = np.zeros((k, classes), np.int64)
    np.add.at(cont, (pred[keep], gt[keep]), 1)
    return cont


@pytest.mark.parametrize("k", [4, 6, 9])
def test_the_scorer_agrees_with_necos_steps_below_at_and_above_the_class_count(k):
    gt, pred = handmade(6, k)
    keep = gt != 255
    miou, _, many = score_clusters(overlap(gt, pred, k, 6), 255)
    assert many == (k != 6)
    assert 100 * miou == pytest.approx(100 * neco_miou(gt[keep], pred[keep], k, 6), abs=0.01)


@pytest.mark.parametrize("k", [6, 7, 12])
def test_an_ade20k_like_set_scores_over_necos_extra_ignored_row(k):
    # mosic: 6 classes (0..5), ignore 255; NeCo: 7 classes, its label 0 the ignored 'other' row
    gt, pred = handmade(6, k, seed=1)
    keep = gt != 255
    miou, iou, many = score_clusters(overlap(gt, pred, k, 6), 255, extra_rows=1)
    assert many == (k != 7) and len(iou) == 7 and iou[6] == 0
    assert 100 * miou == pytest.approx(100 * neco_miou(gt[keep] + 1, pred[keep], k, 7), abs=0.01)


def test_mosics_earlier_rules_stay_available_and_differ_below_the_class_count():
    gt, pred = handmade(6, 4)
    keep = gt != 255
    cont = overlap(gt, pred, 4, 6)
    earlier, _, many = score_clusters(cont, 255, matching="mosic", absent="skip")
    assert not many  # Hungarian for K below the classes
    assert abs(earlier - neco_miou(gt[keep], pred[keep], 4, 6)) > 0.01
    with pytest.raises(MosicError, match="clustering.matching must be one of reference, mosic"):
        score_clusters(cont, 255, matching="greedy")


def test_necos_mask_and_cluster_map_resizing_and_standardisation():
    lab = np.arange(30 * 30).reshape(30, 30) % 7
    # NeCo: PIL nearest to the input size (the source pixel under each centre), then floor-nearest to 100
    ref = resize_labels_floor(resize_labels_centres(lab, 448)[None], 100)[0]
    rows = np.floor(np.arange(100) * 448 / 100).astype(int)
    src = np.minimum(((rows + 0.5) * 30 / 448).astype(int), 29)
    np.testing.assert_array_equal(ref, lab[src[:, None], src[None, :]])
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [8.0, 5.0]])
    z = standardise(x, 0)
    np.testing.assert_allclose(z[:, 0].numpy(), (x[:, 0] - x[:, 0].mean()).numpy() / np.std(x[:, 0].numpy()), rtol=1e-6)
    assert torch.all(z[:, 1] == 0)  # a constant dimension divided by 1, as StandardScaler
    assert not torch.allclose(standardise(x, 1)[:, 0], z[:, 0])


def test_the_default_k_lists_follow_necos_configs_and_the_papers_row():
    assert default_ks("voc", 21, 255) == [21, 500]
    assert default_ks("ade20k", 150, 255) == [151]
    assert default_ks("ade20k", 150, 255, "classes") == [150]
    assert default_ks("synthetic", 6, 255) == [6, 100, 300, 500]
