"""JPEG-folder frame sources (YouTube-VOS, DAVIS): layout, order, colours, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosic import MosicError
from mosic.config import ClipSettings
from mosic.data.base import SOURCES, FrameReadError, create_source, plan_clips
from mosic.data.sources import DavisSource, YtvosSource, natural_key

W, H = 64, 48


def frame_image(i: int, vid: int = 0) -> np.ndarray:
    """A frame that identifies its index (red level) and video (green level), with a blue bar on
    the left quarter so a flip or transpose would show."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 20 + 15 * i
    img[..., 1] = 40 + 60 * vid
    img[..., 2] = 10
    img[:, : W // 4, 2] = 230
    return img


def write_jpeg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=95)


def make_ytvos(root: Path, split: str = "train", videos: int = 2, frames: int = 5, names=None) -> None:
    for v in range(videos):
        d = root / split / "JPEGImages" / f"vid{v}"
        d.mkdir(parents=True)
        # create in reverse so that directory order is not filename order
        for i in reversed(range(frames)):
            name = names[i] if names else f"{5 * i:05d}.jpg"
            write_jpeg(d / name, frame_image(i, v))


def check_frames(frames: np.ndarray, indices, vid: int = 0) -> None:
    assert frames.dtype == np.uint8 and frames.shape == (len(indices), H, W, 3)
    for f, i in zip(frames, indices):
        centre = f[H // 2 - 4 : H // 2 + 4, W // 2 - 4 : W // 2 + 4].reshape(-1, 3).mean(0)
        np.testing.assert_allclose(centre, [20 + 15 * i, 40 + 60 * vid, 10], atol=4)  # RGB, not BGR
        assert f[H // 2, 2, 2] > 200 and f[H // 2, W - 3, 2] < 40  # blue bar on the left


def test_registry_has_builtin_sources():
    assert {"ytvos", "davis", "synthetic", "videos"} <= set(SOURCES.names())


def test_ytvos_scan_and_read_order_and_colours(tmp_path):
    make_ytvos(tmp_path)
    src = create_source("ytvos", tmp_path)
    assert isinstance(src, YtvosSource)
    vids = src.videos()
    assert [v.video_id for v in vids] == ["vid0", "vid1"]
    assert all((v.num_frames, v.width, v.height) == (5, W, H) for v in vids)
    check_frames(src.read_frames("vid0", [0, 1, 2, 3, 4]), [0, 1, 2, 3, 4])
    check_frames(src.read_frames("vid1", [4, 0, 2]), [4, 0, 2], vid=1)
    assert src.frame_name("vid0", 3) == "00015"
    assert src.meta() is None


def test_natural_filename_order(tmp_path):
    names = ["1.jpg", "2.jpg", "10.jpg", "11.jpg"]
    make_ytvos(tmp_path, videos=1, frames=4, names=names)
    src = YtvosSource(tmp_path)
    assert src.video("vid0").num_frames == 4
    check_frames(src.read_frames("vid0", [0, 1, 2, 3]), [0, 1, 2, 3])
    assert sorted(["f10", "f9", "f1"], key=natural_key) == ["f1", "f9", "f10"]


def test_ytvos_valid_split_meta_and_annotations(tmp_path):
    make_ytvos(tmp_path, split="valid", videos=1, frames=3)
    meta = {"videos": {"vid0": {"objects": {"1": {"category": "cat", "frames": ["00000"]}}}}}
    (tmp_path / "valid" / "meta.json").write_text(json.dumps(meta))
    ann = np.zeros((H, W), np.uint8)
    ann[10:20, 30:40] = 1
    (tmp_path / "valid" / "Annotations" / "vid0").mkdir(parents=True)
    im = Image.fromarray(ann, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.save(tmp_path / "valid" / "Annotations" / "vid0" / "00000.png")

    src = YtvosSource(tmp_path, split="valid")
    assert src.meta() == meta
    np.testing.assert_array_equal(src.read_annotation("vid0", 0), ann)
    assert src.read_annotation("vid0", 1) is None
    with pytest.raises(MosicError, match=r"train/JPEGImages"):
        YtvosSource(tmp_path, split="train").videos()


def test_missing_root_and_empty_folders(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(MosicError) as e:
        YtvosSource(missing).videos()
    assert str(missing) in str(e.value) and "expected" in str(e.value) and "JPEGImages" in str(e.value)

    (tmp_path / "empty" / "train" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(MosicError, match="no videos"):
        YtvosSource(tmp_path / "empty").videos()

    # a video folder without JPEGs is skipped, the others are listed
    make_ytvos(tmp_path / "some", videos=1, frames=2)
    (tmp_path / "some" / "train" / "JPEGImages" / "hollow").mkdir()
    src = YtvosSource(tmp_path / "some")
    assert [v.video_id for v in src.videos()] == ["vid0"]
    assert "hollow" in src.skipped


def test_corrupt_truncated_and_out_of_range_frames(tmp_path):
    make_ytvos(tmp_path, videos=1, frames=4)
    d = tmp_path / "train" / "JPEGImages" / "vid0"
    good = (d / "00005.jpg").read_bytes()
    (d / "00005.jpg").write_bytes(good[: len(good) // 2])  # frame 1 truncated
    (d / "00010.jpg").write_bytes(b"this is not a jpeg")  # frame 2 garbage
    write_jpeg(d / "00015.jpg", np.zeros((H + 2, W, 3), np.uint8))  # frame 3 wrong size

    src = YtvosSource(tmp_path)
    assert src.video("vid0").num_frames == 4  # scanning reads the first frame's header only
    check_frames(src.read_frames("vid0", [0]), [0])
    for idx, words in [(1, "truncated"), (2, "JPEG"), (3, f"{W}x{H + 2}"), (4, "out of range"), (-1, "out of range")]:
        with pytest.raises(FrameReadError) as e:
            src.read_frames("vid0", [0, idx])
        assert e.value.video_id == "vid0" and e.value.frame == idx
        assert "'vid0'" in str(e.value) and f"frame {idx}" in str(e.value) and words in str(e.value)
    with pytest.raises(MosicError, match="no such video"):
        src.read_frames("vid9", [0])


def test_unreadable_first_frame_skips_video(tmp_path):
    make_ytvos(tmp_path, videos=2, frames=2)
    (tmp_path / "train" / "JPEGImages" / "vid1" / "00000.jpg").write_bytes(b"garbage")
    src = YtvosSource(tmp_path)
    assert [v.video_id for v in src.videos()] == ["vid0"]
    assert "vid1" in src.skipped


def test_ytvos_raw_frame_numbers_from_file_names(tmp_path):
    """'train' keeps every 5th raw frame (00000, 00005, ...), 'train_all_frames' every one: clip
    steps count raw frames on both, so step 10 is every 2nd file of 'train' and every 10th of
    'train_all_frames'. Names without numbers count as consecutive frames."""
    make_ytvos(tmp_path, split="train", videos=1, frames=8)
    make_ytvos(tmp_path, split="train_all_frames", videos=1, frames=16, names=[f"{i:05d}.jpg" for i in range(16)])
    make_ytvos(tmp_path, split="odd", videos=1, frames=3, names=["a.jpg", "b.jpg", "c.jpg"])
    sub, full = YtvosSource(tmp_path, "train"), YtvosSource(tmp_path, "train_all_frames")
    assert sub.video("vid0").frame_numbers == tuple(range(0, 40, 5))
    assert full.video("vid0").frame_numbers == tuple(range(16))
    assert YtvosSource(tmp_path, "odd").video("vid0").raw_numbers().tolist() == [0, 1, 2]
    cs = ClipSettings(length=3, step=10, stride=15)
    a, _ = plan_clips(sub.videos(), cs)
    assert [c.frames for c in a] == [(0, 2, 4), (3, 5, 7)]  # raw 0, 10, 20 and 15, 25, 35
    assert [[sub.frame_name("vid0", i) for i in c.frames] for c in a] == [["00000", "00010", "00020"],
                                                                          ["00015", "00025", "00035"]]
    b, _ = plan_clips(full.videos(), ClipSettings(length=3, step=4, stride=6))
    assert [c.frames for c in b] == [(0, 4, 8), (6, 10, 14)]


def test_read_clip_and_plan_clips(tmp_path):
    make_ytvos(tmp_path, videos=2, frames=7, names=[f"{i:05d}.jpg" for i in range(7)])
    src = create_source("ytvos", tmp_path)
    clips, failures = plan_clips(src.videos(), ClipSettings(length=3, step=2, clips_per_video=2, stride=None))
    assert not failures
    assert [c.frames for c in clips] == [(0, 2, 4), (2, 4, 6)] * 2
    frames = src.read_clip(clips[1])
    check_frames(frames, [2, 4, 6])
    clips, failures = plan_clips(src.videos(), ClipSettings(length=8, step=1, short_videos="skip", stride=None))
    assert not clips and [f.video_id for f in failures] == ["vid0", "vid1"]


def make_davis(root: Path, res: str = "480p") -> None:
    for v in range(2):
        for i in range(3):
            write_jpeg(root / "JPEGImages" / res / f"dv{v}" / f"{i:05d}.jpg", frame_image(i, v))
    ann = np.zeros((H, W), np.uint8)
    ann[5:9, 5:9] = 2
    p = root / "Annotations" / res / "dv0"
    p.mkdir(parents=True)
    Image.fromarray(ann, mode="L").save(p / "00000.png")


def test_davis_layout_and_resolutions(tmp_path):
    make_davis(tmp_path)
    for split in ("480p", "train"):
        src = create_source("davis", tmp_path, split=split)
        assert isinstance(src, DavisSource) and src.resolution == "480p"
        assert [(v.video_id, v.num_frames, v.width, v.height) for v in src.videos()] == [
            ("dv0", 3, W, H),
            ("dv1", 3, W, H),
        ]
        check_frames(src.read_frames("dv1", [2, 1]), [2, 1], vid=1)
    assert src.read_annotation("dv0", 0)[6, 6] == 2
    with pytest.raises(MosicError) as e:
        DavisSource(tmp_path, split="Full-Resolution").videos()
    assert "JPEGImages/Full-Resolution" in str(e.value) and "expected" in str(e.value)
    with pytest.raises(MosicError, match="unknown split"):
        DavisSource(tmp_path, split="val")
    make_davis(tmp_path / "full", res="Full-Resolution")
    assert len(DavisSource(tmp_path / "full", split="Full-Resolution").videos()) == 2
