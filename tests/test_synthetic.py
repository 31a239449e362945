"""The synthetic data set: layout, determinism, and that its ground truth matches its pixels."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import map_coordinates, maximum_filter, minimum_filter
from typer.testing import CliRunner

from mosic import MosicError
from mosic.config import ClipSettings
from mosic.data.base import create_source, plan_clips
from mosic.data.synthetic import (
    CLASSES,
    SyntheticGroundTruth,
    SyntheticSource,
    cv2_matrix,
    generate,
    is_generated,
    load_classes,
    load_ground_truth,
    make_scene,
)

W, H, T, SEED = 176, 128, 24, 3


@pytest.fixture(scope="module")
def synset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    ids = generate(root, 3, seed=SEED, num_frames=T, width=W, height=H)
    return root, ids


def load_frame(root: Path, vid: str, t: int) -> np.ndarray:
    return np.array(Image.open(root / "train" / "JPEGImages" / vid / f"{t:05d}.jpg"))


def load_mask(root: Path, vid: str, t: int) -> np.ndarray:
    im = Image.open(root / "train" / "Annotations" / vid / f"{t:05d}.png")
    assert im.mode == "P"
    return np.array(im)


def pixel_centres(w: int = W, h: int = H) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)


def interior(labels: np.ndarray, size: int = 5) -> np.ndarray:
    """Pixels whose size x size neighbourhood holds one label only (away from layer boundaries)."""
    return minimum_filter(labels, size) == maximum_filter(labels, size)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------------
def test_layout_meta_and_classes(synset):
    root, ids = synset
    assert ids == ["syn00000", "syn00001", "syn00002"]
    assert load_classes(root) == list(CLASSES) and CLASSES[0] == "background" and 4 <= len(CLASSES) - 1 <= 6
    meta = json.loads((root / "train" / "meta.json").read_text())
    assert sorted(meta["videos"]) == ids
    lengths = []
    for vid in ids:
        jpgs = sorted((root / "train" / "JPEGImages" / vid).glob("*.jpg"))
        pngs = sorted((root / "train" / "Annotations" / vid).glob("*.png"))
        n = len(jpgs)
        lengths.append(n)
        assert [p.name for p in jpgs] == [f"{t:05d}.jpg" for t in range(n)]
        assert [p.stem for p in pngs] == [p.stem for p in jpgs]
        assert Image.open(jpgs[0]).size == (W, H)  # non-square, (width, height)
        gt = load_ground_truth(root, vid)
        assert (gt.video_id, gt.num_frames, gt.width, gt.height) == (vid, n, W, H)
        objs = meta["videos"][vid]["objects"]
        assert 2 <= len(objs) <= 5 and sorted(objs, key=int) == [str(i) for i in gt.object_ids]
        masks = [load_mask(root, vid, t) for t in range(n)]
        for oid, o in objs.items():
            assert o["category"] == CLASSES[gt.class_of(int(oid))] and o["category"] != "background"
            assert o["frames"] == [f"{t:05d}" for t in range(n) if (masks[t] == int(oid)).any()]
    # lengths vary around T (75%..125%)
    assert all(0.75 * T <= n <= 1.25 * T for n in lengths) and len(set(lengths)) > 1


def test_deterministic_by_seed_and_distinct(tmp_path):
    kw = dict(num_frames=6, width=96, height=64)
    generate(tmp_path / "a", 2, seed=5, **kw)
    generate(tmp_path / "b", 2, seed=5, **kw)
    generate(tmp_path / "c", 2, seed=6, **kw)
    generate(tmp_path / "a", 2, seed=5, split="valid", **kw)
    a, b, c = (tree_digest(tmp_path / x / "train") for x in "abc")
    assert a == b and len(a) > 10
    assert a["JPEGImages/syn00000/00000.jpg"] != c.get("JPEGImages/syn00000/00000.jpg")
    assert a["JPEGImages/syn00000/00000.jpg"] != a["JPEGImages/syn00001/00000.jpg"]
    v = tree_digest(tmp_path / "a" / "valid")
    assert v["JPEGImages/syn00000/00000.jpg"] != a["JPEGImages/syn00000/00000.jpg"]
    # exact length on request
    generate(tmp_path / "e", 3, seed=5, exact_length=True, **kw)
    assert [len(list((tmp_path / "e/train/JPEGImages" / f"syn{i:05d}").glob("*.jpg"))) for i in range(3)] == [6] * 3


def test_masks_agree_with_layer_at(synset):
    root, ids = synset
    pts = pixel_centres()
    for vid in ids:
        gt = load_ground_truth(root, vid)
        for t in range(0, gt.num_frames, 4):
            lay = gt.layer_at(t, pts).reshape(H, W)
            mask = load_mask(root, vid, t)
            assert (lay == mask).mean() >= 0.98, (vid, t)
            assert lay.max() > 0  # some object is in the picture


def test_cv2_matrix_pixel_centre_convention():
    # a 2x2 texture scaled by 2 (about the origin) onto a 4x4 image
    tex = np.array([[0, 100], [200, 40]], np.float32)
    A = np.array([[2.0, 0, 0], [0, 2.0, 0]])
    out = cv2.warpAffine(tex, cv2_matrix(A), (4, 4), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # image pixel (col 1, row 0): centre (1.5, 0.5) -> local (0.75, 0.25): texel coords (0.25, -0.25)
    assert out[0, 1] == pytest.approx(0.75 * 0 + 0.25 * 100, abs=0.5)
    # image pixel (col 0, row 2): centre (0.5, 2.5) -> local (0.25, 1.25): texel coords (-0.25, 0.75)
    assert out[2, 0] == pytest.approx(0.25 * 0 + 0.75 * 200, abs=0.5)
    assert out[0, 0] == 0 and out[3, 3] == pytest.approx(40, abs=0.5)


def test_render_samples_textures_at_the_affine(tmp_path):
    """Independent check of the renderer: every layer's pixels equal its texture sampled (bilinear,
    pixel-centre convention) at A^-1(pixel centre); half-pixel or x/y-swapped samplings do not."""
    scene = make_scene(4, seed=SEED, num_frames=12, width=W, height=H, exact_length=True)
    gt = scene.ground_truth()
    t = 7
    rgb, mask = scene.render(t)
    pts = pixel_centres()
    lay = gt.layer_at(t, pts).reshape(H, W)
    assert (lay == mask).mean() > 0.98
    inner = interior(lay).ravel()
    for L in scene.layers:
        sel = inner & (lay.ravel() == L.id)
        if sel.sum() < 30:
            continue
        A = L.affines[t]
        Ainv = np.linalg.inv(np.vstack([A, [0, 0, 1]]))[:2]
        local = pts[sel] @ Ainv[:, :2].T + Ainv[:, 2]
        got = rgb.reshape(-1, 3)[sel].astype(np.float64)

        def err(loc, swap=False):
            r, c = (loc[:, 0], loc[:, 1]) if swap else (loc[:, 1], loc[:, 0])
            s = np.stack(
                [map_coordinates(L.texture[..., k].astype(np.float64), [r - 0.5, c - 0.5], order=1, mode="nearest") for k in range(3)],
                -1,
            )
            return np.abs(s - got).mean()

        e = err(local)
        assert e < 1.5, (L.id, e)
        for shifted in (local + [0.5, 0], local + [0, 0.5], local - [0.5, 0.5]):
            assert err(shifted) > 2 * e + 1.0, L.id
        assert err(local, swap=True) > 5 * e + 3.0


def test_tracks_match_pixels_between_frames(synset):
    """Colour at a track's position on frame q == colour of the query pixel on frame t, for points
    visible in both (query frame != 0); +-0.5 px or x/y swapped tracks do clearly worse."""
    root, ids = synset
    pts = pixel_centres()
    for vid in ids:
        gt = load_ground_truth(root, vid)
        t, q = gt.num_frames - 2, 1
        Ft, Fq = load_frame(root, vid, t).astype(np.float32), load_frame(root, vid, q).astype(np.float32)
        tracks, vis = gt.track(t, pts, [t, q])
        np.testing.assert_allclose(tracks[0], pts, atol=1e-4)  # the query frame returns the query
        assert vis[0].all()
        lay = gt.layer_at(t, pts).reshape(H, W)
        sel = vis[1] & interior(lay).ravel()
        assert sel.sum() > 0.3 * W * H
        # also stay away from boundaries on frame q
        lq = gt.layer_at(q, tracks[1])
        assert (lq[sel] == lay.ravel()[sel]).all()

        def err(p):
            s = cv2.remap(Fq, (p[:, 0] - 0.5).reshape(H, W), (p[:, 1] - 0.5).reshape(H, W), cv2.INTER_LINEAR)
            return np.abs(s.reshape(-1, 3)[sel] - Ft.reshape(-1, 3)[sel]).mean()

        e = err(tracks[1])
        assert e < 4.5, (vid, e)
        for d in ([0.5, 0], [0, 0.5], [-0.5, 0], [0, -0.5]):
            assert err(tracks[1] + np.float32(d)) > 1.25 * e, (vid, d)
        assert err(tracks[1][:, ::-1].copy()) > 3 * e


def test_track_round_trip_and_arguments(synset):
    root, ids = synset
    gt = load_ground_truth(root, ids[0])
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [W, H], (300, 2))
    tr, vis = gt.track(3, pts, [3, 9, 15])
    assert tr.dtype == np.float32 and tr.shape == (3, 300, 2) and vis.dtype == bool and vis.shape == (3, 300)
    own = gt.layer_at(3, pts)
    back, vis_back = gt.track(15, tr[2], [3])
    ok = vis[2]
    assert ok.sum() > 100
    np.testing.assert_allclose(back[0][ok], pts[ok], atol=1e-3)
    assert (gt.layer_at(15, tr[2][ok]) == own[ok]).all()
    with pytest.raises(MosicError, match="out of range"):
        gt.track(0, pts, [gt.num_frames])
    with pytest.raises(MosicError, match="out of range"):
        gt.layer_at(-1, pts)


def test_visibility_agrees_with_masks(synset):
    root, ids = synset
    pts = pixel_centres()[::7]
    for vid in ids:
        gt = load_ground_truth(root, vid)
        frames = list(range(gt.num_frames))
        tr, vis = gt.track(2, pts, frames)
        own = gt.layer_at(2, pts)
        agree, n = 0, 0
        for t in frames:
            m = load_mask(root, vid, t)
            p = tr[t]
            inb = (p[:, 0] >= 0) & (p[:, 0] < W) & (p[:, 1] >= 0) & (p[:, 1] < H)
            assert not (vis[t] & ~inb).any()
            c = np.clip(p[inb].astype(int), 0, [W - 1, H - 1])
            agree += ((m[c[:, 1], c[:, 0]] == own[inb]) == vis[t][inb]).sum()
            n += inb.sum()
        assert agree / n > 0.97, vid


def test_objects_leave_and_reenter(synset):
    root, ids = synset
    for vid in ids:
        gt = load_ground_truth(root, vid)
        d = json.loads((root / "train" / "GroundTruth" / f"{vid}.json").read_text())
        (swing,) = [L["id"] for L in d["layers"] if L["motion"].get("kind") == "edge_swing"]
        m0 = load_mask(root, vid, 0)
        pts = pixel_centres()[(m0 == swing).ravel()]
        pts = pts[gt.layer_at(0, pts) == swing]  # (drop mask pixels on the boundary)
        assert len(pts) > 20
        tr, vis = gt.track(0, pts, range(gt.num_frames))
        out = (tr[..., 0] < 0) | (tr[..., 0] >= W) | (tr[..., 1] < 0) | (tr[..., 1] >= H)
        found = False
        for k in range(len(pts)):
            if not vis[0, k]:
                continue
            gone = np.flatnonzero(out[:, k])
            if len(gone) and vis[gone[0]:, k].any():
                found = True
                break
        assert found, vid
        # the whole object is out of the picture for a while, and its mask is empty then
        vanished = [t for t in range(gt.num_frames) if out[t].all()]
        assert vanished and not (load_mask(root, vid, vanished[0]) == swing).any()
        assert vis[vanished[-1] + 1 :].any()


def test_occlusion_of_background_and_objects(synset):
    root, ids = synset
    pts = pixel_centres()[::5]
    bg_occluded = obj_occluded = 0
    for vid in ids:
        gt = load_ground_truth(root, vid)
        tr, vis = gt.track(0, pts, range(gt.num_frames))
        own = gt.layer_at(0, pts)
        for t in range(gt.num_frames):
            p = tr[t]
            inb = (p[:, 0] >= 0) & (p[:, 0] < W) & (p[:, 1] >= 0) & (p[:, 1] < H)
            hidden = inb & ~vis[t]
            top = gt.layer_at(t, p)
            assert (top[hidden] != own[hidden]).all()
            bg_occluded += (hidden & (own == 0)).sum()
            obj_occluded += (hidden & (own > 0) & (top > 0)).sum()
        # a background point hidden by an object later shows again
        bg = own == 0
        reappear = bg & (~vis[1:-1] & vis[-1:] | ~vis[1:-1] & vis[:1]).any(0)
        assert reappear.any(), vid
    assert bg_occluded > 100 and obj_occluded > 10


def test_synthetic_source(synset, tmp_path):
    root, ids = synset
    src = create_source("synthetic", root)
    assert isinstance(src, SyntheticSource)
    vids = src.videos()
    assert [v.video_id for v in vids] == ids and all((v.width, v.height) == (W, H) for v in vids)
    frames = src.read_frames(ids[1], [4, 0])
    np.testing.assert_array_equal(frames[0], load_frame(root, ids[1], 4))
    np.testing.assert_array_equal(frames[1], load_frame(root, ids[1], 0))
    gt = src.ground_truth(ids[1])
    assert isinstance(gt, SyntheticGroundTruth) and gt.num_frames == vids[1].num_frames
    assert src.classes() == list(CLASSES) and src.meta()["videos"].keys() == set(ids)
    clips, failures = plan_clips(vids, ClipSettings(length=6, step=3, stride=None))
    assert not failures and len(clips) == 3
    for c in clips:
        assert c.frames == tuple(range(0, 16, 3)) and (c.width, c.height) == (W, H)
    assert src.read_clip(clips[2]).shape == (6, H, W, 3)
    # a plain YouTube-VOS folder is not a synthetic set
    (tmp_path / "train" / "JPEGImages" / "v").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train/JPEGImages/v/00000.jpg")
    with pytest.raises(MosicError, match="GroundTruth"):
        SyntheticSource(tmp_path).videos()
    with pytest.raises(MosicError, match="GroundTruth/nope.json"):
        load_ground_truth(root, "nope")


def test_refuse_other_set_overwrite_and_reuse(tmp_path):
    kw = dict(num_frames=4, width=64, height=48, exact_length=True)
    generate(tmp_path, 2, seed=1, **kw)
    first = tmp_path / "train/JPEGImages/syn00000/00000.jpg"
    stamp = first.stat().st_mtime_ns
    assert is_generated(tmp_path, 2, 1, "train", 4, 64, 48, exact_length=True)
    time.sleep(0.01)
    generate(tmp_path, 2, seed=1, **kw)  # the same set: left as it is
    assert first.stat().st_mtime_ns == stamp
    with pytest.raises(MosicError, match="different synthetic set.*seed=1, not 2.*--overwrite"):
        generate(tmp_path, 2, seed=2, **kw)
    generate(tmp_path, 1, seed=2, overwrite=True, **kw)
    assert sorted(p.name for p in (tmp_path / "train/JPEGImages").iterdir()) == ["syn00000"]
    # a folder with other data is refused too
    other = tmp_path / "other"
    (other / "train" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(MosicError, match="other data"):
        generate(other, 1, **kw)


def test_cli_synthetic(tmp_path):
    from mosic.cli_data import app

    runner = CliRunner()
    out = tmp_path / "set"
    args = ["synthetic", "--out", str(out), "--videos", "2", "--frames", "5", "--size", "80x48", "--exact-length", "-q"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "wrote 2 videos, 10 frames of 80x48" in r.output
    assert Image.open(out / "train/JPEGImages/syn00001/00004.jpg").size == (80, 48)
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "nothing to do" in r.output
    r = runner.invoke(app, args[:4] + ["3"] + args[5:])
    assert r.exit_code == 2 and "error:" in r.output and "--overwrite" in r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    r = runner.invoke(app, args[:4] + ["3"] + args[5:] + ["--overwrite"])
    assert r.exit_code == 0 and len(list((out / "train/JPEGImages").iterdir())) == 3
    r = runner.invoke(app, ["synthetic", "--out", str(out), "--videos", "1", "--size", "80by48"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["synthetic", "--help"])
    assert r.exit_code == 0 and "--videos" in r.output and "--overwrite" in r.output


def test_the_set_in_parts_and_every_old_name_still_imports():
    """mosic/data/synthetic/ holds one concept per module (drawing, motion, scene, ground truth,
    writing, the frame source); mosic.data.synthetic still gives every name it had."""
    import importlib

    import mosic.data.synthetic as S
    from mosic.data import SOURCES

    old = "CLASSES CLASS_SHAPES CLASS_TEXTURES GENERATOR GT_FORMAT JPEG_QUALITY Layer MIN_SIZE Scene SyntheticGroundTruth SyntheticSource apply_affine cv2_matrix generate generation_spec invert_affines is_generated load_classes load_ground_truth make_scene read_spec shape_sdf write_video list_jpegs voc_colormap".split()
    assert [n for n in old if not hasattr(S, n)] == []
    for part, name in [("drawing", "shape_sdf"), ("motion", "invert_affines"), ("scene", "make_scene"),
                       ("ground_truth", "SyntheticGroundTruth"), ("writing", "generate"), ("source", "SyntheticSource")]:
        assert getattr(importlib.import_module(f"mosic.data.synthetic.{part}"), name) is getattr(S, name)
    assert SOURCES.get("synthetic") is S.SyntheticSource
