"""Reduced JPEG decoding: libjpeg-turbo's scaled IDCT (1/2, 1/4, 1/8) through OpenCV.

A training crop of a 1280 x 720 frame is resized to 224 x 224, so most of the full-resolution
pixels are averaged away again right after decoding. libjpeg can instead run a smaller inverse DCT
per 8 x 8 block and return the image at 1/2, 1/4 or 1/8 of its size for a fraction of the cost of
the colour conversion and upsampling (entropy decoding is not reduced: it is the floor).

Pixel grid of a 1/s-reduced decode: reduced pixel ``k`` is the (DCT-domain) average of the full
pixels ``[k * s, (k + 1) * s)``, measured against ``cv2.resize(..., INTER_AREA)`` of the full
decode: the best alignment is at shift 0 for s = 2, 4, 8 (``tests/test_decode.py`` checks it on an
odd-sized image). So in the project's pixel-centre coordinates a source point ``(x, y)`` is at
``(x / s, y / s)`` in the reduced image, exactly; its size is ``(ceil(W / s), ceil(H / s))``.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from mosic.data.base import FrameReadError

#: reduction factor -> OpenCV imread flag (orientation ignored, as the full decode does)
_FLAGS = {
    1: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}
FACTORS = (1, 2, 4, 8)


def reduction_factor(max_factor: float) -> int:
    """The largest JPEG DCT reduction (1, 2, 4 or 8) not above ``max_factor``: with ``max_factor``
    = the smallest of (crop width, crop height) / output size, the reduced crop still has at least
    the output's pixels across in both axes, so the final resize never enlarges."""
    if not max_factor > 0 or not math.isfinite(max_factor):
        return 1
    return max(f for f in FACTORS if f <= max(1.0, max_factor))


def reduced_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """(width, height) of a ``factor``-reduced decode (libjpeg rounds up)."""
    return -(-int(width) // factor), -(-int(height) // factor)


def read_jpeg_bytes(path: Path, video_id: str, frame: int) -> np.ndarray:
    """The file's bytes, checked for the JPEG end-of-image marker; FrameReadError on a missing,
    empty or truncated file."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise FrameReadError(video_id, f"cannot read {path}: {e.strerror or e}", frame=frame) from None
    if data.size == 0:
        raise FrameReadError(video_id, f"{path} is empty", frame=frame)
    # libjpeg may fill a truncated image with grey and only warn; a complete JPEG ends with the
    # end-of-image marker FF D9 (some writers append a few bytes).
    if b"\xff\xd9" not in data[-1024:].tobytes():
        raise FrameReadError(video_id, f"{path} is truncated (no JPEG end-of-image marker)", frame=frame)
    return data


def decode_jpeg_reduced(path: Path, video_id: str, frame: int, factor: int = 1) -> np.ndarray:
    """One JPEG as uint8 RGB [ceil(H / factor), ceil(W / factor), 3], decoded with libjpeg's scaled
    IDCT; FrameReadError naming the file on a missing, truncated or corrupt one."""
    if factor not in _FLAGS:
        raise ValueError(f"JPEG reduction factor must be one of {FACTORS}, got {factor!r}")
    data = read_jpeg_bytes(path, video_id, frame)
    img = cv2.imdecode(data, _FLAGS[factor])
    if img is None:
        raise FrameReadError(video_id, f"{path} is not a readable JPEG (corrupt or truncated)", frame=frame)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
