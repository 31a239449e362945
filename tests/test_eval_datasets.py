"""Data set readers for evaluation (evaluation/datasets/, one module per data set): tiny hand-made VOC, ADE20K, DAVIS and
YouTube-VOS folders, the synthetic set, and the synthetic -> VOC export."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mosic.evaluation import datasets as D
from mosic import MosicError
from mosic.data import synthetic as syn

W, H = 20, 16


def _rgb(seed: int, w: int = W, h: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _jpg(path: Path, seed: int, w: int = W, h: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(seed, w, h)).save(path, quality=95)


def _png(path: Path, label: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        im = Image.fromarray(label.astype(np.uint8), mode="P")
        im.putpalette(D.voc_colormap().ravel().tolist())
    elif mode == "L":
        im = Image.fromarray(label.astype(np.uint8), mode="L")
    else:  # a colour-coded mask
        im = Image.fromarray(D.voc_colormap()[label], mode="RGB")
    im.save(path)


def _label(seed: int, high: int, void: bool = True, w: int = W, h: int = H) -> np.ndarray:
    lab = np.random.default_rng(seed).integers(0, high, (h, w)).astype(np.uint8)
    if void:
        lab[:, 3] = 255  # a void stripe, as VOC has along object borders
    return lab


# ------------------------------------------------------------------------------------------------
# Pascal VOC
# ------------------------------------------------------------------------------------------------
VOC_IDS = [f"2007_{i:06d}" for i in range(1, 6)]


def make_voc(root: Path, aug: bool = False) -> dict[str, np.ndarray]:
    labels = {}
    for k, i in enumerate(VOC_IDS):
        _jpg(root / "JPEGImages" / f"{i}.jpg", k)
        labels[i] = _label(k, 21)
        _png(root / "SegmentationClass" / f"{i}.png", labels[i])
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(VOC_IDS[:3]) + "\n")
    (sets / "val.txt").write_text("\n".join(VOC_IDS[3:]) + "\n\n")
    (sets / "trainval.txt").write_text("\n".join(VOC_IDS) + "\n")
    if aug:  # SBD-style: greyscale masks, list lines with paths
        for k, i in enumerate(VOC_IDS[:4]):
            labels["aug_" + i] = _label(100 + k, 21, void=False)
            _png(root / "SegmentationClassAug" / f"{i}.png", labels["aug_" + i], mode="L")
        (sets / "trainaug.txt").write_text(
            "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in VOC_IDS[:4])
        )
    return labels


def test_voc_reads_labels_and_splits(tmp_path):
    labels = make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    ds = D.open_seg_dataset("voc", tmp_path, "train")  # finds VOCdevkit/VOC2012
    assert ds.name == "voc" and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds.class_names[0] == "background" and ds.class_names[15] == "person" and ds.class_names[-1] == "tvmonitor"
    assert ds.ids == VOC_IDS[:3] and len(ds) == 3
    for k, s in enumerate(ds):
        assert s.id == VOC_IDS[k]
        assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
        np.testing.assert_array_equal(s.label, labels[s.id])
        assert (s.label[:, 3] == 255).all()
    assert ds[-1].id == VOC_IDS[2]
    with pytest.raises(IndexError):
        ds[3]
    root = tmp_path / "VOCdevkit" / "VOC2012"
    assert D.open_seg_dataset("voc", root, "val").ids == VOC_IDS[3:]
    assert D.open_seg_dataset("voc", root, "trainval").ids == VOC_IDS


def test_voc_trainaug_uses_augmented_masks(tmp_path):
    labels = make_voc(tmp_path, aug=True)
    ds = D.open_seg_dataset("voc", tmp_path, "trainaug")
    assert ds.ids == VOC_IDS[:4]
    s = ds[1]
    np.testing.assert_array_equal(s.label, labels["aug_" + VOC_IDS[1]])
    assert not np.array_equal(s.label, labels[VOC_IDS[1]])


def test_voc_trainaug_absent_is_a_clear_error(tmp_path):
    make_voc(tmp_path)
    with pytest.raises(MosicError, match="SegmentationClassAug"):
        D.open_seg_dataset("voc", tmp_path, "trainaug")


def test_voc_classes_txt_declares_the_classes(tmp_path):
    make_voc(tmp_path)
    (tmp_path / "classes.txt").write_text("".join(f"c{i}\n" for i in range(21)))
    ds = D.open_seg_dataset("voc", tmp_path, "val")
    assert ds.num_classes == 21 and ds.class_names[3] == "c3"
    ds[0]
    # a declared class count smaller than the labels found
    (tmp_path / "classes.txt").write_text("background\nthing\nother\n")
    ds = D.open_seg_dataset("voc", tmp_path, "val")
    assert ds.num_classes == 3
    with pytest.raises(MosicError, match=r"classes\.txt declares 3 classes") as e:
        ds[0]
    assert f"{VOC_IDS[3]}.png" in str(e.value)


def test_voc_bad_inputs(tmp_path):
    with pytest.raises(MosicError, match="does not exist"):
        D.open_seg_dataset("voc", tmp_path / "nope", "train")
    root = tmp_path / "voc"
    make_voc(root)
    with pytest.raises(MosicError, match=r"no split list .*Segmentation[/\\]test\.txt"):
        D.open_seg_dataset("voc", root, "test")
    (root / "ImageSets" / "Segmentation" / "empty.txt").write_text("\n  \n")
    with pytest.raises(MosicError, match=r"empty\.txt is empty"):
        D.open_seg_dataset("voc", root, "empty")
    # image without mask
    (root / "SegmentationClass" / f"{VOC_IDS[4]}.png").unlink()
    with pytest.raises(MosicError, match=rf"has no mask .*{VOC_IDS[4]}\.png"):
        D.open_seg_dataset("voc", root, "val")
    # split naming a missing image
    (root / "JPEGImages" / f"{VOC_IDS[0]}.jpg").unlink()
    with pytest.raises(MosicError, match=rf"no image .*{VOC_IDS[0]}\.jpg"):
        D.open_seg_dataset("voc", root, "train")


def test_voc_bad_masks(tmp_path):
    make_voc(tmp_path)
    # an RGB colour mask instead of an index PNG
    _png(tmp_path / "SegmentationClass" / f"{VOC_IDS[3]}.png", _label(0, 21, void=False), mode="RGB")
    # label values beyond the 21 classes that are not 255
    bad = _label(1, 21)
    bad[0, 0] = 30
    _png(tmp_path / "SegmentationClass" / f"{VOC_IDS[4]}.png", bad)
    ds = D.open_seg_dataset("voc", tmp_path, "val")
    with pytest.raises(MosicError, match=rf"{VOC_IDS[3]}\.png: annotation has image mode RGB"):
        ds[0]
    with pytest.raises(MosicError, match=rf"{VOC_IDS[4]}\.png: label values 30 are not classes: Pascal VOC declares 21"):
        ds[1]
    # a mask of another size than its image
    _png(tmp_path / "SegmentationClass" / f"{VOC_IDS[4]}.png", _label(1, 21, w=W + 2))
    with pytest.raises(MosicError, match=r"annotation is 22x16 but its image .* is 20x16"):
        ds[1]
    # a corrupt image
    (tmp_path / "JPEGImages" / f"{VOC_IDS[0]}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(MosicError, match=rf"{VOC_IDS[0]}\.jpg: not a readable image"):
        D.open_seg_dataset("voc", tmp_path, "train")[0]


# ------------------------------------------------------------------------------------------------
# subsets
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Item:
    id: str


def _dummy(n: int) -> D.SegDataset:
    return D.SegDataset("dummy", ["a", "b"], [_Item(f"i{k:03d}") for k in range(n)],
                        lambda it: D.SegSample(np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8), it.id))


def test_subset_is_seeded_sized_and_ordered():
    ds = _dummy(100)
    a = ds.subset(0.1, seed=3)
    assert len(a) == 10 and a.ids == sorted(a.ids) and set(a.ids) <= set(ds.ids)
    assert a.ids == ds.subset(0.1, seed=3).ids
    assert len({tuple(ds.subset(0.1, seed=s).ids) for s in range(5)}) == 5
    assert a.num_classes == 2 and a.name == "dummy" and a[0].id == a.ids[0]
    assert len(ds.subset(1 / 128, seed=0)) == 1  # at least one image
    assert len(_dummy(10582).subset(1 / 128, 0)) == 82  # floor(10582 / 128)
    assert ds.subset(1.0, seed=0).ids == ds.ids
    assert len(ds.subset(0.29, 0)) == 29  # no float round-down (0.29 * 100 = 28.999...)
    for bad in (0, -0.5, 1.5):
        with pytest.raises(MosicError, match="fraction"):
            ds.subset(bad, 0)


def test_subset_of_real_reader(tmp_path):
    make_voc(tmp_path)
    ds = D.open_seg_dataset("voc", tmp_path, "trainval")
    sub = ds.subset(0.4, seed=1)
    assert len(sub) == 2 and sub.class_names == ds.class_names
    for s in sub:
        assert s.id in VOC_IDS


# ------------------------------------------------------------------------------------------------
# ADE20K
# ------------------------------------------------------------------------------------------------
def make_ade(root: Path) -> dict[str, np.ndarray]:
    raws = {}
    for sub, n in (("training", 3), ("validation", 2)):
        for k in range(n):
            name = f"ADE_{sub[:5]}_{k + 1:08d}"
            _jpg(root / "images" / sub / f"{name}.jpg", k)
            raw = np.random.default_rng(k).integers(0, 151, (H, W)).astype(np.uint8)
            raw[0, :3] = (0, 1, 150)
            raws[name] = raw
            _png(root / "annotations" / sub / f"{name}.png", raw, mode="L")
    return raws


def test_ade20k_maps_other_to_ignore_and_shifts_classes(tmp_path):
    raws = make_ade(tmp_path / "ADEChallengeData2016")
    ds = D.open_seg_dataset("ade20k", tmp_path, "train")
    assert ds.num_classes == 150 and len(ds.class_names) == 150
    assert ds.class_names[0] == "wall" and ds.class_names[12] == "person" and ds.class_names[149] == "flag"
    assert ds.ids == [f"ADE_train_{k:08d}" for k in (1, 2, 3)]
    s = ds[0]
    raw = raws[s.id]
    assert tuple(s.label[0, :3]) == (255, 0, 149)
    np.testing.assert_array_equal(s.label[raw == 0], 255)
    np.testing.assert_array_equal(s.label[raw > 0], raw[raw > 0] - 1)
    assert D.open_seg_dataset("ade20k", tmp_path, "validation").ids == D.open_seg_dataset("ade", tmp_path, "val").ids
    assert len(D.open_seg_dataset("ade20k", tmp_path, "val")) == 2


def test_ade20k_bad_inputs(tmp_path):
    make_ade(tmp_path)
    bad = np.zeros((H, W), np.uint8)
    bad[2, 2] = 151
    _png(tmp_path / "annotations" / "validation" / "ADE_valid_00000001.png", bad, mode="L")
    with pytest.raises(MosicError, match=r"ADE_valid_00000001\.png: annotation values 151 are not ADE20K classes"):
        D.open_seg_dataset("ade20k", tmp_path, "val")[0]
    (tmp_path / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    with pytest.raises(MosicError, match=r"ADE_train_00000002\.jpg has no annotation"):
        D.open_seg_dataset("ade20k", tmp_path, "training")
    with pytest.raises(MosicError, match="unknown split 'test'"):
        D.open_seg_dataset("ade20k", tmp_path, "test")
    shutil.rmtree(tmp_path / "annotations" / "validation")
    with pytest.raises(MosicError, match=r"no folder .*annotations[/\\]validation"):
        D.open_seg_dataset("ade20k", tmp_path, "val")
    for p in (tmp_path / "images" / "training").iterdir():
        p.unlink()
    with pytest.raises(MosicError, match=r"no JPEG images in .*images[/\\]training"):
        D.open_seg_dataset("ade20k", tmp_path, "train")


def test_unknown_kind():
    with pytest.raises(MosicError, match="choose one of: voc, ade20k, synthetic"):
        D.open_seg_dataset("cityscapes", ".", "train")
    with pytest.raises(MosicError, match="choose one of: davis, ytvos, synthetic"):
        D.open_video_dataset("voc", ".", "train")


# ------------------------------------------------------------------------------------------------
# frame selection
# ------------------------------------------------------------------------------------------------
def test_select_frames():
    ann = list(range(0, 40, 2))
    a = D.select_frames(ann, 4, 0, "vid")
    assert len(a) == 4 and a == sorted(a) and len(set(a)) == 4 and set(a) <= set(ann)
    assert a == D.select_frames(reversed(ann), 4, 0, "vid")  # same draw on every call
    assert len({tuple(D.select_frames(ann, 4, s, "vid")) for s in range(6)}) > 1
    assert len({tuple(D.select_frames(ann, 4, 0, f"v{k}")) for k in range(6)}) > 1
    # every annotated frame is drawn about equally often
    counts = np.zeros(40)
    for s in range(500):
        counts[D.select_frames(ann, 4, s, "vid")] += 1
    assert counts[1::2].sum() == 0 and counts[::2].min() > 60 and counts[::2].max() < 140  # mean 100
    assert D.select_frames([7, 3], 4, 0, "vid") == [3, 7]
    assert D.select_frames([5], 1, 9, "vid") == [5]
    with pytest.raises(MosicError, match="video 'empty' has no annotated frames"):
        D.select_frames([], 4, 0, "empty")
    with pytest.raises(MosicError, match="at least 1"):
        D.select_frames([1], 0, 0, "v")
    with pytest.raises(MosicError, match="non-negative"):
        D.select_frames([1, 2], 1, -1, "v")


# ------------------------------------------------------------------------------------------------
# DAVIS-2017
# ------------------------------------------------------------------------------------------------
def make_davis(root: Path) -> dict[tuple[str, int], np.ndarray]:
    labels = {}
    spec = {"bear": (10, range(10)), "dog": (6, (0, 5)), "cat": (3, range(3))}
    for v, (n, annotated) in spec.items():
        for t in range(n):
            _jpg(root / "JPEGImages" / "480p" / v / f"{t:05d}.jpg", t)
        (root / "Annotations" / "480p" / v).mkdir(parents=True)
        for t in annotated:
            lab = np.zeros((H, W), np.uint8)
            lab[t % H, :] = 1
            lab[:, t % W] = 2 + (v == "dog")
            labels[v, t] = lab
            _png(root / "Annotations" / "480p" / v / f"{t:05d}.png", lab)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "train.txt").write_text("bear\ndog\n")
    (root / "ImageSets" / "2017" / "val.txt").write_text("cat\n")
    return labels


def test_davis_clips(tmp_path):
    labels = make_davis(tmp_path)
    ds = D.open_video_dataset("davis", tmp_path, "train", frames=4, seed=0)
    assert ds.name == "davis" and ds.num_classes is None and len(ds) == 2 and ds.video_ids == ["bear", "dog"]
    c = ds[0]
    assert c.video_id == "bear" and c.frames.shape == (4, H, W, 3) and c.frames.dtype == np.uint8
    assert c.labels.shape == (4, H, W) and c.labels.dtype == np.int64
    assert c.frame_indices == sorted(c.frame_indices) and len(set(c.frame_indices)) == 4
    for k, t in enumerate(c.frame_indices):
        np.testing.assert_array_equal(c.labels[k], labels["bear", t])
    assert ds[0].frame_indices == c.frame_indices
    assert D.open_video_dataset("davis", tmp_path, "train", frames=4, seed=0)[0].frame_indices == c.frame_indices
    assert c.frame_indices == D.select_frames(range(10), 4, 0, "bear")
    # dog has 2 annotated frames (0 and 5) out of 6: both, and only annotated ones
    d = ds[1]
    assert d.frame_indices == [0, 5] and ds.annotated_frames(1) == [0, 5]
    assert set(np.unique(d.labels)) == {0, 1, 3}
    assert [x.video_id for x in D.open_video_dataset("davis", tmp_path, "val")] == ["cat"]
    one = D.open_video_dataset("davis", tmp_path, "train", frames=1, seed=5)[0]
    assert one.frames.shape == (1, H, W, 3)


def test_davis_bad_inputs(tmp_path):
    with pytest.raises(MosicError, match="does not exist"):
        D.open_video_dataset("davis", tmp_path / "none", "val")
    make_davis(tmp_path)
    with pytest.raises(MosicError, match=r"no split list .*2017[/\\]test-dev\.txt"):
        D.open_video_dataset("davis", tmp_path, "test-dev")
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("cat\nmissing\n")
    with pytest.raises(MosicError, match=r"no frame folder .*missing for video 'missing'"):
        D.open_video_dataset("davis", tmp_path, "val")
    for p in (tmp_path / "Annotations" / "480p" / "dog").iterdir():
        p.unlink()
    with pytest.raises(MosicError, match="video 'dog' has no annotated frames"):
        D.open_video_dataset("davis", tmp_path, "train")
    with pytest.raises(MosicError, match="at least 1"):
        D.open_video_dataset("davis", tmp_path, "val", frames=0)


# ------------------------------------------------------------------------------------------------
# YouTube-VOS
# ------------------------------------------------------------------------------------------------
def make_ytvos(root: Path) -> None:
    sroot = root / "train"
    objs = {"vidA": {"1": "zebra", "2": "ant"}, "vidB": {"1": "dog"}}
    for v in objs:
        for t in range(0, 50, 5):  # frames every 5th, annotated every 10th
            _jpg(sroot / "JPEGImages" / v / f"{t:05d}.jpg", t)
            if t % 10 == 0:
                lab = np.zeros((H, W), np.uint8)
                lab[:4] = 1
                if v == "vidA":
                    lab[-4:] = 2
                lab[8, 8] = 255
                _png(sroot / "Annotations" / v / f"{t:05d}.png", lab)
    meta = {"videos": {v: {"objects": {o: {"category": c, "frames": []} for o, c in d.items()}} for v, d in objs.items()}}
    (sroot / "meta.json").write_text(json.dumps(meta))


def test_ytvos_maps_instances_to_global_categories(tmp_path):
    make_ytvos(tmp_path)
    ds = D.open_video_dataset("ytvos", tmp_path, "train", frames=3, seed=1)
    assert ds.class_names == ["background", "ant", "dog", "zebra"] and ds.num_classes == 4
    assert ds.video_ids == ["vidA", "vidB"]
    a, b = ds[0], ds[1]
    assert ds.annotated_frames(0) == [0, 2, 4, 6, 8]  # positions of 00000, 00010, ... among the JPEGs
    assert len(a.frame_indices) == 3 and set(a.frame_indices) <= {0, 2, 4, 6, 8}
    np.testing.assert_array_equal(a.labels[:, :4], 3)  # object 1 of vidA = zebra
    np.testing.assert_array_equal(a.labels[:, -4:], 1)  # object 2 of vidA = ant
    np.testing.assert_array_equal(b.labels[:, :4], 2)  # object 1 of vidB = dog
    assert (a.labels[:, 8, 8] == 255).all() and (b.labels[:, 6, 0] == 0).all()


def test_ytvos_bad_inputs(tmp_path):
    make_ytvos(tmp_path)
    lab = np.zeros((H, W), np.uint8)
    lab[0, 0] = 2  # vidB has only object 1
    _png(tmp_path / "train" / "Annotations" / "vidB" / "00020.png", lab)
    ds = D.open_video_dataset("ytvos", tmp_path, "train", frames=5)
    with pytest.raises(MosicError, match=r"vidB[/\\]00020\.png: annotation values 2 are not objects of video 'vidB'"):
        ds[1]
    meta_path = tmp_path / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["videos"]["vidA"]["objects"]["2"]["category"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(MosicError, match="no category for object 2 of video 'vidA'"):
        D.open_video_dataset("ytvos", tmp_path, "train")
    del meta["videos"]["vidA"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(MosicError, match=r"video 'vidA' .* is not in .*meta\.json"):
        D.open_video_dataset("ytvos", tmp_path, "train")
    meta_path.unlink()
    with pytest.raises(MosicError, match=r"no .*meta\.json"):
        D.open_video_dataset("ytvos", tmp_path, "train")
    with pytest.raises(MosicError, match=r"no folder .*valid[/\\]JPEGImages"):
        D.open_video_dataset("ytvos", tmp_path, "valid")


# ------------------------------------------------------------------------------------------------
# the synthetic set, and its VOC export
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    syn.generate(root, 2, seed=0, split="train", num_frames=9, width=48, height=40, exact_length=True)
    syn.generate(root, 1, seed=0, split="valid", num_frames=6, width=48, height=40, exact_length=True)
    return root


def _semantic(src, vid: str, t: int) -> np.ndarray:
    gt = src.ground_truth(vid)
    inst = src.read_annotation(vid, t)
    out = np.zeros(inst.shape, np.int64)
    for oid in gt.object_ids:
        out[inst == oid] = gt.class_of(oid)
    return out


def test_synthetic_video_labels_are_classes(synth):
    ds = D.open_video_dataset("synthetic", synth, "train", frames=4, seed=2)
    src = syn.SyntheticSource(synth, "train")
    assert ds.num_classes == 6 and ds.class_names == list(syn.CLASSES) and len(ds) == 2
    seen = set()
    for i in range(len(ds)):
        c = ds[i]
        assert c.frames.shape == (4, 40, 48, 3) and c.labels.dtype == np.int64
        assert c.frame_indices == D.select_frames(range(9), 4, 2, c.video_id)
        np.testing.assert_array_equal(c.frames, src.read_frames(c.video_id, c.frame_indices))
        for k, t in enumerate(c.frame_indices):
            np.testing.assert_array_equal(c.labels[k], _semantic(src, c.video_id, t))
        seen |= set(np.unique(c.labels).tolist())
    assert 0 in seen and len(seen) >= 2  # background and at least one object class
    assert D.open_video_dataset("synthetic", synth, "val").split == "valid"


def test_synthetic_images(synth):
    ds = D.open_seg_dataset("synthetic", synth, "train")
    assert ds.ids == [f"syn0000{v}_{t:05d}" for v in (0, 1) for t in (0, 4, 8)]
    assert ds.num_classes == 6
    src = syn.SyntheticSource(synth, "train")
    s = ds[4]
    np.testing.assert_array_equal(s.label, _semantic(src, "syn00001", 4))
    assert len(D.open_seg_dataset("synthetic", synth, "train", every=3)) == 6
    with pytest.raises(MosicError, match=r"no folder .*test"):
        D.open_seg_dataset("synthetic", synth, "test")


def test_export_round_trip(synth, tmp_path):
    out = tmp_path / "voc"
    counts = D.export_synthetic_voc(synth, out)
    assert counts == {"train": 6, "val": 2}
    assert (out / "classes.txt").read_text().split() == list(syn.CLASSES)
    for split, synsplit in (("train", "train"), ("val", "valid")):
        voc = D.open_seg_dataset("voc", out, split)
        ref = D.open_seg_dataset("synthetic", synth, synsplit)
        assert voc.num_classes == 6 and voc.class_names == list(syn.CLASSES)
        assert voc.ids == [f"{synsplit}_{i}" for i in ref.ids]
        for a, b in zip(voc, ref):
            np.testing.assert_array_equal(a.label, b.label)
            np.testing.assert_array_equal(a.image, b.image)
    with Image.open(out / "SegmentationClass" / "train_syn00000_00000.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]  # VOC colours
    trainval = (out / "ImageSets" / "Segmentation" / "trainval.txt").read_text().split()
    assert len(trainval) == 8
    # an earlier export is replaced; other data is not touched
    assert D.export_synthetic_voc(synth, out, splits=("valid",), every=2) == {"val": 3}
    assert not (out / "ImageSets" / "Segmentation" / "train.txt").exists()
    assert len(list((out / "JPEGImages").iterdir())) == 3
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(MosicError, match="already holds other data"):
        D.export_synthetic_voc(synth, other)
    assert (other / "mine.txt").read_text() == "keep"


def test_export_class_count_mismatch(synth, tmp_path):
    bad = tmp_path / "syn"
    shutil.copytree(synth, bad)
    (bad / "classes.json").write_text(json.dumps(["background"]))
    with pytest.raises(MosicError, match=r"has class \d, but .*classes\.json declares 1 classes"):
        D.export_synthetic_voc(bad, tmp_path / "out")
    with pytest.raises(MosicError, match=r"no folder .*nosplit"):
        D.export_synthetic_voc(synth, tmp_path / "out2", splits=("nosplit",))


def test_cli_voc(synth, tmp_path):
    from mosic.cli_data import app

    out = tmp_path / "v"
    r = CliRunner().invoke(app, ["voc", "--synthetic", str(synth), "--out", str(out), "--every", "3", "-q"])
    assert r.exit_code == 0, r.output
    assert "6 train, 2 val images" in r.output
    assert len(D.open_seg_dataset("voc", out, "train")) == 6
    r = CliRunner().invoke(app, ["voc", "--synthetic", str(tmp_path / "none"), "--out", str(tmp_path / "w")])
    assert r.exit_code == 2 and "neither a train nor a valid split" in r.output


# ------------------------------------------------------------------------------------------------
# files as the data sets' own tools write them, and the reference's fixed subsets on a real layout
# ------------------------------------------------------------------------------------------------
def test_files_as_the_tools_write_them(tmp_path):
    # ADE20K ships some greyscale JPEGs: read as RGB
    make_ade(tmp_path / "ade")
    grey = tmp_path / "ade" / "images" / "training" / "ADE_train_00000001.jpg"
    Image.fromarray(_rgb(0)[..., 0], mode="L").save(grey)
    s = D.open_seg_dataset("ade20k", tmp_path / "ade", "training")[0]
    assert s.image.shape == (H, W, 3) and (s.image[..., 0] == s.image[..., 2]).all()
    # VOC: palette masks with another palette are still read as indices; a 16-bit PNG is refused
    make_voc(tmp_path / "voc")
    lab = _label(7, 21)
    im = Image.fromarray(lab, mode="P")
    im.putpalette(list(range(256)) * 3)
    im.save(tmp_path / "voc" / "SegmentationClass" / f"{VOC_IDS[3]}.png")
    np.testing.assert_array_equal(D.open_seg_dataset("voc", tmp_path / "voc", "val")[0].label, lab)
    Image.fromarray(lab.astype(np.uint16) * 256).save(tmp_path / "voc" / "SegmentationClass" / f"{VOC_IDS[4]}.png")
    with pytest.raises(MosicError, match=rf"{VOC_IDS[4]}\.png: annotation has image mode I"):
        D.open_seg_dataset("voc", tmp_path / "voc", "val")[1]
    # optional folders absent (no SegmentationClassAug, no SegmentationObject, no Annotations): train/val open
    assert not (tmp_path / "voc" / "SegmentationClassAug").exists()
    assert len(D.open_seg_dataset("voc", tmp_path / "voc", "train")) == 3


def test_reference_lists_on_a_voc_layout(tmp_path):
    from mosic.evaluation.file_sets import list_path, read_list, training_subset

    ids = read_list(list_path("voc", "trainaug", 1 / 128, 783))
    extra = ["2007_000032", "2007_000039"]
    root = tmp_path / "VOC2012"
    for k, i in enumerate(ids + extra):
        _jpg(root / "JPEGImages" / f"{i}.jpg", k, 8, 6)
        _png(root / "SegmentationClassAug" / f"{i}.png", _label(k, 21, w=8, h=6), mode="L")
    (root / "SegmentationClass").mkdir()
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "trainaug.txt").write_text("".join(f"{i}\n" for i in extra + ids))
    ds = D.open_seg_dataset("voc", tmp_path, "trainaug")
    sub, source = training_subset(ds, 1 / 128, 783)
    assert sub.ids == ids and source == "list 1_div_128/trainaug_128_783.txt" and sub[0].label.shape == (6, 8)
    # a trainaug without one of the list's images: the error names the list and the image
    (sets / "trainaug.txt").write_text("".join(f"{i}\n" for i in extra + ids[1:]))
    with pytest.raises(MosicError, match=rf"trainaug_128_783\.txt names 1 image.*{ids[0]}"):
        training_subset(D.open_seg_dataset("voc", tmp_path, "trainaug"), 1 / 128, 783)
    assert ds.fingerprint() != D.open_seg_dataset("voc", tmp_path, "trainaug").fingerprint()


def test_ytvos_heldout_split_scores_only_the_videos_training_leaves_out(tmp_path):
    from mosic.data import holdout

    make_ytvos(tmp_path)
    ra, rb = holdout.heldout_rank("vidA"), holdout.heldout_rank("vidB")
    ds = D.open_video_dataset("ytvos", tmp_path, "heldout", frames=2, holdout=(ra + rb) / 2)  # one of the two
    assert ds.video_ids == [min(("vidA", "vidB"), key=holdout.heldout_rank)] and ds.split == "heldout"
    assert ds.num_classes == 4  # categories of the whole train split
    with pytest.raises(MosicError, match="held out"):
        D.open_video_dataset("ytvos", tmp_path, "heldout", holdout=min(ra, rb) / 2)


def test_one_module_per_data_set_behind_the_registry_and_the_old_names_still_import():
    import importlib

    old = ("ADE20K_CLASSES DEFAULT_CLIP_FRAMES EXPORT_FORMAT EXPORT_MARKER IGNORE SEG_KINDS SYNTHETIC_EVERY SegDataset "
           "SegSample VIDEO_KINDS VOC_CLASSES VideoClipSample VideoSegDataset export_synthetic_voc open_seg_dataset "
           "open_video_dataset select_frames voc_colormap").split()
    assert [n for n in old if not hasattr(D, n)] == []
    assert D.SEG_KINDS == ("voc", "ade20k", "synthetic") and D.VIDEO_KINDS == ("davis", "ytvos", "synthetic")
    for kind in {*D.SEG_KINDS, *D.VIDEO_KINDS}:
        importlib.import_module(f"mosic.evaluation.datasets.{kind}")
    assert D._open_voc.__module__.endswith(".voc") and D._open_davis.__module__.endswith(".davis")
    assert D.VIDEO_READERS["ytvos"].__module__.endswith(".ytvos")
    with pytest.raises(MosicError, match="unknown image segmentation data set 'coco'"):
        D.open_seg_dataset("coco", ".", "val")
