"""Clip augmentation as pure geometry: one crop box, one coordinate mapping, used by frames and tracks.

The published MoSiC recipe augments every frame of a clip identically: resize the frame to
224 x 224 (squashing its aspect), flip horizontally with p = 0.5, then ``RandomResizedCrop(224,
scale=(0.4, 1), ratio=(3/4, 4/3))``. Here that composition is expressed as one :class:`CropBox` in
SOURCE pixels (the squash, crop and resize collapse to one axis-aligned affine map), so the frames
are resampled once, from the full-resolution source, and the stored tracks (source pixels) are
mapped by the same formula.

Coordinates follow the project's convention (``precompute/trackers/base.py``): ``(x, y)`` pixels,
x along the width, pixel ``(col, row)`` covers ``[col, col + 1) x [row, row + 1)`` and its centre
is ``(col + 0.5, row + 0.5)``. In the output (an ``S x S`` image, ``S = out_size``)::

    x_out = (x - x0) * S / w          (flipped: x_out = S - (x - x0) * S / w)
    y_out = (y - y0) * S / h

and a point is inside the output when ``0 <= x_out < S`` and ``0 <= y_out < S``.

Flip before or after the crop: the recipe flips the squashed frame and then crops it. Because the
crop's left edge is drawn uniformly over its admissible range, "flip, then crop at j" and "crop at
S - j - w, then flip" have the same distribution, so a box in the unflipped frame plus a flag of
the output is the same random transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from mosic import MosicError
from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class CropBox:
    """A crop of the source frame (``x0, y0, w, h`` in source pixels, continuous coordinates),
    resized to ``out_size x out_size`` and then mirrored left-right when ``flip``."""

    x0: float
    y0: float
    w: float
    h: float
    flip: bool = False
    out_size: int = 224

    def __post_init__(self):
        if not (self.w > 0 and self.h > 0):
            raise MosicError(f"crop box must have a positive size, got w={self.w}, h={self.h}")
        if int(self.out_size) != self.out_size or self.out_size < 1:
            raise MosicError(f"out_size must be a positive integer, got {self.out_size}")

    @classmethod
    def full(cls, width: float, height: float, flip: bool = False, out_size: int = 224) -> "CropBox":
        """The whole frame (squashed to a square): what evaluation without augmentation uses."""
        return cls(0.0, 0.0, float(width), float(height), flip, out_size)


# ------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------
def _rrc_params(
    rng: np.random.Generator, width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` (10 tries, then the central-crop fallback),
    with numpy's generator: (top i, left j, h, w) in integer pixels of a ``width x height`` image."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_crop(
    rng: np.random.Generator,
    width: float,
    height: float,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    out_size: int = 224,
) -> CropBox:
    """One random crop with the distribution of "resize to ``out_size`` squared, horizontal flip
    with ``flip_p``, ``RandomResizedCrop(out_size, scale, ratio)``": the crop is drawn in integer
    pixels of the squashed ``out_size x out_size`` frame exactly as torchvision draws it, then mapped
    back to source pixels (so its aspect in source pixels follows the frame's aspect)."""
    if not (width > 0 and height > 0):
        raise MosicError(f"frame size must be positive, got {width} x {height}")
    if not (0 < scale[0] <= scale[1]):
        raise MosicError(f"scale must satisfy 0 < min <= max, got {tuple(scale)}")
    if not (0 < ratio[0] <= ratio[1]):
        raise MosicError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
    if not 0 <= flip_p <= 1:
        raise MosicError(f"flip_p must be in [0, 1], got {flip_p}")
    S = int(out_size)
    flip = bool(rng.random() < flip_p)  # the recipe flips before it crops
    i, j, h, w = _rrc_params(rng, S, S, scale, ratio)
    sx, sy = width / S, height / S
    return CropBox(j * sx, i * sy, w * sx, h * sy, flip, S)


# ------------------------------------------------------------------------------------------------
# tracks
# ------------------------------------------------------------------------------------------------
def map_points(points: np.ndarray, box: CropBox) -> np.ndarray:
    """(x, y) source pixels [..., 2] -> float64 output pixels [..., 2] (no visibility)."""
    p = np.asarray(points, dtype=np.float64)
    S = float(box.out_size)
    x = (p[..., 0] - box.x0) * (S / box.w)
    y = (p[..., 1] - box.y0) * (S / box.h)
    if box.flip:
        x = S - x
    return np.stack([x, y], axis=-1)


def map_tracks(
    tracks: np.ndarray, visibility: np.ndarray, box: CropBox
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks [T, N, 2] (source pixels) and visibility [T, N] -> (tracks float32 [T, N, 2] in output
    pixels, visibility bool [T, N]). A point outside ``[0, out_size)`` in either axis of the output
    (or not finite) becomes invisible; its coordinates are still returned."""
    tracks = np.asarray(tracks)
    visibility = np.asarray(visibility, dtype=bool)
    if tracks.shape[-1:] != (2,) or visibility.shape != tracks.shape[:-1]:
        raise MosicError(f"tracks {tracks.shape} and visibility {visibility.shape} do not match ([T, N, 2], [T, N])")
    out = map_points(tracks, box).astype(np.float32)
    S = np.float32(box.out_size)
    x, y = out[..., 0], out[..., 1]
    # decided on the float32 values returned, so that a visible point is always inside [0, S)
    inside = (x >= 0) & (x < S) & (y >= 0) & (y < S)
    return out, visibility & inside


# ------------------------------------------------------------------------------------------------
# frames
# ------------------------------------------------------------------------------------------------
def _inverse_affine(box: CropBox) -> np.ndarray:
    """2 x 3 map from output pixel INDICES to source pixel INDICES (index = coordinate - 0.5), for
    ``cv2.warpAffine(..., flags=WARP_INVERSE_MAP)``: the exact inverse of :func:`map_points`."""
    S = box.out_size
    a, c = box.w / S, box.h / S
    if box.flip:  # x = x0 + (S - (ox + 0.5)) * w / S
        mx = (-a, box.x0 + box.w - 0.5 * a - 0.5)
    else:  # x = x0 + (ox + 0.5) * w / S
        mx = (a, box.x0 + 0.5 * a - 0.5)
    return np.array([[mx[0], 0.0, mx[1]], [0.0, c, box.y0 + 0.5 * c - 0.5]], dtype=np.float64)


def antialias_region(box: CropBox, width: int, height: int) -> tuple[tuple[int, int, int, int], tuple[int, int], CropBox] | None:
    """Where a shrinking crop is anti-aliased: the integer region ``(ax, bx, ay, by)`` holding the
    box plus a margin for the final bilinear taps, the size ``(W2, H2)`` it is reduced to (about
    ``out_size`` pixels across the box per axis, never enlarging), and the box in the reduced
    region's pixels. None where the crop does not shrink the image."""
    S = box.out_size
    fx, fy = box.w / S, box.h / S
    if fx <= 1 and fy <= 1:
        return None
    mx, my = math.ceil(2 * max(fx, 1)), math.ceil(2 * max(fy, 1))
    ax, bx = max(0, math.floor(box.x0) - mx), min(width, math.ceil(box.x0 + box.w) + mx)
    ay, by = max(0, math.floor(box.y0) - my), min(height, math.ceil(box.y0 + box.h) + my)
    rw, rh = bx - ax, by - ay
    W2 = max(1, math.ceil(rw / fx)) if fx > 1 else rw
    H2 = max(1, math.ceil(rh / fy)) if fy > 1 else rh
    kx, ky = W2 / rw, H2 / rh
    rbox = CropBox((box.x0 - ax) * kx, (box.y0 - ay) * ky, box.w * kx, box.h * ky, box.flip, S)
    return (ax, bx, ay, by), (W2, H2), rbox


#: Gaussian anti-aliasing for mild reductions: sigma = BLUR_K * sqrt(f^2 - 1) for a reduction by f
#: (chosen by measurement: crops from a 410 px frame cache closest to crops of the 1280 x 720
#: originals, bench/bench_frames.py)
BLUR_K = 0.7


def _reduce(frames: np.ndarray, box: CropBox) -> tuple[np.ndarray, CropBox]:
    """Anti-aliasing for crops that shrink, on the region around the box (:func:`antialias_region`);
    returns the filtered frames and the box in their pixels. A reduction by 2 or more per axis is
    area-averaged down to about ``out_size`` pixels across the box (cv2's INTER_AREA follows the
    pixel-centre convention: output pixel k averages source ``[k * s, (k + 1) * s)``, so the
    composed map is still exact). A milder one (a frame cache, a reduced JPEG decode, small frames)
    is low-pass filtered in place with a symmetric Gaussian, which moves nothing: half the time of
    INTER_AREA at a non-integer factor, and nearer to crops of the full-resolution originals."""
    T, H, W = frames.shape[:3]
    region = antialias_region(box, W, H)
    if region is None:
        return frames, box
    (ax, bx, ay, by), (W2, H2), rbox = region
    S = box.out_size
    fx, fy = box.w / S, box.h / S
    if max(fx, fy) < 2:
        sx, sy = (BLUR_K * math.sqrt(max(f * f - 1, 0.0)) for f in (fx, fy))
        out = np.empty((T, by - ay, bx - ax, 3), np.uint8)
        for t in range(T):
            out[t] = cv2.GaussianBlur(frames[t, ay:by, ax:bx], (0, 0), sigmaX=max(sx, 1e-3), sigmaY=max(sy, 1e-3),
                                      borderType=cv2.BORDER_REPLICATE)
        return out, CropBox(box.x0 - ax, box.y0 - ay, box.w, box.h, box.flip, S)
    out = np.empty((T, H2, W2, 3), np.uint8)
    for t in range(T):
        out[t] = cv2.resize(frames[t, ay:by, ax:bx], (W2, H2), interpolation=cv2.INTER_AREA)
    return out, rbox


def apply_crop(frames: np.ndarray, box: CropBox, antialias: bool = True) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, S, S, 3]: the image side of :func:`map_tracks`. Output pixel
    centre ``(ox + 0.5, oy + 0.5)`` takes the bilinear value of the source at the point that
    :func:`map_points` sends there. With ``antialias`` a crop that shrinks the image is first
    low-pass filtered (as the recipe's antialiased resize to 224 x 224 would), without moving anything."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MosicError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if antialias:
        frames, box = _reduce(frames, box)
    S = box.out_size
    M = _inverse_affine(box)
    out = np.empty((frames.shape[0], S, S, 3), np.uint8)
    for t in range(frames.shape[0]):
        out[t] = cv2.warpAffine(
            np.ascontiguousarray(frames[t]), M, (S, S),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )
    return out


def to_uint8_chw(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, S, S, 3] RGB -> uint8 [T, 3, S, S] (contiguous): what the training loader delivers,
    a quarter of the bytes of float32; :func:`normalize_frames` makes floats of it on the device."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MosicError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))


def normalize_frames(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 ``(x / 255 - mean) / std`` per channel, on ``x``'s device, as
    one multiply-add per element (within 1e-6 of the three-step form; the same on every device)."""
    if x.dtype != torch.uint8 or x.ndim < 3 or x.shape[-3] != 3:
        raise MosicError(f"frames must be uint8 [..., 3, H, W], got {x.dtype} {tuple(x.shape)}")
    # made on the host and copied without waiting for the device's queue (as torch.tensor(..., device=) would)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).to(x.device, non_blocking=True)
    bias = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).to(x.device, non_blocking=True)
    scale, bias = scale.view(3, 1, 1), bias.view(3, 1, 1)
    return x.to(torch.float32).mul_(scale).add_(bias)


def to_tensor(frames: np.ndarray, mean: tuple[float, float, float] = IMAGENET_MEAN,
              std: tuple[float, float, float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 [T, S, S, 3] RGB -> float32 [T, 3, S, S], normalised with ``mean`` and ``std`` (the
    backbone's, see :func:`mosic.backbones.mean_std`; ImageNet's by default)."""
    return normalize_frames(to_uint8_chw(frames), mean, std)


# ------------------------------------------------------------------------------------------------
# reduced decoding
# ------------------------------------------------------------------------------------------------
def max_reduction(box: CropBox) -> float:
    """How far the frames may be shrunk (uniformly) before cropping without the box covering fewer
    than ``out_size`` pixels across in either axis: min(w, h) / out_size."""
    return min(box.w, box.h) / box.out_size


def reduce_box(box: CropBox, factor: float, factor_y: float | None = None) -> CropBox:
    """The same crop in the pixels of frames shrunk by ``factor`` (``factor_y`` along y when it
    differs; source coordinate / factor, as a 1/factor JPEG decode or an area resize aligns them):
    cropping the shrunk frames with it samples the same points as cropping the source with ``box``."""
    fx = float(factor)
    fy = fx if factor_y is None else float(factor_y)
    if fx == 1 and fy == 1:
        return box
    return CropBox(box.x0 / fx, box.y0 / fy, box.w / fx, box.h / fy, box.flip, box.out_size)
