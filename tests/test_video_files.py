import dataclasses
import os
import shutil

import av
import numpy as np
import pytest

from mosic import MosicError
from mosic.data.base import SOURCES, FrameReadError
from mosic.data.video_files import VideoFileSource, clear_scan_cache, probe_video

W, H = 96, 64
BITS = 6  # frame index as 6 black/white bands of 16 px in the top half


def frame_image(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            img[: H // 2, b * 16 : (b + 1) * 16] = 255
    img[H // 2 :, :, 0] = (i * 4) % 256
    img[H // 2 :, :, 1] = 255 - (i * 4) % 256
    return img


def frame_code(img: np.ndarray) -> int:
    bands = [img[4 : H // 2 - 4, b * 16 + 4 : (b + 1) * 16 - 4].mean() > 128 for b in range(BITS)]
    return sum(int(v) << b for b, v in enumerate(bands))


def encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def write_video(path, codec, n, gop=25, bframes=2, options=None, container_options=None):
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=25, options=options or {})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size = gop
        if bframes is not None:
            s.codec_context.max_b_frames = bframes
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


X264 = {"crf": "16", "x264-params": "scenecut=0:bframes=3"}
H264 = "libx264" if encoder_available("libx264") else None

# (file name, codec, frames, extra writer kwargs)
VIDEOS = [
    ("h264_bframes.mp4", H264 or "mpeg4", 60, {"options": X264} if H264 else {"options": {"qscale": "2"}}),
    ("sub/h264.mkv", H264 or "mpeg4", 40, {"options": X264} if H264 else {"options": {"qscale": "2"}}),
    ("mpeg4_bframes.avi", "mpeg4", 37, {"gop": 12, "options": {"qscale": "2"}}),
    ("mpeg4.mov", "mpeg4", 33, {"gop": 10, "options": {"qscale": "2"}}),
    ("program.mpg", "mpeg2video", 31, {"gop": 9, "options": {"qscale": "2"}}),
]
if encoder_available("libvpx"):
    VIDEOS.append(("vp8.webm", "libvpx", 35, {"gop": 10, "bframes": None, "options": {"crf": "4", "b": "2M"}}))


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for name, codec, n, kw in VIDEOS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name, codec, n, **kw)
    (root / "notes.txt").write_text("not a video")
    (root / "sub" / "deeper").mkdir()
    write_video(root / "sub" / "deeper" / "too_deep.mp4", "mpeg4", 5)
    return root


@pytest.fixture
def source(video_dir):
    return VideoFileSource(video_dir)


def expected_ids():
    return sorted(os.path.splitext(name)[0] for name, *_ in VIDEOS)


def test_scan_lists_videos_with_exact_counts_and_sizes(source):
    vids = source.videos()
    assert [v.video_id for v in vids] == expected_ids()
    counts = {os.path.splitext(name)[0]: n for name, _, n, _ in VIDEOS}
    for v in vids:
        assert (v.num_frames, v.width, v.height) == (counts[v.video_id], W, H), v
    assert source.unreadable == {}
    assert "sub/h264" in counts  # one level of subfolders, ids use "/"


def test_registered_as_videos(video_dir):
    assert "videos" in SOURCES
    src = SOURCES.create("videos", video_dir, split="train")
    assert isinstance(src, VideoFileSource) and src.kind == "videos"


@pytest.mark.parametrize("name", [name for name, *_ in VIDEOS])
def test_reads_are_frame_accurate(source, name):
    vid = os.path.splitext(name)[0]
    n = source.video(vid).num_frames
    every = source.read_frames(vid, range(n))
    assert every.shape == (n, H, W, 3) and every.dtype == np.uint8
    assert [frame_code(f) for f in every] == list(range(n))
    # random indices (unsorted, repeated) give the same pixels as the full read
    rng = np.random.default_rng(len(name))
    idx = rng.integers(0, n, size=12).tolist() + [n - 1, 0, n - 1]
    some = source.read_frames(vid, idx)
    assert [frame_code(f) for f in some] == idx
    np.testing.assert_array_equal(some, every[idx])
    # single late frames, one read each
    for i in (n - 1, n // 2, 1):
        np.testing.assert_array_equal(source.read_frames(vid, [i])[0], every[i])


def test_a_late_frame_does_not_decode_the_whole_video(source):
    vid = os.path.splitext(VIDEOS[0][0])[0]  # 60 frames, keyframes every 25
    source.videos()
    source.frames_decoded = 0
    f = source.read_frames(vid, [55])
    assert frame_code(f[0]) == 55
    assert source.frames_decoded <= 15, source.frames_decoded
    # two far-apart frames: two seeks, not a decode of everything in between
    source.frames_decoded = 0
    f = source.read_frames(vid, [3, 52])
    assert [frame_code(x) for x in f] == [3, 52]
    assert source.frames_decoded <= 20, source.frames_decoded


def test_b_frames_really_are_in_the_test_video(video_dir):
    # the container's decode order differs from the presentation order
    with av.open(str(video_dir / VIDEOS[0][0])) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
    assert pts != sorted(pts)


def test_out_of_range_and_unknown_video(source):
    with pytest.raises(FrameReadError, match="out of range") as e:
        source.read_frames("mpeg4", [33])
    assert e.value.frame == 33 and e.value.video_id == "mpeg4"
    with pytest.raises(FrameReadError):
        source.read_frames("mpeg4", [-1])
    with pytest.raises(FrameReadError):
        source.read_frames("nope", [0])
    assert source.read_frames("mpeg4", []).shape == (0, H, W, 3)


def test_split_subfolder_is_used_when_present(tmp_path):
    write_video(tmp_path / "top.mp4", "mpeg4", 4)
    (tmp_path / "valid").mkdir()
    write_video(tmp_path / "valid" / "v.avi", "mpeg4", 6)
    assert [v.video_id for v in VideoFileSource(tmp_path, split="valid").videos()] == ["v"]
    assert [v.video_id for v in VideoFileSource(tmp_path, split="train").videos()] == ["top", "valid/v"]


def test_empty_or_missing_folder_is_a_mosic_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(MosicError, match="no video files"):
        VideoFileSource(tmp_path).videos()
    with pytest.raises(MosicError, match="does not exist"):
        VideoFileSource(tmp_path / "missing").videos()


def test_id_clash_is_a_mosic_error(tmp_path):
    write_video(tmp_path / "a.mp4", "mpeg4", 3)
    write_video(tmp_path / "a.avi", "mpeg4", 3)
    with pytest.raises(MosicError, match="'a'"):
        VideoFileSource(tmp_path).videos()


def test_unreadable_files_do_not_stop_the_scan(tmp_path, video_dir, caplog):
    shutil.copy(video_dir / "mpeg4.mov", tmp_path / "good.mov")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "empty.webm").write_bytes(b"")
    # an mp4 whose index (moov, written last) is cut off
    data = (video_dir / "h264_bframes.mp4").read_bytes()
    (tmp_path / "cut_moov.mp4").write_bytes(data[: len(data) // 2])
    # an mp4 with its index first ("faststart") whose frame data is cut off
    write_video(tmp_path / "fast_full.mp4", "mpeg4", 40, options={"qscale": "2"},
                container_options={"movflags": "faststart"})
    data = (tmp_path / "fast_full.mp4").read_bytes()
    (tmp_path / "fast_full.mp4").unlink()
    (tmp_path / "cut_fast.mp4").write_bytes(data[: len(data) // 2])
    # a Matroska file cut in the middle (no frame count in the header, a declared duration)
    data = (video_dir / "sub" / "h264.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    # no video stream
    with av.open(str(tmp_path / "audio.mkv"), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        fr.sample_rate = 8000
        for p in list(s.encode(fr)) + list(s.encode()):
            c.mux(p)

    src = VideoFileSource(tmp_path)
    vids = {v.video_id: v for v in src.videos()}
    bad = ["audio", "cut", "cut_fast", "cut_moov", "empty", "garbage"]
    assert sorted(vids) == sorted(bad + ["good"])
    assert sorted(src.unreadable) == bad
    for vid in bad:
        assert vids[vid].num_frames == 0
        with pytest.raises(FrameReadError, match=vid) as e:
            src.read_frames(vid, [0])
        assert e.value.video_id == vid
    assert "no video stream" in src.unreadable["audio"]
    assert "truncated" in src.unreadable["cut_fast"] and "truncated" in src.unreadable["cut"]
    assert vids["good"].num_frames == 33
    assert [frame_code(f) for f in src.read_frames("good", [32, 0])] == [32, 0]
    assert any("garbage" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["h264_bframes.mp4", "sub/h264.mkv"])
def test_file_truncated_after_the_scan_raises_naming_video_and_frame(tmp_path, video_dir, name):
    dst = tmp_path / os.path.basename(name)
    if name.endswith(".mp4"):  # the index must come first for the frames to be listed
        write_video(dst, H264 or "mpeg4", 60, options=X264 if H264 else {"qscale": "2"},
                    container_options={"movflags": "faststart"})
    else:
        shutil.copy(video_dir / name, dst)
    src = VideoFileSource(tmp_path)
    vid = src.videos()[0]
    n = vid.num_frames
    assert n >= 40
    data = dst.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameReadError) as e:
        src.read_frames(vid.video_id, [n - 1])
    assert e.value.video_id == vid.video_id
    assert e.value.frame == n - 1
    assert vid.video_id in str(e.value) and str(n - 1) in str(e.value)


def test_sequential_mode_for_files_without_timestamps(source):
    # files whose packets lack timestamps are read by counting decoded frames from the start
    vid = "mpeg4_bframes"
    source.videos()
    idx = source._index[vid]
    source._index[vid] = dataclasses.replace(idx, pts=None, keyframes=(0,))
    got = source.read_frames(vid, [30, 2, 30])
    assert [frame_code(f) for f in got] == [30, 2, 30]


def test_scan_is_cached_per_process(video_dir, monkeypatch):
    clear_scan_cache()
    calls = []
    import mosic.data.video_files as vf

    real = vf.probe_video

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(vf, "probe_video", counting)
    VideoFileSource(video_dir).videos()
    first = len(calls)
    assert first == len(VIDEOS)
    again = VideoFileSource(video_dir)
    again.videos()
    assert len(calls) == first
    assert again.fingerprint() == VideoFileSource(video_dir).fingerprint()


def test_probe_reports_keyframes(video_dir):
    idx = probe_video(video_dir / VIDEOS[0][0])
    assert idx.error is None and idx.keyframes[0] == 0 and len(idx.keyframes) >= 2
    assert list(idx.pts) == sorted(idx.pts)


@pytest.mark.parametrize("vid", ["h264_bframes", "sub/h264", "mpeg4_bframes", "mpeg4", "program"])
def test_a_wrong_keyframe_index_costs_time_not_correctness(source, vid):
    # pretend every frame is a keyframe: seeks then land where the container decides, and the
    # reader must notice when that is not where decoding can start (or after the wanted frame)
    source.videos()
    n = source.video(vid).num_frames
    source._index[vid] = dataclasses.replace(source._index[vid], keyframes=tuple(range(n)))
    for i in list(range(n - 1, -1, -1)):
        assert frame_code(source.read_frames(vid, [i])[0]) == i
    got = source.read_frames(vid, list(range(0, n, 3)))
    assert [frame_code(f) for f in got] == list(range(0, n, 3))


class _AnyFrameSeeks:
    """A container whose seeks land on any packet, keyframe or not (as a broken index would)."""

    def __init__(self, c):
        self._c = c
        self.streams = c.streams

    def seek(self, offset, **kw):
        kw["any_frame"] = True
        return self._c.seek(offset, **kw)

    def decode(self, *a, **kw):
        return self._c.decode(*a, **kw)

    def close(self):
        self._c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("vid", ["h264_bframes", "mpeg4_bframes", "mpeg4"])
def test_seeks_that_land_on_non_keyframes_are_retried(source, vid, monkeypatch):
    import mosic.data.video_files as vf

    source.videos()
    n = source.video(vid).num_frames
    every = source.read_frames(vid, range(n))
    real_open = vf._open
    monkeypatch.setattr(vf, "_open", lambda path: _AnyFrameSeeks(real_open(path)))
    source._index[vid] = dataclasses.replace(source._index[vid], keyframes=tuple(range(n)))
    for i in range(n - 1, 0, -4):
        np.testing.assert_array_equal(source.read_frames(vid, [i])[0], every[i], err_msg=f"frame {i}")


def test_file_removed_after_the_scan(tmp_path, video_dir):
    shutil.copy(video_dir / "mpeg4.mov", tmp_path / "gone.mov")
    src = VideoFileSource(tmp_path)
    assert src.videos()[0].num_frames == 33
    (tmp_path / "gone.mov").unlink()
    with pytest.raises(FrameReadError, match="gone"):
        src.read_frames("gone", [3])


def test_pyav_is_imported_only_when_a_video_file_is_read(video_dir):
    """mosic.data (and training on image folders) works without PyAV; reading a video file
    without it is a one-line error naming the package."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['av'] = None  # as if PyAV were not installed\n"
        "import mosic.data, mosic.train.dataset\n"
        "from mosic import MosicError\n"
        "from mosic.data.video_files import VideoFileSource\n"
        f"try:\n    VideoFileSource({str(video_dir)!r}).videos()\n"
        "except MosicError as e:\n    print('ERR', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ERR" in r.stdout and "pip install av" in r.stdout, r.stdout
