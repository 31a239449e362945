"""The training crop in torch, for frames already on a device (e.g. decoded there by nvJPEG with
``torchvision.io.decode_jpeg(..., device="cuda")``): the same geometry as
:func:`mosic.train.augment.apply_crop`, so the tracks mapped by :func:`map_tracks` stay exact.

Differences to the OpenCV path, measured on the CPU in ``tests/test_device_crop.py``: the
anti-aliasing before the crop is torch's antialiased bilinear resize (a triangle filter as wide as
the reduction) instead of OpenCV's area average, both pixel-centre aligned; the final resampling
is ``grid_sample`` (bilinear, border replicated) at exactly the points ``cv2.warpAffine`` samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mosic import MosicError
from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD
from mosic.train.augment import CropBox, antialias_region


def crop_on_device(frames: torch.Tensor, box: CropBox, antialias: bool = True, normalize: bool = True) -> torch.Tensor:
    """uint8 (or float 0..255) frames [T, H, W, 3] or [T, 3, H, W] on any device -> float32
    [T, 3, S, S] on the same device: ImageNet-normalised (``normalize``) or 0..255."""
    if frames.ndim != 4:
        raise MosicError(f"frames must be [T, H, W, 3] or [T, 3, H, W], got {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2) if frames.shape[-1] == 3 and frames.shape[1] != 3 else frames
    x = x.float()
    T, _, H, W = x.shape
    S = box.out_size
    region = antialias_region(box, W, H) if antialias else None
    if region is not None:
        # the region around the box (as apply_crop takes it), shrunk to about S pixels across the box
        (ax, bx, ay, by), (W2, H2), box = region
        x = F.interpolate(x[:, :, ay:by, ax:bx], size=(H2, W2), mode="bilinear", align_corners=False,
                          antialias=True)
        H, W = H2, W2
    # output pixel centre (o + 0.5) -> source coordinate, the inverse of map_points
    o = (torch.arange(S, device=x.device, dtype=torch.float32) + 0.5) / S
    if box.flip:
        xs = box.x0 + (1 - o) * box.w
    else:
        xs = box.x0 + o * box.w
    ys = box.y0 + o * box.h
    # grid_sample (align_corners=False): -1 and 1 are the outer edges of the image
    gx = (2 * xs / W - 1).view(1, S).expand(S, S)
    gy = (2 * ys / H - 1).view(S, 1).expand(S, S)
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(T, S, S, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if not normalize:
        return out
    mean = torch.tensor(IMAGENET_MEAN, device=out.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=out.device).view(1, 3, 1, 1) * 255
    return (out - mean) / std
