"""``videos``: a folder of ordinary video files (.mp4, .webm, .mkv, .avi, .mpg, .mov), read with PyAV.

Layout
------
``<root>/<split>/`` if that folder exists, else ``<root>/``; the video files directly in it and in
its immediate subfolders (one level; hidden files and folders are skipped). A video's id is its
path relative to that folder without the extension, with ``/`` separators (``cats/clip01``). Two
files that differ only in their extension (``a.mp4`` and ``a.webm``) are an error.

Frame index
-----------
Scanning demuxes every packet of the first video stream without decoding: the frame count is the
number of (non-discarded) packets, and the sorted packet presentation timestamps (pts) give frame
``i`` = the i-th smallest pts. This is exact for the usual one-frame-per-packet codecs, B-frames
included (presentation order != decode order). Files whose packets lack timestamps, or repeat one,
are decoded once at scan time instead and read sequentially from their start.

``read_frames`` seeks to the last keyframe at or before the first wanted frame, decodes forward and
picks frames by pts; a later group of wanted frames behind another keyframe is reached by seeking
again rather than decoding everything in between. A seek that lands after the wanted frame or on a
frame the decoder does not mark as a keyframe is retried from an earlier keyframe and finally from
the start of the file, so broken container indices cost time, not correctness. MPEG program and
transport streams (.mpg), whose timestamps after a seek need not match the scan's, are always
decoded from their start.

Unreadable files
----------------
A file that cannot be scanned (not a video, no video stream, truncated, corrupt) does not stop the
scan: it stays in the list with ``num_frames = 0`` and size 0 x 0, so clip planning records it as
too short; the reason is logged once, kept in :attr:`VideoFileSource.unreadable` and given by the
``FrameReadError`` that ``read_frames`` raises for it. Failures while decoding raise
``FrameReadError`` naming the video and the first frame that could not be produced.

Scans are cached per process, keyed by the file's path, size and modification time; the folder
itself is listed again by each new source object. Files are probed on a few threads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mosic import MosicError
from mosic.data.base import SOURCES, FrameReadError, FrameSource, VideoInfo

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".mov", ".m4v")

_AVFMT_TS_DISCONT = 0x0200



class _Unreadable(Exception):
    """A file that is not a usable video (the message says why)."""


def _av():
    """PyAV, imported when a video file is first read (the rest of mosic.data does not need it)."""
    try:
        import av
    except ImportError:
        raise MosicError("reading video files needs PyAV, which is not installed: pip install av") from None
    return av


def _av_errors() -> tuple:
    """The exceptions a read can raise (an ``except`` clause evaluates this when it is reached)."""
    return (_av().FFmpegError, OSError, ValueError, RuntimeError, _Unreadable)


@dataclass(frozen=True)
class VideoIndex:
    """What a scan learns about one file."""

    path: Path
    num_frames: int
    width: int
    height: int
    #: presentation timestamps (stream time base) of the frames in order, or None when the file
    #: is read sequentially (no usable timestamps)
    pts: tuple[int, ...] | None = None
    #: presentation-order indices of the frames whose packet is a keyframe (ascending)
    keyframes: tuple[int, ...] = ()
    #: why the file cannot be read (then num_frames is 0)
    error: str | None = None


_CACHE: dict[tuple[str, int, int], VideoIndex] = {}
_CACHE_LOCK = threading.Lock()


def _describe(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg.replace("\n", " ")


def _open(path: Path):
    c = _av().open(str(path), mode="r")
    if not c.streams.video:
        c.close()
        raise _Unreadable("no video stream")
    return c


def probe_video(path: Path) -> VideoIndex:
    """Scan one file (demux only, or a full decode for files without usable timestamps)."""
    try:
        return _probe(path)
    except _Unreadable as e:
        return VideoIndex(path, 0, 0, 0, error=str(e))
    except _av_errors() as e:
        return VideoIndex(path, 0, 0, 0, error=f"cannot be opened or demuxed: {_describe(e)}")


def _probe(path: Path) -> VideoIndex:
    with _open(path) as c:
        s = c.streams.video[0]
        width, height = int(s.codec_context.width or 0), int(s.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise _Unreadable("the video stream has no frame size (unsupported codec?)")
        header_frames = int(s.frames or 0)
        # MPEG program/transport streams (AVFMT_TS_DISCONT): timestamps after a seek are
        # re-derived and need not match the scan's, so such files are always decoded from the start
        seekable = not (int(getattr(c.format, "flags", 0) or 0) & _AVFMT_TS_DISCONT)
        time_base = float(s.time_base) if s.time_base else None
        declared = _declared_duration(s)
        pts: list[int] = []
        keys: list[bool] = []
        packets = discarded = 0
        missing_pts = False
        for p in c.demux(s):
            if p.size == 0:  # the flush packet at the end
                continue
            if p.is_discard:
                discarded += 1
                continue
            packets += 1
            if p.pts is None:
                missing_pts = True
            else:
                pts.append(int(p.pts))
                keys.append(bool(p.is_keyframe))
    if packets == 0:
        raise _Unreadable("the video stream holds no frames")
    if header_frames and packets + discarded < header_frames:
        raise _Unreadable(
            f"truncated: the container lists {header_frames} frames but only "
            f"{packets + discarded} could be read"
        )
    if declared and time_base and len(pts) >= 2 and not missing_pts:
        # containers without a frame count (Matroska/WebM): compare the frames' end with the
        # stream's declared duration
        sp = np.sort(np.asarray(pts, dtype=np.int64))
        step = float(np.median(np.diff(sp))) * time_base
        end = float(sp[-1]) * time_base + step
        if end < 0.9 * declared - 2 * step:
            raise _Unreadable(
                f"truncated: the stream declares {declared:.2f} s but its frames end at {end:.2f} s"
            )
    if missing_pts or len(set(pts)) != len(pts):
        n = _count_decoded(path)
        if n == 0:
            raise _Unreadable("no frame could be decoded")
        return VideoIndex(path, n, width, height, pts=None, keyframes=(0,))
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    sorted_pts = tuple(int(pts[i]) for i in order)
    keyframes = tuple(int(j) for j, i in enumerate(order) if keys[i]) if seekable else (0,)
    if not keyframes or keyframes[0] != 0:
        keyframes = (0,) + keyframes  # the start of the file is always a place to decode from
    return VideoIndex(path, len(sorted_pts), width, height, pts=sorted_pts, keyframes=keyframes)


def _declared_duration(s) -> float | None:
    """The stream's duration in seconds as its header states it (None if it does not)."""
    if s.duration and s.time_base:
        return float(s.duration * s.time_base)
    tag = (s.metadata or {}).get("DURATION") or (s.metadata or {}).get("duration")
    if tag:
        try:
            h, m, sec = tag.strip().split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    return None


def _count_decoded(path: Path) -> int:
    with _open(path) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def cached_probe(path: Path) -> VideoIndex:
    try:
        st = path.stat()
    except OSError as e:
        return VideoIndex(path, 0, 0, 0, error=f"cannot be read: {e.strerror or e}")
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit if hit.path == path else dataclasses.replace(hit, path=path)
    idx = probe_video(path)
    with _CACHE_LOCK:
        _CACHE[key] = idx
    return idx


def clear_scan_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def list_video_files(folder: Path) -> list[tuple[str, Path]]:
    """(video id, path) of the video files in ``folder`` and its immediate subfolders."""

    def files_in(d: Path) -> tuple[list[Path], list[Path]]:
        files, dirs = [], []
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir():
                        dirs.append(Path(e.path))
                    elif e.is_file() and e.name.lower().endswith(VIDEO_SUFFIXES):
                        files.append(Path(e.path))
        except OSError:
            pass
        return files, dirs

    top_files, subdirs = files_in(folder)
    found = list(top_files)
    for d in subdirs:
        found.extend(files_in(d)[0])
    out: dict[str, Path] = {}
    for p in sorted(found):
        vid = p.relative_to(folder).with_suffix("").as_posix()
        if vid in out:
            raise MosicError(
                f"videos: {out[vid]} and {p} would both be video {vid!r}; "
                "rename one of them (ids are paths without the extension)"
            )
        out[vid] = p
    return sorted(out.items())


@SOURCES.register("videos")
class VideoFileSource(FrameSource):
    """Video files under a folder, decoded with PyAV (see the module's docstring)."""

    kind = "videos"
    #: threads that probe files during a scan
    scan_threads: int = min(8, os.cpu_count() or 1)

    def __init__(self, root: str | Path, split: str = "train"):
        super().__init__(root, split)
        self._index: dict[str, VideoIndex] = {}
        #: video id -> why it cannot be read (filled by the scan)
        self.unreadable: dict[str, str] = {}
        #: frames decoded by read_frames so far (for tests and benchmarks)
        self.frames_decoded = 0

    @property
    def folder(self) -> Path:
        sub = self.root / self.split if self.split else None
        return sub if sub is not None and sub.is_dir() else self.root

    def _scan(self) -> list[VideoInfo]:
        if not self.root.is_dir():
            raise MosicError(f"videos: the data set folder {self.root} does not exist")
        files = list_video_files(self.folder)
        if not files:
            raise MosicError(
                f"videos: no video files ({', '.join(VIDEO_SUFFIXES)}) in {self.folder} "
                "or its immediate subfolders"
            )
        if len(files) > 1 and self.scan_threads > 1:
            with ThreadPoolExecutor(self.scan_threads) as pool:
                probes = list(pool.map(cached_probe, [p for _, p in files]))
        else:
            probes = [cached_probe(p) for _, p in files]
        self._index = {}
        self.unreadable = {}
        out = []
        for (vid, _), idx in zip(files, probes):
            self._index[vid] = idx
            if idx.error is not None:
                self.unreadable[vid] = idx.error
                log.warning("videos: %s is unreadable (%s); it is listed with 0 frames", idx.path, idx.error)
            out.append(VideoInfo(vid, idx.num_frames, idx.width, idx.height))
        return out

    # -- reading -------------------------------------------------------------------------------
    def _entry(self, video_id: str) -> VideoIndex:
        self.videos()
        idx = self._index.get(video_id)
        if idx is None:
            raise FrameReadError(video_id, f"no such video under {self.folder}")
        return idx

    def read_frames(self, video_id: str, indices: Sequence[int]) -> np.ndarray:
        idx = self._entry(video_id)
        if idx.error is not None:
            raise FrameReadError(video_id, f"{idx.path}: {idx.error}")
        wanted = [int(i) for i in indices]
        for i in wanted:
            if not 0 <= i < idx.num_frames:
                raise FrameReadError(
                    video_id, f"frame index out of range (the video has {idx.num_frames} frames)", frame=i
                )
        if not wanted:
            return np.zeros((0, idx.height, idx.width, 3), dtype=np.uint8)
        got = self._decode(video_id, idx, sorted(set(wanted)))
        return np.stack([got[i] for i in wanted])

    def _decode(self, video_id: str, idx: VideoIndex, want: list[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        try:
            if idx.pts is None:
                self._decode_sequential(video_id, idx, want, got)
            else:
                self._decode_by_pts(video_id, idx, want, got)
        except FrameReadError:
            raise
        except _av_errors() as e:
            missing = next((i for i in want if i not in got), None)
            raise FrameReadError(video_id, f"{idx.path}: decoding failed: {_describe(e)}", frame=missing) from None
        return got

    def _to_array(self, video_id: str, idx: VideoIndex, frame, i: int) -> np.ndarray:
        arr = frame.to_ndarray(format="rgb24")
        if arr.shape != (idx.height, idx.width, 3):
            raise FrameReadError(
                video_id,
                f"decoded frame is {arr.shape[1]} x {arr.shape[0]}, the stream says "
                f"{idx.width} x {idx.height}",
                frame=i,
            )
        return arr

    def _decode_sequential(self, video_id: str, idx: VideoIndex, want: list[int], got: dict) -> None:
        wanted = set(want)
        last = want[-1]
        with _open(idx.path) as c:
            for i, frame in enumerate(c.decode(c.streams.video[0])):
                self.frames_decoded += 1
                if i in wanted:
                    got[i] = self._to_array(video_id, idx, frame, i)
                if i >= last:
                    break
        missing = [i for i in want if i not in got]
        if missing:
            raise FrameReadError(video_id, f"{idx.path}: the frame could not be decoded (truncated?)", frame=missing[0])

    def _decode_by_pts(self, video_id: str, idx: VideoIndex, want: list[int], got: dict) -> None:
        pts = idx.pts
        assert pts is not None
        frame_of = {p: i for i, p in enumerate(pts)}
        keys = idx.keyframes

        def key_before(i: int) -> int:
            return keys[bisect_right(keys, i) - 1]

        # groups of wanted frames that are decoded in one go: a new group starts where a keyframe
        # lies after the previous wanted frame (seeking there beats decoding the gap)
        groups: list[list[int]] = [[want[0]]]
        for i in want[1:]:
            if key_before(i) > groups[-1][-1]:
                groups.append([i])
            else:
                groups[-1].append(i)

        c = None
        try:
            for group in groups:
                start = key_before(group[0])
                # where to decode from: the keyframe before the group, once more from the keyframe
                # before that (a seek that landed badly), and finally from the start of the file
                tries = [start] + ([key_before(start - 1)] if start > 0 else [])
                tries += [0] if tries[-1] != 0 else []
                for k in tries:
                    if c is None or k == 0:  # a fresh container: decoding from the start needs no seek
                        if c is not None:
                            c.close()
                        c = _open(idx.path)
                    if self._decode_group(video_id, idx, c, k, group, frame_of, got, seek=k != 0):
                        break
                    c.close()
                    c = None
                else:
                    missing = next(i for i in group if i not in got)
                    raise FrameReadError(
                        video_id,
                        f"{idx.path}: the frame could not be decoded (truncated or corrupt?)",
                        frame=missing,
                    )
        finally:
            if c is not None:
                c.close()

    def _decode_group(self, video_id, idx, c, start, group, frame_of, got, seek: bool) -> bool:
        """Decode from keyframe ``start`` and collect ``group``. False when the seek was not good
        (the decoder's first frame at or after ``start`` is after the group's first frame, or no
        keyframe came out before it) or frames are missing, so that the caller retries earlier."""
        s = c.streams.video[0]
        if seek:
            try:
                c.seek(int(idx.pts[start]), stream=s, backward=True, any_frame=False)
            except _av_errors():
                return False
        try:
            return self._collect(video_id, idx, c, start, group, frame_of, got, seek)
        except FrameReadError:
            raise
        except _av_errors():
            if seek:  # maybe a bad seek point: the caller retries from further back
                return False
            raise

    def _collect(self, video_id, idx, c, start, group, frame_of, got, seek: bool) -> bool:
        s = c.streams.video[0]
        todo = set(i for i in group if i not in got)
        first, last = group[0], group[-1]
        validated = not seek
        seen_key = False
        for frame in c.decode(s):
            self.frames_decoded += 1
            i = frame_of.get(frame.pts) if frame.pts is not None else None
            seen_key = seen_key or bool(frame.key_frame)
            if i is None:
                if not validated:  # timestamps after this seek do not match the scan's
                    return False
                continue
            if not validated:
                if i < start:  # an earlier keyframe's frames, or leading frames of an open GOP
                    continue
                if i > first or not seen_key:
                    return False
                validated = True
            if i in todo:
                got[i] = self._to_array(video_id, idx, frame, i)
                todo.discard(i)
                if not todo:
                    return True
            if i >= last:
                break
        return not todo
