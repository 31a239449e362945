"""Reduced JPEG decoding (mosic.data.decode) and the training crops made from it: the reduced pixel
grid is measured against the full decode, and crops from reduced frames are checked against the
full-resolution path and against exact (oracle) tracks."""

import cv2
import numpy as np
import pytest
import torch

from mosic.config import load_pipeline
from mosic.data.base import FrameReadError
from mosic.data.decode import decode_jpeg_reduced, reduced_size, reduction_factor
from mosic.data.sources import YtvosSource
from mosic.data.synthetic import generate
from mosic.precompute.runner import precompute
from mosic.train.augment import CropBox, apply_crop, map_tracks, max_reduction, reduce_box
from mosic.train.dataset import ClipDataset
from conftest import oracle_store

S = 64


def _texture(w, h, seed=0):
    """A smooth random colour texture (features of a few pixels), uint8 [h, w, 3] RGB."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), 3)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def _block_mean(img, s):
    h, w = (img.shape[0] // s) * s, (img.shape[1] // s) * s
    x = img[:h, :w].astype(np.float64)
    return x.reshape(h // s, s, w // s, s, 3).mean(axis=(1, 3))


def _shift(img, dx, dy):
    M = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img.astype(np.float32), M, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE).astype(np.float64)


@pytest.mark.parametrize("s", [2, 4, 8])
def test_reduced_decode_is_the_block_average_at_shift_zero(tmp_path, s):
    """Reduced pixel k averages full pixels [k s, (k + 1) s): source coordinate / s, exactly."""
    w, h = 331, 247  # not multiples of 8: libjpeg rounds the reduced size up
    path = tmp_path / "f.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(_texture(w, h), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    full = decode_jpeg_reduced(path, "v", 0, 1)
    red = decode_jpeg_reduced(path, "v", 0, s)
    assert red.shape == (-(-h // s), -(-w // s), 3) and reduced_size(w, h, s) == (red.shape[1], red.shape[0])
    ref = _block_mean(full, s)
    m = 2  # leave the border out (shifted images replicate it)
    hh, ww = ref.shape[:2]
    err = {}
    for dx, dy in [(0, 0), (0.3, 0), (-0.3, 0), (0, 0.3), (0, -0.3)]:
        sh = _shift(red[:hh, :ww], dx, dy)
        err[(dx, dy)] = np.abs(sh - ref)[m:-m, m:-m].mean()
    assert err[(0, 0)] < 2.0, err
    assert all(err[(0, 0)] < e for k, e in err.items() if k != (0, 0)), err


def test_reduction_factor():
    assert [reduction_factor(f) for f in (0.5, 1, 1.99, 2, 3.99, 4, 7.9, 8, 100)] == [1, 1, 1, 2, 2, 4, 4, 8, 8]
    assert reduction_factor(float("nan")) == 1 and reduction_factor(float("inf")) == 1


def test_reduced_decode_names_a_corrupt_or_truncated_file(tmp_path):
    path = tmp_path / "f.jpg"
    cv2.imwrite(str(path), _texture(64, 48))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameReadError, match="truncated") as e:
        decode_jpeg_reduced(path, "vid", 3, 2)
    assert "vid" in str(e.value) and "frame 3" in str(e.value) and str(path) in str(e.value)
    path.write_bytes(b"\xff\xd8" + b"\x00" * 200 + b"\xff\xd9")
    with pytest.raises(FrameReadError, match="not a readable JPEG"):
        decode_jpeg_reduced(path, "vid", 3, 4)
    with pytest.raises(ValueError):
        decode_jpeg_reduced(path, "vid", 3, 3)


# ------------------------------------------------------------------------------------------------
# crops from reduced frames
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """Frames 7x the output size across (448 x 336 for S = 64), as 1280 x 720 is for 224: most
    crops decode at 1/2 or 1/4."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate(root, videos=2, seed=2, num_frames=20, width=448, height=336)
    res = oracle_store(root, tmp_path_factory.mktemp("stores"), grid=8, length=3, step=4, clips_per_video=3,
                        clips_per_chunk=4)
    assert res.done == 6
    return res.store


def _bilinear(img, pts):
    map_x = (pts[:, 0] - 0.5).astype(np.float32)[None]
    map_y = (pts[:, 1] - 0.5).astype(np.float32)[None]
    out = cv2.remap(img.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out[0].astype(np.float64)


def test_source_reads_reduced_frames_at_the_largest_covering_factor(big_store):
    ds = ClipDataset(big_store, out_size=S)
    clip = ds.reader.clips[0]
    full = ds.source.read_frames(clip.video_id, clip.frames)
    for max_factor, s in [(1.5, 1), (2.5, 2), (5, 4), (9, 8)]:
        frames, got = ds.source.read_frames_reduced(clip.video_id, clip.frames, max_factor)
        assert got == s and frames.shape == (3, -(-336 // s), -(-448 // s), 3)
        if s == 1:
            np.testing.assert_array_equal(frames, full)
    assert isinstance(ds.source, YtvosSource)


def test_crops_from_reduced_frames_match_the_full_resolution_path(big_store):
    """Same tracks bit for bit; frames within a small grey-level difference of the full path; and
    aligned: shifting the full path's crop by 0.3 output pixels makes the difference larger."""
    fast = ClipDataset(big_store, out_size=S, reduced_decode=True)
    slow = ClipDataset(big_store, out_size=S, reduced_decode=False)
    factors, diffs, shifted, good, wrong = [], [], [], [], []
    for epoch in range(3):
        for i in range(len(fast)):
            a, b = fast[(epoch, i)], slow[(epoch, i)]
            np.testing.assert_array_equal(a["tracks"].numpy(), b["tracks"].numpy())
            np.testing.assert_array_equal(a["visibility"].numpy(), b["visibility"].numpy())
            box = fast.crop(i, epoch)
            item, red, s = fast.read_clip(i, max_factor=max_reduction(box))
            _, full = slow.read_clip(i)
            factors.append(s)
            crop_fast = apply_crop(red, reduce_box(box, s))
            crop_full = apply_crop(full, box)
            torch.testing.assert_close(a["frames"], _norm(crop_fast))
            diffs.append(np.abs(crop_fast.astype(np.float64) - crop_full).mean())
            for dx, dy in [(0.3, 0), (-0.3, 0), (0, 0.3), (0, -0.3)]:
                moved = CropBox(box.x0 + dx * box.w / S, box.y0 + dy * box.h / S, box.w, box.h, box.flip, S)
                shifted.append(np.abs(crop_fast.astype(np.float64) - apply_crop(full, moved)).mean())
            # exact (oracle) tracks point at the same content in the source and in the fast crop
            tr, vis = map_tracks(item.tracks, item.visibility, box)
            tr_bad, _ = map_tracks(item.tracks, item.visibility, CropBox(box.x0, box.y0, box.w, box.h,
                                                                         not box.flip, S))
            for t in range(len(full)):
                v = vis[t]
                # the same physical blur on both sides, wide against the resampling (2 output px)
                src = _bilinear(cv2.GaussianBlur(full[t], (0, 0), 2 * box.w / S, sigmaY=2 * box.h / S),
                                item.tracks[t][v])
                blurred = cv2.GaussianBlur(crop_fast[t], (0, 0), 2)
                good.append(np.abs(src - _bilinear(blurred, tr[t][v])).mean(1))
                wrong.append(np.abs(src - _bilinear(blurred, tr_bad[t][v])).mean(1))
    assert {2, 4} <= set(factors), factors  # the reduced path really ran
    diffs, shifted = np.array(diffs), np.array(shifted)
    assert diffs.mean() < 2.5 and diffs.max() < 4, diffs
    assert shifted.mean() > 1.5 * diffs.mean(), (diffs.mean(), shifted.mean())
    good, wrong = np.concatenate(good), np.concatenate(wrong)
    assert len(good) > 200 and np.median(good) < 1.5 and good.mean() < 2.5, (np.median(good), good.mean())
    assert wrong.mean() > 5 * good.mean(), (good.mean(), wrong.mean())


def _norm(crop):
    from mosic.train.augment import to_uint8_chw

    return to_uint8_chw(crop)  # what the loader delivers


# ------------------------------------------------------------------------------------------------
# the frame cache
# ------------------------------------------------------------------------------------------------
def test_cache_side_covers_the_narrowest_crop():
    from mosic.store_schema.frame_cache import cache_side

    assert cache_side(224) == 410
    # the narrowest crop torchvision's draw can give (area 0.4, aspect 3/4) still has >= 224 cache px
    assert round((0.4 * 224 ** 2 * 0.75) ** 0.5) * 410 / 224 >= 224


def test_frame_cache_crops_match_the_full_path_and_damage_is_named(big_store, tmp_path, caplog):
    import shutil
    import subprocess
    import sys

    from mosic import MosicError
    from mosic.store_schema.frame_cache import FrameCache, cache_dir_for, cache_side

    store = tmp_path / big_store.name
    shutil.copytree(big_store, store)
    side = cache_side(S)
    assert ClipDataset(store, out_size=S).frame_cache is None  # none built yet
    r = subprocess.run([sys.executable, "-m", "mosic.store_schema.cli", "cache-frames", str(store),
                        "--out-size", str(S)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    folder = cache_dir_for(store, side)
    assert "6 clips" in r.stdout and folder.is_dir()
    cached = ClipDataset(store, out_size=S)
    assert cached.frame_cache is not None and cached.frame_cache.side == side
    slow = ClipDataset(store, out_size=S, frame_cache=None, reduced_decode=False)
    diffs, shifted = [], []
    for epoch in range(3):
        for i in range(len(cached)):
            a, b = cached[(epoch, i)], slow[(epoch, i)]
            np.testing.assert_array_equal(a["tracks"].numpy(), b["tracks"].numpy())
            box = cached.crop(i, epoch)
            _, cf, cbox = cached._read_cached(i, box)
            crop = apply_crop(cf, cbox).astype(np.float64)
            torch.testing.assert_close(a["frames"], _norm(crop.astype(np.uint8)))
            _, full = slow.read_clip(i)
            diffs.append(np.abs(crop - apply_crop(full, box)).mean())
            for dx, dy in [(0.3, 0), (-0.3, 0), (0, 0.3), (0, -0.3)]:
                moved = CropBox(box.x0 + dx * box.w / S, box.y0 + dy * box.h / S, box.w, box.h, box.flip, S)
                shifted.append(np.abs(crop - apply_crop(full, moved)).mean())
    # grey levels: the cache is resampled twice and JPEG-coded twice, still aligned with the source
    assert np.mean(diffs) < 3.0 and np.mean(shifted) > 1.3 * np.mean(diffs), (np.mean(diffs), np.mean(shifted))
    # a cache too small for the crops is refused, saying what is needed
    with pytest.raises(MosicError, match="need"):
        ClipDataset(store, out_size=2 * S, frame_cache=folder)
    # a damaged clip file names itself
    victim = sorted(folder.glob("c*.jpgs"))[0]
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(FrameReadError, match=victim.name):
        FrameCache(folder).read(int(victim.stem[1:]))
    # ... and training reads that clip from its source frames, with one warning naming the file
    # (per process) and a count, instead of stopping
    others = {p.name: p.stat().st_mtime_ns for p in folder.glob("c*.jpgs") if p != victim}
    ds = ClipDataset(store, out_size=S)
    index = int(victim.stem[1:])
    i = next(k for k in range(len(ds)) if ds.clip_index(k, 0) == index)
    src = ClipDataset(store, out_size=S, frame_cache=None)
    with caplog.at_level("WARNING", logger="mosic.train"):
        a, b = ds[(0, i)], ds[(1, i)]
    assert a["cache_fallback"] and b["cache_fallback"] and ds.cache_fallbacks == 2
    assert torch.equal(a["frames"], src[(0, i)]["frames"])
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert len(caplog.records) == 1 and victim.name in caplog.records[0].getMessage()
    assert not ds[(0, (i + 1) % len(ds))]["cache_fallback"]
    # cache-frames again rebuilds just the damaged file
    r = subprocess.run([sys.executable, "-m", "mosic.store_schema.cli", "cache-frames", str(store),
                        "--out-size", str(S)], capture_output=True, text=True)
    assert r.returncode == 0 and "1 damaged files rebuilt" in r.stdout, (r.stdout, r.stderr)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("c*.jpgs") if p != victim} == others
    assert FrameCache(folder).read(index).shape[0] == 3 and not ClipDataset(store, out_size=S)[(0, i)]["cache_fallback"]


def test_frames_no_larger_than_the_cache_are_not_cached(tmp_path):
    """320 x 240 against a 410 x 410 cache: the source decodes faster, so the clip stays with it."""
    from mosic.store_schema.frame_cache import build_frame_cache, cache_side, worth_caching

    assert worth_caching(1280, 720, 410) and not worth_caching(320, 240, 410) and not worth_caching(410, 410, 410)
    root = tmp_path / "small"
    generate(root, videos=1, seed=3, num_frames=8, width=96, height=72)  # 96 x 72 < 118 x 118
    over = {"dataset.root": str(root), "stores": str(tmp_path / "stores"), "tracker.name": "oracle",
            "tracker.grid": 4, "clips.length": 3, "clips.step": 2, "clips.clips_per_video": 2}
    store = precompute(load_pipeline("synthetic", overrides=over), progress=False).store
    folder = build_frame_cache(store, cache_side(S))
    assert not list(folder.glob("c*.jpgs"))
    ds = ClipDataset(store, out_size=S)
    plain = ClipDataset(store, out_size=S, frame_cache=None)
    assert torch.equal(ds[0]["frames"], plain[0]["frames"]) and ds.cache_fallbacks == 0
