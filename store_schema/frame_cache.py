"""A frame cache: every clip of a store with its frames pre-resized to the resolution training crops
need, as JPEG bytes in one file per clip (one read per clip), written once.

Why: decoding a 1280 x 720 JPEG costs 2-3 ms on one core even at 1/8 scale (entropy decoding does
not shrink with the DCT scale), so 12 frames cost more than the 20 ms a clip may take if 8 cores are
to feed one GPU. A 410 x 410 JPEG decodes in well under 1 ms.

Resolution: training crops are drawn in the squashed ``out x out`` frame with area at least
``scale_min`` and aspect in ``ratio``, so no crop is narrower than ``sqrt(scale_min * out**2 *
min(ratio[0], 1 / ratio[1]))`` squashed pixels (123 for 224, 0.4, 3/4..4/3). A cache frame of
``side = ceil(out**2 / that) + 1`` squared pixels (410 for the recipe) therefore still holds at least
``out`` pixels across every crop: crops from it are downscales, like crops from the source.
The cache frame is the source frame area-resized (``cv2.INTER_AREA``, pixel-centre aligned) to
``side x side``: source ``(x, y)`` is at ``(x * side / W, y * side / H)`` in it, exactly.

Only where it is faster: a clip whose source frames have no more pixels than a cache frame (320 x
240 against 410 x 410) is not cached, its source decodes faster than a cache frame would (and it
would be upscaled); :meth:`FrameCache.holds` says which clips are. The cache is only an acceleration:
a damaged clip file makes training read that clip from its source (with a warning), and
``mosic-store cache-frames`` rebuilds just the damaged files.

Layout: ``<store>.frames<side>/`` beside the store (``x.zarr`` -> ``x.zarr.frames410``), with
``cache.json`` (written last: the store's name and fingerprint, side, quality, clip count) and
``c<index>.jpgs`` per clip: magic ``MOSICFC1``, uint32 T, side, then T uint32 byte lengths, then the
T JPEG files back to back. Built by ``mosic-store cache-frames STORE``; ``ClipDataset`` uses it
when it is there (``frame_cache="auto"``).
"""

from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from mosic import MosicError
from mosic.data.base import FrameReadError
from mosic.data.decode import reduction_factor
from mosic.store_schema.reader import StoreReader, open_frame_source

MAGIC = b"MOSICFC1"
VERSION = 1


def cache_side(out_size: int = 224, scale_min: float = 0.4, ratio: Sequence[float] = (3 / 4, 4 / 3)) -> int:
    """The cache frame's side for crops drawn as the recipe draws them (see the module's text)."""
    narrowest = math.sqrt(scale_min * out_size ** 2 * min(ratio[0], 1 / ratio[1]))
    return math.ceil(out_size ** 2 / narrowest) + 1


def cache_dir_for(store: str | Path, side: int) -> Path:
    store = Path(store)
    return store.parent / f"{store.name}.frames{side}"


def _clip_file(folder: Path, index: int) -> Path:
    return folder / f"c{int(index):07d}.jpgs"


def encode_clip(frames: np.ndarray, quality: int) -> bytes:
    """uint8 RGB [T, side, side, 3] -> one clip file's bytes."""
    blobs = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise MosicError("JPEG encoding failed")
        blobs.append(buf.tobytes())
    head = np.array([len(frames), frames.shape[1]] + [len(b) for b in blobs], dtype="<u4").tobytes()
    return MAGIC + head + b"".join(blobs)


def decode_clip(data: bytes, where: str) -> np.ndarray:
    """One clip file's bytes -> uint8 RGB [T, side, side, 3]; MosicError naming ``where`` if damaged."""
    if data[:8] != MAGIC or len(data) < 16:
        raise FrameReadError(where, "not a mosic frame-cache file (bad magic); rebuild the cache")
    T, side = np.frombuffer(data, "<u4", 2, 8)
    lens = np.frombuffer(data, "<u4", int(T), 16)
    pos = 16 + 4 * int(T)
    if pos + int(lens.sum()) != len(data):
        raise FrameReadError(where, f"frame-cache file is {len(data)} bytes, its header says "
                                    f"{pos + int(lens.sum())}: truncated or damaged; rebuild the cache")
    out = np.empty((int(T), int(side), int(side), 3), np.uint8)
    buf = np.frombuffer(data, np.uint8)
    for t, n in enumerate(lens):
        img = cv2.imdecode(buf[pos:pos + int(n)], cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None or img.shape[:2] != (side, side):
            raise FrameReadError(where, f"frame {t} of the cache file is not a readable {side}x{side} JPEG; "
                                        "rebuild the cache", frame=t)
        cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out[t])
        pos += int(n)
    return out


class FrameCache:
    """A built cache, opened for reading: ``cache.read(index)`` -> uint8 [T, side, side, 3]."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.meta = json.loads((self.folder / "cache.json").read_text())
        except (OSError, ValueError) as e:
            raise MosicError(f"frame cache {self.folder}: no readable cache.json ({e}); it is incomplete: "
                             "rebuild it with mosic-store cache-frames") from None
        if self.meta.get("version") != VERSION:
            raise MosicError(f"frame cache {self.folder}: version {self.meta.get('version')}, expected {VERSION}")
        self.side = int(self.meta["side"])

    def holds(self, width: int, height: int) -> bool:
        """Whether clips of ``width x height`` source frames are cached (see :func:`worth_caching`)."""
        return worth_caching(width, height, self.side)

    def clip_file(self, index: int) -> Path:
        return _clip_file(self.folder, index)

    def fits(self, store_name: str, fingerprint: str) -> bool:
        return self.meta.get("store") == store_name and self.meta.get("fingerprint") == fingerprint

    def read(self, index: int) -> np.ndarray:
        p = _clip_file(self.folder, index)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise FrameReadError(str(p), f"cannot read the frame-cache file: {e.strerror or e}") from None
        return decode_clip(data, str(p))

    @staticmethod
    def find(store: str | Path, fingerprint: str, min_side: int) -> "FrameCache | None":
        """The smallest complete cache beside ``store`` made for it, with side >= ``min_side``."""
        store = Path(store)
        best = None
        try:
            cands = sorted(store.parent.glob(f"{store.name}.frames*"))
        except OSError:
            return None
        for c in cands:
            if not (c / "cache.json").is_file():
                continue
            try:
                fc = FrameCache(c)
            except (MosicError, KeyError, ValueError):
                continue
            if fc.fits(store.name, fingerprint) and fc.side >= min_side and (best is None or fc.side < best.side):
                best = fc
        return best


def worth_caching(width: int, height: int, side: int) -> bool:
    """A clip is cached only when its source frames have more pixels than a cache frame: decoding
    a JPEG costs about its pixel count, so a smaller source decodes faster than its cache would."""
    return int(width) * int(height) > int(side) ** 2


def check_clip_file(path: Path) -> bool:
    """Whether a clip file is whole and every frame decodes."""
    try:
        decode_clip(path.read_bytes(), str(path))
        return True
    except (OSError, FrameReadError, ValueError):
        return False


def to_cache_frames(frames: np.ndarray, side: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, side, side, 3], area-resized (pixel-centre aligned)."""
    out = np.empty((len(frames), side, side, 3), np.uint8)
    for t, f in enumerate(frames):
        out[t] = cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA)
    return out


def build_frame_cache(store: str | Path, side: int | None = None, quality: int = 90,
                      source_root: str | Path | None = None, progress: bool = False, workers: int = 1) -> Path:
    """Write the cache of every done clip of ``store`` (a local store) whose source is larger than
    the cache (:func:`worth_caching`); returns its folder. Clip files already there are kept when
    they are whole and decode (a killed run resumes; damaged files are rebuilt); ``cache.json``,
    written last, counts the cached clips, those left to their source and the files rebuilt."""
    reader = StoreReader(store)
    if not isinstance(reader.path, Path):
        raise MosicError(f"frame caches are for local stores; {reader.path} is remote")
    side = int(side or cache_side())
    if not 16 <= side <= 4096 or not 1 <= quality <= 100:
        raise MosicError(f"cache side must be 16..4096 and quality 1..100, got {side}, {quality}")
    source = open_frame_source(reader, source_root, verify=True)
    folder = cache_dir_for(reader.path, side)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cache.json").unlink(missing_ok=True)
    done = [int(i) for i in reader.done]
    todo = [i for i in done if worth_caching(reader.clips[i].width, reader.clips[i].height, side)]
    for i in set(done) - set(todo):
        _clip_file(folder, i).unlink(missing_ok=True)  # made by an older version: the source is faster

    def one(i: int) -> tuple[int, bool]:
        """(bytes of clip i's file, whether a damaged file was rebuilt)"""
        p = _clip_file(folder, i)
        damaged = p.is_file()
        if damaged and check_clip_file(p):
            return p.stat().st_size, False
        clip = reader.clips[i]
        # decode reduced where the reduction still leaves at least `side` pixels across (and divides
        # the size, so that the reduced grid is exactly source / s before the area resize)
        s = reduction_factor(min(clip.width, clip.height) / side)
        while s > 1 and (clip.width % s or clip.height % s):
            s //= 2
        frames, _ = source.read_frames_reduced(clip.video_id, clip.frames, s)
        data = encode_clip(to_cache_frames(frames, side), quality)
        tmp = p.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return len(data), damaged

    total = rebuilt = 0
    # OpenCV's decode, resize and encode release the GIL: threads use the cores
    with ThreadPoolExecutor(max(1, int(workers))) as ex:
        results = ex.map(one, todo)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(todo), unit="clip", desc=f"frame cache {side}x{side}")
        for n, was_damaged in results:
            total += n
            rebuilt += was_damaged
    cached = len(todo)
    meta = {"version": VERSION, "store": reader.path.name, "fingerprint": reader.spec.dataset.fingerprint,
            "side": side, "quality": int(quality), "clips": cached, "source_clips": len(done) - cached,
            "rebuilt": rebuilt, "bytes": total}
    tmp = folder / "cache.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / "cache.json")
    return folder
