"""Matching and label resizing live once in evaluation, each variant by name: the Hungarian
criterion is an argument, the pixel convention of a label resize is in the helper's name."""

import numpy as np
import pytest

from mosic import MosicError
from mosic.evaluation.dense import resize_labels_centres, resize_labels_floor
from mosic.evaluation.matching import hungarian, hungarian_miou, iou_matrix, match_clusters, match_predictions

# overlap counts where the most pixels in agreement (the diagonal: 8 + 28 = 36 against 20 + 15 = 35)
# and the highest total IoU (the anti-diagonal: 0.36 + 0.29 against 0.19 + 0.44) disagree
SPLIT = np.array([[8, 20], [15, 28]])


def test_the_criterion_decides_the_assignment_where_overlap_and_iou_disagree():
    assert hungarian(SPLIT, "overlap")[1].tolist() == [0, 1]
    assert hungarian(SPLIT, "iou")[1].tolist() == [1, 0]
    assert hungarian(SPLIT, "one_minus_iou")[1].tolist() == [1, 0]
    with pytest.raises(MosicError, match="criterion must be one of overlap, iou, one_minus_iou"):
        hungarian(SPLIT, "dice")


def test_each_named_matcher_uses_its_protocols_criterion():
    # in-context (rows: classes, columns: predicted labels): minimal total 1 - IoU, as
    # open-hummingbird-eval's eval_metrics.py; mosic's earlier rule (most pixels in agreement) differs
    assert match_predictions(SPLIT).tolist() == [1, 0]
    assert match_predictions(SPLIT, "overlap").tolist() == [0, 1]
    # frozen clustering (rows: clusters, columns: classes): the highest total IoU
    assert match_clusters(SPLIT, many_to_one=False).tolist() == [1, 0]
    # the synthetic probe: the highest total IoU, scored by those IoUs
    pred = np.repeat([0, 0, 1, 1], [8, 20, 15, 28])
    gt = np.repeat([0, 1, 0, 1], [8, 20, 15, 28])
    miou, per_class = hungarian_miou(pred, gt, 2, 2)
    iou = iou_matrix(SPLIT)
    np.testing.assert_allclose(per_class, [iou[1, 0], iou[0, 1]])
    assert miou == pytest.approx((iou[1, 0] + iou[0, 1]) / 2)


def test_the_two_label_resizings_differ_by_their_pixel_convention():
    row = np.array([[0, 1, 2]])
    # 3 -> 2 pixels: centres 0.75 and 2.25 fall on pixels 0 and 2; floor(i * 3 / 2) gives 0 and 1
    assert resize_labels_centres(row, (1, 2)).tolist() == [[0, 2]]
    assert resize_labels_floor(row[None], (1, 2)).tolist() == [[[0, 1]]]
    # upscaling by a whole factor: both repeat each pixel
    lab = np.array([[1, 2], [3, 255]])
    np.testing.assert_array_equal(resize_labels_centres(lab, 4), resize_labels_floor(lab[None], 4)[0])


def test_the_incontext_scorer_matches_on_one_minus_iou_as_hummingbird_and_keeps_the_overlap_rule_as_a_setting():
    from mosic.evaluation.dense import scored_miou

    iou = iou_matrix(SPLIT)  # rows: classes, columns: predicted labels
    reference, _ = scored_miou(SPLIT, 255, "hungarian", "skip")
    earlier, _ = scored_miou(SPLIT, 255, "hungarian_overlap", "skip")
    assert reference == pytest.approx((iou[0, 1] + iou[1, 0]) / 2)
    assert earlier == pytest.approx((iou[0, 0] + iou[1, 1]) / 2)
    assert reference - earlier > 0.01
    with pytest.raises(MosicError, match="matching must be one of hungarian, hungarian_overlap, none"):
        scored_miou(SPLIT, 255, "greedy")
