"""Motion: per-frame affine maps (helpers), a layer and its affines, the camera's and the objects' paths."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from mosic.data.synthetic.drawing import CLASSES

# ------------------------------------------------------------------------------------------------
# affine helpers
# ------------------------------------------------------------------------------------------------
def _rot(theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # [..., 2, 2]


def _compose(lin: np.ndarray, trans: np.ndarray) -> np.ndarray:
    return np.concatenate([lin, trans[..., None]], axis=-1)  # [..., 2, 3]


def invert_affines(A: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(A[..., :2])
    return _compose(lin, -np.einsum("...ij,...j->...i", lin, A[..., 2]))


def apply_affine(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``A`` [2, 3] applied to ``pts`` [N, 2]."""
    return pts @ A[:, :2].T + A[:, 2]


def cv2_matrix(A: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The cv2.warpAffine matrix for the continuous map ``A`` (pixel centres at +0.5 on both sides),
    drawing into an output whose pixel (0, 0) is image pixel ``offset`` (col, row)."""
    lin = A[:, :2]
    t = A[:, 2] + lin @ np.array([0.5, 0.5]) - 0.5 - np.asarray(offset, dtype=np.float64)
    return _compose(lin, t)


@dataclass
class Layer:
    id: int  # 0 = background, 1..K objects
    class_index: int
    z: int  # drawing order: 0 = background (bottom), larger = nearer
    shape: str  # "plane" for the background
    radius: float  # shape circumradius in layer-local pixels (0 for the background)
    centre: tuple[float, float]  # shape centre in layer-local pixels
    affines: np.ndarray  # float64 [T, 2, 3], layer-local -> image
    motion: dict = field(default_factory=dict)  # the parameters the affines were made from
    texture: np.ndarray | None = None  # uint8 [h, w, 3] (not stored on disk)
    alpha: np.ndarray | None = None  # float32 [h, w] coverage (objects)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "class": CLASSES[self.class_index],
            "class_index": self.class_index,
            "z": self.z,
            "shape": self.shape,
            "radius": self.radius,
            "centre": list(self.centre),
            "motion": self.motion,
            # per frame [a11, a12, b1, a21, a22, b2]: image = [[a11, a12], [a21, a22]] @ local + b
            "affines": [[float(v) for v in a.ravel()] for a in self.affines],
        }


def _video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)]))


def _video_length(rng: np.random.Generator, num_frames: int, exact_length: bool) -> int:
    jitter = rng.uniform(-0.25, 0.25)  # always drawn, so the rest of the stream does not depend on it
    return num_frames if exact_length else max(2, int(round(num_frames * (1 + jitter))))


def _camera(rng: np.random.Generator, T: int, W: int, H: int) -> tuple[Layer, tuple[int, int]]:
    t = np.arange(T, dtype=np.float64)
    dmax = 0.08 * max(W, H)
    zamp = rng.uniform(0.02, 0.06)
    aamp = np.deg2rad(rng.uniform(1.0, 4.0))
    drift = rng.uniform(-1, 1, 2)
    pc, phc = T * rng.uniform(0.8, 2.0, 2), rng.uniform(0, 2 * np.pi, 2)
    pz, phz = T * rng.uniform(0.8, 2.0), rng.uniform(0, 2 * np.pi)
    pa, pha = T * rng.uniform(0.8, 2.0), rng.uniform(0, 2 * np.pi)
    ramp = (2 * t / max(T - 1, 1) - 1)[:, None]
    d = dmax * (0.5 * drift * ramp + 0.5 * np.sin(2 * np.pi * t[:, None] / pc + phc))
    zoom = 1 + zamp * np.sin(2 * np.pi * t / pz + phz)
    ang = aamp * np.sin(2 * np.pi * t / pa + pha)
    half = math.ceil(dmax + 0.5 * math.hypot(W, H) / (1 - zamp) + 4)
    tex_c = np.array([half, half], np.float64)
    img_c = np.array([W / 2, H / 2])
    lin = zoom[:, None, None] * _rot(ang)
    trans = img_c - np.einsum("tij,tj->ti", lin, tex_c + d)
    motion = {
        "kind": "camera",
        "translation_amplitude": dmax,
        "drift": drift.tolist(),
        "periods": pc.tolist(),
        "phases": phc.tolist(),
        "zoom_amplitude": zamp,
        "zoom_period": pz,
        "zoom_phase": phz,
        "rotation_amplitude": aamp,
        "rotation_period": pa,
        "rotation_phase": pha,
    }
    layer = Layer(0, 0, 0, "plane", 0.0, (half, half), _compose(lin, trans), motion)
    return layer, (2 * half, 2 * half)


def _object_motion(rng: np.random.Generator, T: int, W: int, H: int, rb: float, edge_swing: bool) -> tuple[np.ndarray, dict]:
    """Image-space centre path [T, 2] of an object whose bounding radius is ``rb``."""
    t = np.arange(T, dtype=np.float64)
    if edge_swing:
        # swing perpendicular to one image edge: inside at the start, fully outside around the
        # middle of a period, back inside after a period (period < video length)
        edge = int(rng.integers(4))
        P = T * rng.uniform(0.7, 0.85)
        A = 2.2 * rb
        ph = -np.pi / 2 + rng.uniform(-0.3, 0.3)
        s = A * np.sin(2 * np.pi * t / P + ph)
        ext = H if edge in (0, 1) else W  # extent along the edge
        along = ext * rng.uniform(0.3, 0.7) + 0.1 * ext * np.sin(2 * np.pi * t / (T * rng.uniform(1, 2)) + rng.uniform(0, 2 * np.pi))
        perp = {0: -s, 1: W + s, 2: -s, 3: H + s}[edge]  # 0 left, 1 right, 2 top, 3 bottom
        c = np.stack([perp, along] if edge in (0, 1) else [along, perp], -1)
        return c, {"kind": "edge_swing", "edge": ["left", "right", "top", "bottom"][edge], "period": P, "amplitude": A, "phase": ph}
    anchor = np.array([W, H]) * rng.uniform(0.3, 0.7, 2)
    amp = np.array([W, H]) * rng.uniform(0.08, 0.25, 2)
    per = T * rng.uniform(0.8, 2.0, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    c = anchor + amp * np.sin(2 * np.pi * t[:, None] / per + ph)
    return c, {"kind": "oscillate", "anchor": anchor.tolist(), "amplitude": amp.tolist(), "periods": per.tolist(), "phases": ph.tolist()}
