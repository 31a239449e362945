"""A synthetic video's scene: its layers (background and objects) made from a seed, drawn frame by frame."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mosic.data.synthetic.drawing import (
    CLASSES, CLASS_SHAPES, _background_texture, _object_texture, shape_sdf,
)
from mosic.data.synthetic.ground_truth import GT_FORMAT, SyntheticGroundTruth
from mosic.data.synthetic.motion import (
    Layer, _camera, _compose, _object_motion, _rot, _video_length, _video_rng, apply_affine,
    cv2_matrix,
)

@dataclass
class Scene:
    video_id: str
    num_frames: int
    width: int
    height: int
    layers: list[Layer]  # sorted by z, background first

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t``: (uint8 [H, W, 3] RGB, uint8 [H, W] instance mask)."""
        W, H = self.width, self.height
        bg = self.layers[0]
        img = cv2.warpAffine(
            bg.texture, cv2_matrix(bg.affines[t]), (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        ).astype(np.float32)
        mask = np.zeros((H, W), np.uint8)
        for L in self.layers[1:]:
            A = L.affines[t]
            scale = math.sqrt(abs(np.linalg.det(A[:, :2])))
            cx, cy = apply_affine(A, np.array([L.centre]))[0]
            hr = (L.radius + 2) * scale + 2
            x0, y0 = max(0, int(math.floor(cx - hr))), max(0, int(math.floor(cy - hr)))
            x1, y1 = min(W, int(math.ceil(cx + hr)) + 1), min(H, int(math.ceil(cy + hr)) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            M = cv2_matrix(A, (x0, y0))
            size = (x1 - x0, y1 - y0)
            tex = cv2.warpAffine(L.texture, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            a = cv2.warpAffine(L.alpha, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            roi = img[y0:y1, x0:x1]
            roi += a[..., None] * (tex.astype(np.float32) - roi)
            mask[y0:y1, x0:x1][a >= 0.5] = L.id
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask

    def ground_truth(self) -> "SyntheticGroundTruth":
        return SyntheticGroundTruth.from_json(self.to_json())

    def to_json(self) -> dict:
        return {
            "format": GT_FORMAT,
            "video_id": self.video_id,
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "convention": "affines map layer-local (x, y) to image (x, y) pixels, row-major "
            "[a11, a12, b1, a21, a22, b2]; pixel (col, row) has centre (col + 0.5, row + 0.5)",
            "classes": list(CLASSES),
            "layers": [L.to_json() for L in self.layers],
        }


def make_scene(
    video_index: int,
    seed: int = 0,
    split: str = "train",
    num_frames: int = 80,
    width: int = 320,
    height: int = 240,
    exact_length: bool = False,
    video_id: str | None = None,
) -> Scene:
    """Build video ``video_index`` of the set (textures and motion; nothing is rendered yet)."""
    rng = _video_rng(seed, split, video_index)
    T = _video_length(rng, num_frames, exact_length)
    W, H = width, height
    bg, (bw, bh) = _camera(rng, T, W, H)
    bg.texture = _background_texture(rng, bh, bw)
    K = int(rng.integers(2, 6))
    classes = rng.choice(np.arange(1, len(CLASSES)), size=K, replace=K > len(CLASSES) - 1) if K else []
    swinger = int(rng.integers(K))
    layers = [bg]
    t = np.arange(T, dtype=np.float64)
    for k in range(K):
        cls = int(classes[k])
        r_img = rng.uniform(0.09, 0.16) * min(W, H)
        R = float(math.ceil(1.12 * r_img) + 1)  # shape radius in texture pixels: scale stays < 1
        S = int(2 * (R + 3))
        centre = (S / 2, S / 2)
        c, motion = _object_motion(rng, T, W, H, 1.12 * r_img, k == swinger)
        th0, om = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(0.5, 2.5)) * rng.choice([-1, 1])
        wob, pw, phw = rng.uniform(0, 0.3), T * rng.uniform(0.6, 1.5), rng.uniform(0, 2 * np.pi)
        theta = th0 + om * t + wob * np.sin(2 * np.pi * t / pw + phw)
        ps, phs = T * rng.uniform(0.6, 1.5), rng.uniform(0, 2 * np.pi)
        sigma = (r_img / R) * (1 + 0.12 * np.sin(2 * np.pi * t / ps + phs))
        lin = sigma[:, None, None] * _rot(theta)
        trans = c - np.einsum("tij,j->ti", lin, np.array(centre))
        motion.update(
            rotation={"theta0": th0, "per_frame": om, "wobble": wob, "period": pw, "phase": phw},
            scale={"base": r_img / R, "amplitude": 0.12, "period": ps, "phase": phs},
        )
        shape = CLASS_SHAPES[cls]
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5
        sdf = shape_sdf(shape, R, np.stack([xx - centre[0], yy - centre[1]], -1))
        alpha = np.clip(0.5 - sdf, 0, 1).astype(np.float32)
        layers.append(
            Layer(k + 1, cls, k + 1, shape, R, centre, _compose(lin, trans), motion,
                  _object_texture(rng, cls, S), alpha)
        )
    return Scene(video_id or f"syn{video_index:05d}", T, W, H, layers)
