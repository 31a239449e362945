"""The image protocols (linear segmentation, frozen clustering, in-context segmentation) and the
dense.py helpers they share: hand-made cases for the maths, and end-to-end runs on in-memory data
whose class is the hue of each band, with a fake backbone that reads hue (near 100 mIoU) against a
random tiny ViT (clearly lower)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mosic.evaluation.datasets import SegDataset, SegSample
from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD
from mosic.evaluation.dense import (confusion, confusion_miou, dataset_features,
                              miou_from_confusion, resize_labels_centres)
from mosic.evaluation.matching import match_clusters, match_predictions
from mosic.evaluation.protocols.clustering import frozen_clustering, matched_miou
from mosic.evaluation.dense import scored_miou
from mosic.evaluation.protocols.incontext import (FaissSearch, _memory_labels, augment, build_memory, colour_jitter,
                                                  crop_box, incontext_segmentation, knn_labels, knn_search,
                                                  reference_patch_scores, resolve_memory_ignore, sample_patches,
                                                  sample_patches_reference, soft_patch_labels)
from mosic.evaluation.protocols.linear import linear_segmentation
from mosic import MosicError

# --------------------------------------------------------------------------------------------
# data: 4 horizontal bands per image, class = hue of the band (4 hues 90 degrees apart around the
# ImageNet mean colour), strong pixel noise; 2-px ignore strips at class changes (as VOC's object
# borders). Val sets also have one band labelled ignore and painted in a WRONG class's hue.
# --------------------------------------------------------------------------------------------
GRAY_W = np.array([0.299, 0.587, 0.114])
_u = np.array([1.0, 0, 0]) - GRAY_W[0]
_u /= np.linalg.norm(_u)
_v = np.array([0, 1.0, 0]) - GRAY_W[1]
_v -= (_v @ _u) * _u
_v /= np.linalg.norm(_v)
_ang = np.arange(4) * np.pi / 2
COLOURS = np.array([124, 116, 104.0]) + 25 * (np.cos(_ang)[:, None] * _u + np.sin(_ang)[:, None] * _v)
NOISE = 90
P = 14  # patch size of the fake backbone and of the tiny ViT


def make_dataset(n: int, H: int, W: int, seed: int, decoy: bool, name: str = "bands") -> SegDataset:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        cls = rng.choice(4, 4, p=[0.4, 0.2, 0.2, 0.2])
        lab = np.repeat(cls, H // 4)[:, None].repeat(W, 1).astype(np.uint8)
        img = COLOURS[lab] + rng.normal(0, NOISE, (H, W, 3))
        for b in range(1, 4):
            if cls[b] != cls[b - 1]:
                lab[b * H // 4 - 1:b * H // 4 + 1] = 255
        if decoy:
            r = rng.integers(4)
            band = slice(r * H // 4, (r + 1) * H // 4)
            lab[band] = 255
            img[band] = COLOURS[(cls[r] + 1) % 4] + rng.normal(0, NOISE, (H // 4, W, 3))
        samples.append(SegSample(np.clip(img, 0, 255).astype(np.uint8), lab, f"{name}{i}"))
    return SegDataset(name, ["background", "a", "b", "c"], samples, lambda s: s)


class HueBackbone(nn.Module):
    """Fake ViT: a patch's token is the chroma of its mean colour (colour minus its grey level),
    which the protocols' colour jitter only scales: it encodes the class."""

    num_prefix_tokens = 1

    def __init__(self):
        super().__init__()
        self.patch_embed = types.SimpleNamespace(patch_size=(P, P))

    def forward_features(self, x):
        x = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        m = F.avg_pool2d(x, P).flatten(2).transpose(1, 2)
        t = 100 * (m - (m @ torch.tensor(GRAY_W, dtype=m.dtype))[..., None])
        return torch.cat([torch.zeros_like(t[:, :1]), t], 1)


def random_vit(img_size: int):
    from mosic.backbones import create_backbone

    torch.manual_seed(0)
    return create_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=img_size, depth=2, embed_dim=48,
                           num_heads=3, init_values=0.1)


@pytest.fixture(scope="module")
def bands():
    # train 112 px (8 x 8 patches at img_size 112), val at another size and aspect ratio (resize paths)
    return (make_dataset(32, 112, 112, seed=10, decoy=False, name="train"),
            make_dataset(16, 168, 224, seed=20, decoy=True, name="val"))


# --------------------------------------------------------------------------------------------
# shared maths (dense.py)
# --------------------------------------------------------------------------------------------
def test_confusion_miou_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 3, 0]])  # the two ignore pixels predict anything
    conf = confusion(pred, gt, 4, 255)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    miou, iou = confusion_miou(pred, gt, 4, 255)
    # class 0: TP 1, GT 2, P 2 -> 1/3; class 1: 2/(2+3-2) = 2/3; class 2: 1/(2+1-1) = 1/2; class 3: never
    # present nor predicted on a scored pixel -> not scored
    assert np.allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2]) and np.isnan(iou[3])
    assert miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    # predicting a class absent from gt is penalised (union > 0, IoU 0)
    miou2, iou2 = confusion_miou(np.array([3, 0]), np.array([0, 0]), 4, 255)
    assert iou2[3] == 0 and iou2[0] == 0.5 and miou2 == pytest.approx(0.25)
    # ignore pixels never count, whatever is predicted there
    for fill in range(4):
        p = pred.copy()
        p[gt == 255] = fill
        assert confusion_miou(p, gt, 4, 255)[0] == miou
    # an ignore index inside the class range (e.g. raw ADE20K, whose 0 is "other") is never scored
    m0, i0 = confusion_miou(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3, ignore_index=0)
    assert np.isnan(i0[0]) and m0 == pytest.approx((1 / 2 + 1 / 2) / 2)
    # a label that is neither a class nor the ignore index is the data set's fault
    with pytest.raises(MosicError, match="label 7 is outside 0..3"):
        confusion(np.zeros(3, int), np.array([0, 7, 255]), 4, 255)
    # unmatched-cluster column (past C) counts against the true class only
    m, i = miou_from_confusion(np.array([[2, 0, 2], [0, 4, 0]]))
    assert np.allclose(i, [0.5, 1.0]) and m == pytest.approx(0.75)


def test_resize_labels_centres_takes_the_pixel_under_each_centre():
    lab = np.array([[0, 1], [2, 255]], np.uint8)
    up = resize_labels_centres(lab, 4)
    assert up.dtype == np.uint8 and up.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]
    big = np.arange(36).reshape(6, 6)
    assert resize_labels_centres(big, 3).tolist() == big[1::2, 1::2].tolist()  # pixel centres 1, 3, 5
    assert resize_labels_centres(big, (2, 3)).shape == (2, 3)


def test_malformed_sample_is_named():
    ds = SegDataset("bad", ["a", "b"], [SegSample(np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 5, np.uint8), "img7")],
                    lambda s: s)
    with pytest.raises(MosicError, match="img7.*label value 5"):
        next(dataset_features(HueBackbone(), ds, [0], 28))


# --------------------------------------------------------------------------------------------
# clustering
# --------------------------------------------------------------------------------------------
def test_hungarian_and_many_to_one_differ_by_hand():
    # gt: 4 pixels of class 0, 4 of class 1; 3 clusters: class 0 split in two clusters
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    cont = confusion(gt, pred, 3, 255, num_pred=2)  # rows: clusters (as "gt"), columns: classes
    assert cont.tolist() == [[2, 0], [2, 0], [0, 4]]
    one = match_clusters(cont, many_to_one=False)
    assert sorted(one.tolist()) == [-1, 0, 1] and one[2] == 1  # one cluster of class 0 is left out
    assert matched_miou(cont, one)[0] == pytest.approx((2 / 4 + 1) / 2)  # class 0 half found
    many = match_clusters(cont, many_to_one=True)
    assert many.tolist() == [0, 0, 1]
    assert matched_miou(cont, many)[0] == 1.0
    # many-to-one is precision-based: a cluster goes to the class it overlaps most, even when its IoU
    # with another (smaller) class is higher: cluster 0 holds 6 px of class 0 (100 px) and all 5 px of
    # class 1 -> IoU 6/105 vs 5/11, precision 6/11 vs 5/11
    cont2 = np.array([[6, 5], [94, 0]])
    assert match_clusters(cont2, many_to_one=True).tolist() == [0, 0]
    # K = C but class 2 absent from the data: its cluster is wrong, the class is not scored
    cont3 = np.array([[4, 0, 0], [0, 3, 0], [0, 1, 0]])
    m = match_clusters(cont3, many_to_one=False)
    assert m.tolist() == [0, 1, 2]
    miou3, iou3 = matched_miou(cont3, m)
    assert np.isnan(iou3[2]) and miou3 == pytest.approx((1 + 3 / 4) / 2)
    # the ignore class never receives a cluster
    assert match_clusters(np.array([[5, 1, 0], [0, 0, 4]]), many_to_one=True, ignore_index=0).tolist() == [1, 2]


def test_clustering_recovers_colour_classes(bands):
    _, val = bands
    res = frozen_clustering(HueBackbone(), val, ks=(4, 12), img_size=112, pca_dim=2, nredo=3, seeds=(0, 1))
    assert set(res) == {"4", "12"}
    assert res["4"]["matching"] == "hungarian" and res["12"]["matching"] == "many_to_one"
    assert res["4"]["miou"] >= 97 and len(res["4"]["miou_per_seed"]) == 2
    assert res["12"]["miou"] >= 97
    assert len(res["4"]["per_class_iou"]) == 4
    vit = frozen_clustering(random_vit(112), val, img_size=112, pca_dim=2, nredo=3)
    assert set(vit) == {"4"} and vit["4"]["miou"] <= res["4"]["miou"] - 10


def test_kmeans_restarts_matter():
    # one big blob and three small far ones: a single start often splits the big blob and merges
    # small ones; the best of 5 restarts (NeCo's setting) finds the blobs
    from mosic.evaluation.dense import kmeans

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (200, 2))] + [rng.normal(c, 0.1, (5, 2)) for c in ([20, 0], [0, 20], [20, 20])])
    x = x.astype(np.float32)
    gt = np.repeat([0, 1, 2, 3], [200, 5, 5, 5])

    def score(a):
        inertia = sum(((x[a == j] - x[a == j].mean(0)) ** 2).sum() for j in np.unique(a))
        cont = confusion(gt, a, 4, 255, num_pred=4)  # rows: clusters, columns: classes
        return inertia, matched_miou(cont, match_clusters(cont, many_to_one=False))[0]

    one = [score(kmeans(x, 4, seed=s, niter=100, nredo=1)) for s in range(5)]
    five = [score(kmeans(x, 4, seed=s, niter=100, nredo=5)) for s in range(5)]
    assert all(f[0] <= o[0] + 1e-3 for f, o in zip(five, one))  # the best restart is kept
    assert min(o[1] for o in one) < 0.8 and max(f[1] for f in five) == 1.0
    assert np.mean([f[1] for f in five]) > np.mean([o[1] for o in one]) + 0.1


def test_clustering_settings(bands):
    _, val = bands
    raw = frozen_clustering(HueBackbone(), val, ks=(4,), img_size=112, pca_dim=2, niter=20, nredo=3, seeds=(0,))
    own = frozen_clustering(HueBackbone(), val, ks=(4,), img_size=112, pca_dim=2, niter=20, nredo=3, seeds=(0,),
                            mask_size=None, l2_normalize=True)
    assert raw["4"]["miou"] >= 97 and own["4"]["miou"] >= 97 and raw["4"]["miou_per_seed"] != []


# --------------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------------
def test_linear_head_commutes_with_upsampling():
    head = nn.Conv2d(5, 3, 1)
    x = torch.randn(2, 5, 4, 4)
    def up(t):
        return F.interpolate(t, size=(10, 10), mode="bilinear", align_corners=False)

    assert torch.allclose(head(up(x)), up(head(x)), atol=1e-5)


def test_linear_segmentation(bands):
    train, val = bands
    kw = dict(img_size=112, feat_size=28, batch_size=16)
    res = linear_segmentation(HueBackbone(), train, val, **kw)
    assert res["miou"] >= 90 and len(res["per_class_iou"]) == 4
    assert len(res["train_loss"]) == 25 and res["train_loss"][-1] < 0.5 * res["train_loss"][0]
    assert res["train_images"] == 32 and res["val_images"] == 16
    vit = linear_segmentation(random_vit(112), train, val, **kw)
    assert vit["miou"] <= res["miou"] - 8
    small = linear_segmentation(HueBackbone(), train, val, epochs=2, max_train=5, **kw)
    assert small["train_images"] == 5 and len(small["train_loss"]) == 2
    cached = linear_segmentation(HueBackbone(), train, val, augment=False, val_mask_size=None, **kw)  # mosic's
    assert cached["miou"] >= 90


def test_linear_augmented_view():
    from mosic.evaluation.protocols.linear import augmented_view

    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30, 0] = 255  # red left half
    lab = np.zeros((40, 60), np.uint8)
    lab[:, 30:] = 1  # class 1 on the right half
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(60):
        a, b = augmented_view(img, lab, 28, 10, rng)
        assert a.shape == (28, 28, 3) and b.shape == (10, 10)
        left_red = a[:, :3, 0].mean() > 128
        assert left_red == (b[:, 0] == 0).all()  # image and mask flipped together
        flips += not left_red
    assert 15 < flips < 45  # p = 0.5
    a, b = augmented_view(img, lab, 28, 10, rng, crop_scale=(1, 1), flip=False)
    assert (b[:, :5] == 0).all() and (b[:, 5:] == 1).all()


# --------------------------------------------------------------------------------------------
# in-context
# --------------------------------------------------------------------------------------------
def test_soft_patch_labels_by_hand():
    lab = np.array([[0, 0, 1, 255],
                    [0, 1, 255, 255],
                    [255, 255, 2, 2],
                    [255, 255, 2, 2]])
    soft = soft_patch_labels(lab, 2, 3, 255)
    assert soft.tolist() == [[0.75, 0.25, 0], [0, 0.25, 0], [0, 0, 0], [0, 0, 1]]


def test_ignore_pixels_in_the_memory_labels():
    lab = np.array([[1, 255], [255, 255]], np.uint8)
    bg, n = _memory_labels(lab, 3, 255, "background")  # reference (VOC): ignore = background
    assert n == 3 and soft_patch_labels(bg, 1, n, 255).tolist() == [[0.75, 0.25, 0]]
    cl, n = _memory_labels(lab, 3, 255, "class")  # one more label, which counts for no class
    assert n == 4 and soft_patch_labels(cl, 1, n, 255).tolist() == [[0, 0.25, 0, 0.75]]
    dr, n = _memory_labels(lab, 3, 255, "drop")  # mosic: no label mass
    assert soft_patch_labels(dr, 1, n, 255).tolist() == [[0, 0.25, 0]]
    assert resolve_memory_ignore("auto", ["background", "a"]) == "background"
    assert resolve_memory_ignore("auto", ["wall", "floor"]) == "class"
    with pytest.raises(MosicError, match="memory_ignore"):
        resolve_memory_ignore("nope", [])


def test_ignore_in_the_memory_decides_background(bands):
    # the training masks never label background: its pixels are all ignore (as VOC's void); the
    # reference turns them into background in the memory, so val background is found; with mosic's
    # "drop" no memory patch says background and the class is lost
    train, val = bands
    voided = [SegSample(s.image, np.where(s.label == 0, 255, s.label).astype(np.uint8), s.id) for s in train]
    train0 = SegDataset("train", train.class_names, voided, lambda s: s)
    kw = dict(img_size=112, memory_size=2000, k=5)
    bg = incontext_segmentation(HueBackbone(), train0, val, **kw)
    # (with "drop", unlabelled patches must stay out of the memory too, as a zero label vote has
    # argmax 0; and labels scored as they are, or the Hungarian step hands background another label)
    drop = incontext_segmentation(HueBackbone(), train0, val, memory_ignore="drop", sampling="inverse_frequency",
                                  matching="none", **kw)
    assert bg["memory_ignore_used"] == "background" and bg["per_class_iou"][0] >= 90
    assert drop["per_class_iou"][0] == 0 and drop["miou"] <= bg["miou"] - 20


def test_sample_patches_clamp_and_rare_classes():
    soft = torch.zeros(20, 3)
    soft[:15, 0] = 1  # 15 background patches
    soft[15, 2] = 0.5  # one patch of a rare class
    # rows 16..19: no scored pixel
    gen = torch.Generator().manual_seed(0)
    everything = sample_patches(soft, 1000, gen)
    assert sorted(everything.tolist()) == list(range(16))  # clamped to the labelled patches
    hits = sum(15 in sample_patches(soft, 2, gen).tolist() for _ in range(400))
    # weights 1/15 per background patch, 1 for the rare one: P(rare among 2) = 1/2 + 1/2 * 15/29 = 0.76
    # (uniform sampling would give 2/16 = 0.125)
    assert 0.68 < hits / 400 < 0.84
    assert len(sample_patches(torch.zeros(4, 3), 3, gen)) == 0


def test_reference_patch_scores_and_sampling():
    soft = torch.zeros(6, 3)
    soft[0, 0] = 1  # class 0 alone
    soft[1, 0], soft[1, 1] = 0.5, 0.5  # classes 0 and 1
    soft[2, 0] = 1
    soft[3, 0] = 1
    soft[4, 2] = 0.25  # class 2 alone, partly ignore
    # row 5: no label
    # patches containing each class: 0 -> 4, 1 -> 1, 2 -> 1; score = sum over the patch's classes
    assert reference_patch_scores(soft).tolist() == [4, 5, 4, 4, 1, float("inf")]
    gen = torch.Generator().manual_seed(0)
    # not clamped to the labelled patches: a budget past them takes the unlabelled patch too (last)
    assert sorted(sample_patches_reference(soft, 6, gen).tolist()) == list(range(6))
    assert sorted(sample_patches_reference(soft, 100, gen).tolist()) == list(range(6))
    assert 5 not in sample_patches_reference(soft, 5, gen).tolist()
    # score x U(0, 1), the K smallest: the rare patch 4 (score 1) is kept far more often than a
    # background one (score 4): P(4 in top 1) = P(u4 < 4 min(u0, u2, u3) and u4 < 5 u1)
    runs = [sample_patches_reference(soft, 1, gen).item() for _ in range(2000)]
    rare, common = runs.count(4) / 2000, runs.count(0) / 2000
    assert rare > 0.5 and common < 0.2 and 5 not in runs


def test_memory_budget(bands):
    train, _ = bands
    sub = train.subset(4 / 32, 0)
    # reference: K = memory / (images x passes) is not clamped; each view gives all its 64 patches
    f, lab, budget = build_memory(HueBackbone(), sub, 112, 10 ** 6, 2, seed=0)
    assert budget == 10 ** 6 // 8 and len(f) == len(lab) == 2 * 4 * 64
    assert f.dtype == torch.float16 and lab.dtype == torch.float16 and lab.shape[1] == 4
    assert torch.allclose(f.float().norm(dim=1), torch.ones(len(f)), atol=1e-2)
    f, lab, budget = build_memory(HueBackbone(), sub, 112, 80, 2, seed=0)
    assert budget == 10 and len(f) == 80
    f, _, budget = build_memory(HueBackbone(), sub, 112, 3, 2, seed=0)  # fewer slots than images: 1 each
    assert budget == 1 and len(f) == 8
    # mosic's sampling clamps to the labelled patches (ignore strips never fill a patch)
    f, lab, budget = build_memory(HueBackbone(), sub, 112, 10 ** 6, 2, seed=0, sampling="inverse_frequency",
                                  memory_ignore="drop", augmentation="mosic", dtype=torch.float32)
    assert budget == 64 and len(f) == 2 * 4 * 64 and f.dtype == torch.float32 and (lab.float().sum(1) > 0).all()


def test_knn_labels_by_hand():
    mem = F.normalize(torch.tensor([[1.0, 0], [0.8, 0.6], [0, 1.0]]), dim=1)
    labels = torch.tensor([[1.0, 0], [0, 1.0], [0, 1.0]])
    q = torch.tensor([[1.0, 0]])
    out = knn_labels(q, mem, labels, k=2, temperature=0.1)
    w = torch.softmax(torch.tensor([1.0, 0.8]) / 0.1, 0)
    assert torch.allclose(out, w[None]) and knn_labels(q, mem, labels, k=10, temperature=0.1).shape == (1, 2)


def test_chunked_search_is_exact():
    g = torch.Generator().manual_seed(0)
    mem = F.normalize(torch.randn(1000, 16, generator=g), dim=1)
    q = F.normalize(torch.randn(50, 16, generator=g), dim=1)
    ref_s, ref_i = (q @ mem.T).topk(7, dim=1)
    s, i = knn_search(q, mem, 7, chunk_elems=300, mem_chunk=64)  # 16 memory chunks, queries in 10s
    assert torch.equal(i, ref_i) and torch.allclose(s, ref_s)
    s16, i16 = knn_search(q, mem.half(), 7, mem_chunk=100)  # float16 memory, float32 product per chunk
    assert (i16 == ref_i).float().mean() > 0.95 and torch.allclose(s16, ref_s, atol=2e-3)
    fs, fi = FaissSearch(mem.half(), chunk=128)(q, 7)
    assert (fi == ref_i).float().mean() > 0.95 and torch.allclose(fs, ref_s, atol=2e-3)


def test_hungarian_scoring_and_absent_classes_by_hand():
    # predictions that are right up to a permutation of the labels: the reference's Hungarian step
    gt = np.array([0, 0, 1, 1, 2, 2, 255])
    pred = np.array([1, 1, 2, 2, 0, 0, 0])
    conf = confusion(pred, gt, 4, 255)
    assert scored_miou(conf, 255, "none", "skip")[0] == 0
    m, iou = scored_miou(conf, 255, "hungarian", "skip")
    assert m == 1.0 and np.isnan(iou[3])
    # class 3 is neither present nor predicted: the reference counts it as 0 in the mean
    m, iou = scored_miou(conf, 255, "hungarian", "zero")
    assert m == pytest.approx(3 / 4) and iou[3] == 0
    # the assignment maximises the pixels in agreement: label 0 (5 px of class 1, 1 of class 0) goes to 1
    conf2 = np.array([[1, 4], [5, 0]])
    assert match_predictions(conf2).tolist() == [1, 0]
    # an extra label (memory_ignore="class") may be matched or count for no class
    conf3 = np.array([[3, 0, 1], [0, 2, 2]])
    assert match_predictions(conf3).tolist() == [0, 1, -1]
    assert scored_miou(conf3, 255, "hungarian", "zero")[0] == pytest.approx((3 / 4 + 2 / 4) / 2)
    with pytest.raises(MosicError, match="matching"):
        scored_miou(conf3, 255, "greedy")


def test_augment_crop_and_jitter():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    lab = np.repeat(np.arange(4, dtype=np.uint8), 15)[:, None].repeat(80, 1)
    lab[:, :5] = 255
    for mode in ("reference", "mosic"):
        for _ in range(20):
            a, b = augment(img, lab, 28, rng, mode=mode)
            assert a.shape == (28, 28, 3) and a.dtype == np.uint8 and b.shape == (28, 28)
            assert set(np.unique(b)) <= {0, 1, 2, 3, 255}
        a1, b1 = augment(img, lab, 28, np.random.default_rng(5), mode=mode)
        a2, b2 = augment(img, lab, 28, np.random.default_rng(5), mode=mode)
        assert (a1 == a2).all() and (b1 == b2).all()
        # no jitter, full-scale crop of a square image with square ratio: a plain resize
        sq = img[:60, :60]
        a, b = augment(sq, lab[:, :60], 60, rng, scale=(1, 1), ratio=(1, 1), p_jitter=0, mode=mode)
        assert (a == sq).all() and (b == lab[:, :60]).all()
    # scale 0.5-2: draws past the image area never fit; 10 misses -> torchvision's centre crop
    assert crop_box(60, 80, rng, scale=(1.5, 2.0)) == (0, 0, 60, 80)
    assert crop_box(20, 80, rng, scale=(1.5, 2.0)) == (0, 26, 20, 27)  # ratio clamped to 4/3, centred
    sizes = [crop_box(100, 100, rng, scale=(0.5, 2.0))[2:] for _ in range(300)]
    assert all(25 * 100 <= h * w <= 100 * 100 for h, w in sizes)
    # the hue shift rotates the colour: a pure red moves along the circle, its grey level kept
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    shifted = [colour_jitter(red, np.random.default_rng(s), jitter=0.0, p_jitter=1.0, hue=0.1) for s in range(6)]
    assert any((x[..., 1:] > 0).any() for x in shifted) and all(x[..., 0].max() == 200 for x in shifted)
    with pytest.raises(MosicError, match="augmentation"):
        augment(img, lab, 28, rng, mode="bogus")


def test_incontext_segmentation(bands):
    train, val = bands
    kw = dict(img_size=112, memory_size=2000, k=5)
    res = incontext_segmentation(HueBackbone(), train, val, **kw)
    assert res["miou"] >= 97 and len(res["per_class_iou"]) == 4
    assert res["per_image_budget"] == 2000 // (32 * 2) and res["memory"] == 2000 // (32 * 2) * 64
    assert res["memory_ignore_used"] == "background" and res["subset"] == "all" and res["search_used"] == "torch"
    vit = incontext_segmentation(random_vit(112), train, val, **kw)
    assert vit["miou"] <= res["miou"] - 20
    frac = incontext_segmentation(HueBackbone(), train, val, fraction=1 / 8, seed=3, **kw)
    assert frac["train_images"] == 4 and frac["per_image_budget"] == 2000 // 8 and frac["memory"] == 4 * 2 * 64
    assert frac["subset"] == "random (seed 3)"
    again = incontext_segmentation(HueBackbone(), train, val, fraction=1 / 8, seed=3, **kw)
    assert again["miou"] == frac["miou"]  # seeded: subset, crops, sampling
    mosic = incontext_segmentation(HueBackbone(), train, val, sampling="inverse_frequency", augmentation="mosic",
                                   crop_scale=(0.5, 1.0), std=IMAGENET_STD, memory_ignore="drop",
                                   val_resolution="original", matching="none", absent_classes="skip",
                                   memory_dtype="float32", search="faiss", **kw)
    assert mosic["miou"] >= 97 and mosic["memory_ignore_used"] == "drop" and mosic["search_used"] == "faiss"
    assert mosic["memory"] == res["memory"]
    with pytest.raises(MosicError, match="fraction"):
        incontext_segmentation(HueBackbone(), train, val, fraction=0, **kw)
    with pytest.raises(MosicError, match="multiple of the backbone's patch size"):
        incontext_segmentation(HueBackbone(), train, val, img_size=100)
    with pytest.raises(MosicError, match="search must be"):
        incontext_segmentation(HueBackbone(), train, val, search="scann", **kw)


# --------------------------------------------------------------------------------------------
# the real data path: the synthetic video set exported as Pascal VOC
# --------------------------------------------------------------------------------------------
def test_protocols_on_synthetic_voc_export(tmp_path):
    from mosic.evaluation.datasets import export_synthetic_voc, open_seg_dataset
    from mosic.data.synthetic import generate

    generate(tmp_path / "syn", 2, seed=0, split="train", num_frames=9, width=64, height=48, exact_length=True)
    generate(tmp_path / "syn", 1, seed=0, split="valid", num_frames=9, width=64, height=48, exact_length=True)
    export_synthetic_voc(tmp_path / "syn", tmp_path / "voc", every=2)
    train, val = open_seg_dataset("voc", tmp_path / "voc", "train"), open_seg_dataset("voc", tmp_path / "voc", "val")
    C = train.num_classes
    net = random_vit(56)
    lin = linear_segmentation(net, train, val, img_size=56, feat_size=28, epochs=2, step_at=1, batch_size=4)
    clu = frozen_clustering(net, val, ks=(C, 2 * C), img_size=56, pca_dim=8)
    inc = incontext_segmentation(net, train, val, img_size=56, memory_size=500, k=5, augment_passes=1)
    for r in (lin, clu[str(C)], clu[str(2 * C)], inc):
        assert 0 <= r["miou"] <= 100 and len(r["per_class_iou"]) == C
    assert all(v is None or 0 <= v <= 100 for v in inc["per_class_iou"])


# --------------------------------------------------------------------------------------------
# the reference's fixed subsets (shipped file lists)
# --------------------------------------------------------------------------------------------
def test_shipped_file_sets_and_their_use():
    from mosic.evaluation.file_sets import (REFERENCE_SEEDS, folder, fraction_seeds, list_path, read_list,
                                            training_subset)

    assert (folder() / "LICENSE").read_text().startswith("MIT License") and (folder() / "SOURCE.md").is_file()
    for ds, split, sizes in (("voc", "trainaug", {128: 80, 64: 160, 8: 1320}),
                             ("ade20k", "training", {128: 150, 64: 300, 8: 2550})):
        for n, size in sizes.items():
            for sd in REFERENCE_SEEDS:
                assert len(read_list(list_path(ds, split, 1 / n, sd))) == size
    assert list_path("voc", "train", 1 / 128, 42) is None and list_path("voc", "trainaug", 1 / 16, 42) is None
    assert list_path("synthetic", "train", 1 / 128, 42) is None and list_path("voc", "trainaug", 1 / 128, 0) is None
    assert fraction_seeds("voc", "trainaug", 1 / 128, 5) == list(REFERENCE_SEEDS)
    assert fraction_seeds("voc", "trainaug", 1 / 128, 5, subsets="random") == [0, 1, 2, 3, 4]
    assert fraction_seeds("synthetic", "train", 1 / 2, 2, seed=7) == [7, 8] and fraction_seeds("voc", "trainaug", 1, 5) == [0]

    full = read_list(folder() / "voc" / "full" / "trainaug.txt")
    items = [types.SimpleNamespace(id=i) for i in full]
    voc = SegDataset("voc", ["background"], items, lambda it: it, split="trainaug")
    sub, source = training_subset(voc, 1 / 128, 400)
    assert sub.ids == read_list(list_path("voc", "trainaug", 1 / 128, 400)) and source.endswith("trainaug_128_400.txt")
    rnd, source = training_subset(voc, 1 / 128, 400, subsets="random")
    assert len(rnd) == len(full) // 128 and source == "random (seed 400)" and rnd.ids != sub.ids
    small = SegDataset("voc", ["background"], items[:100], lambda it: it, split="trainaug")
    with pytest.raises(MosicError, match="trainaug_128_42.txt names .* image"):
        training_subset(small, 1 / 128, 42)


def test_file_sets_are_package_data():
    # every shipped list, the licence and the attribution go into the wheel (pyproject's package-data)
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mosic.evaluation"]
    shipped = {p for g in globs for p in (root / "evaluation").glob(g) if p.is_file()}
    present = {p for p in (root / "evaluation" / "hummingbird_file_sets").rglob("*") if p.is_file()}
    assert present and shipped == present and len(present) == 34


def test_ade20k_mean_over_151_rows_as_the_references(bands):
    from mosic.evaluation.dense import rows_mean

    # by hand: 150 scored classes over 151 rows (the references' ignored 'other' row scores 0)
    iou = np.full(150, 0.4)
    assert rows_mean(iou, "ade20k") == (pytest.approx(0.4 * 150 / 151), 151)
    assert rows_mean(iou, "ade20k", "classes") == (pytest.approx(0.4), 150)
    assert rows_mean(np.array([0.5, np.nan, 1.0]), "voc") == (pytest.approx(0.75), 2)  # other sets: unchanged
    with pytest.raises(MosicError, match="class_rows"):
        rows_mean(iou, "ade20k", "all")
    # through both protocols on a set named ade20k: reference = classes x n / (n + 1), n classes scored
    train, val = bands
    tr, va = (SegDataset("ade20k", d.class_names, d._items, d._load) for d in (train, val))
    for fn, kw in ((incontext_segmentation, dict(img_size=112, memory_size=2000, k=5)),
                   (linear_segmentation, dict(img_size=112, feat_size=28, batch_size=16, epochs=3, step_at=2))):
        ref, ours = fn(HueBackbone(), tr, va, **kw), fn(HueBackbone(), tr, va, class_rows="classes", **kw)
        n = ours["rows_averaged"]
        assert n == 4 and ref["rows_averaged"] == 5
        assert ref["miou"] == pytest.approx(ours["miou"] * n / (n + 1))
        other = fn(HueBackbone(), train, val, **kw)  # not ADE20K: the reference mean is the classes' mean
        assert other["rows_averaged"] == 4 and other["miou"] == pytest.approx(ours["miou"])
