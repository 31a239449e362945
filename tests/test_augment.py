"""mosic.train.augment: the crop distribution, the coordinate mapping and its image side agree."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mosic import MosicError
from mosic.backbones import IMAGENET_MEAN, IMAGENET_STD
from mosic.train.augment import CropBox, apply_crop, map_points, map_tracks, sample_crop, to_tensor

HYP = settings(max_examples=60, deadline=None)
LEVELS = 250.0  # the coordinate frames span 0..250 grey levels across the frame


def coord_frames(W: int, H: int, T: int = 1) -> np.ndarray:
    """uint8 [T, H, W, 3] whose red encodes x and green encodes y of each pixel centre (linear)."""
    X, Y = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    img = np.stack([X * LEVELS / W, Y * LEVELS / H, np.full_like(X, 128.0)], -1)
    return np.repeat(img.round().astype(np.uint8)[None], T, axis=0)


def bilinear(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear values of img [H, W, C] at continuous (x, y) points [N, 2] (pixel centres at +0.5)."""
    H, W = img.shape[:2]
    img = img.astype(np.float64)
    x = np.clip(pts[:, 0] - 0.5, 0, W - 1)
    y = np.clip(pts[:, 1] - 0.5, 0, H - 1)
    x0 = np.minimum(np.floor(x).astype(int), W - 2) if W > 1 else np.zeros(len(x), int)
    y0 = np.minimum(np.floor(y).astype(int), H - 2) if H > 1 else np.zeros(len(y), int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    return ((1 - fx) * (1 - fy) * img[y0, x0] + fx * (1 - fy) * img[y0, x1]
            + (1 - fx) * fy * img[y1, x0] + fx * fy * img[y1, x1])


# ------------------------------------------------------------------------------------------------
# hand-made cases
# ------------------------------------------------------------------------------------------------
def test_identity_crop_of_square_frame():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    box = CropBox(0, 0, 32, 32, False, 32)
    np.testing.assert_array_equal(apply_crop(f, box), f)
    tr = np.array([[[0.5, 0.5], [31.5, 12.25], [0.0, 31.999], [32.0, 5.0], [-0.01, 3.0], [4.0, 32.0]]], np.float32)
    out, vis = map_tracks(tr, np.ones(tr.shape[:2], bool), box)
    np.testing.assert_allclose(out, tr)
    assert vis.tolist() == [[True, True, True, False, False, False]]


def test_crop_of_the_right_half():
    rng = np.random.default_rng(1)
    f = rng.integers(0, 256, (1, 32, 64, 3), dtype=np.uint8)
    box = CropBox(32, 0, 32, 32, False, 32)
    np.testing.assert_array_equal(apply_crop(f, box), f[:, :, 32:])
    tr = np.array([[[40.5, 3.5], [10.0, 3.0], [32.0, 0.0], [63.9, 31.9]]], np.float32)
    out, vis = map_tracks(tr, np.ones((1, 4), bool), box)
    np.testing.assert_allclose(out[0], [[8.5, 3.5], [-22.0, 3.0], [0.0, 0.0], [31.9, 31.9]], atol=1e-5)
    assert vis.tolist() == [[True, False, True, True]]  # the left half is outside the crop


def test_flip_mirrors_pixels_and_points():
    rng = np.random.default_rng(2)
    f = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    box = CropBox(0, 0, 24, 24, True, 24)
    np.testing.assert_array_equal(apply_crop(f, box), f[:, :, ::-1])
    # pixel centre of column c lands on the centre of column S - 1 - c
    cols = np.arange(24) + 0.5
    tr = np.stack([cols, np.full(24, 7.5)], -1)[None].astype(np.float32)
    out, vis = map_tracks(tr, np.ones((1, 24), bool), box)
    np.testing.assert_allclose(out[0, :, 0], (23 - np.arange(24)) + 0.5)
    np.testing.assert_allclose(out[0, :, 1], 7.5)
    assert vis.all()
    # the pixel value under each mapped point is the source's
    got = bilinear(apply_crop(f, box)[0], out[0])
    np.testing.assert_allclose(got, bilinear(f[0], tr[0]))


def test_non_square_frames_scale_each_axis():
    # 96 x 48 squashed to 48 x 48: x halves, y stays; the output averages column pairs
    f = coord_frames(96, 48)
    box = CropBox.full(96, 48, out_size=48)
    out = apply_crop(f, box)
    pair = f[0].astype(float).reshape(48, 48, 2, 3).mean(2)
    assert np.abs(out[0].astype(float) - pair).max() <= 1
    tr = np.array([[[10.0, 20.0], [95.5, 47.5]]], np.float32)
    m, vis = map_tracks(tr, np.ones((1, 2), bool), box)
    np.testing.assert_allclose(m[0], [[5.0, 20.0], [47.75, 47.5]])
    assert vis.all()
    # 48 x 24 stretched to 48 x 48: y doubles; every output pixel shows its own source position
    f = coord_frames(48, 24)
    out = apply_crop(f, CropBox.full(48, 24, out_size=48))[0].astype(float)
    yc = (np.arange(48) + 0.5) / 2  # source y of each output row centre
    inner = slice(2, -2)
    np.testing.assert_allclose(out[inner, :, 1], np.repeat((yc * LEVELS / 24)[inner, None], 48, 1), atol=1.01)
    np.testing.assert_allclose(out[:, :, 0], f[0, :1, :, 0].astype(float).repeat(48, 0), atol=1.01)


def test_sharp_dot_lands_where_its_track_says():
    # a small bright blob on a 120 x 80 frame, a crop that shrinks x by ~2.5 and y by ~1.5, flipped
    H, W = 80, 120
    X, Y = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    cx, cy = 71.3, 38.6
    blob = 255 * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * 2.5**2))
    f = np.repeat(blob.round().astype(np.uint8)[None, :, :, None], 3, -1)
    box = CropBox(20.4, 10.2, 80.6, 48.3, True, 32)
    for aa in (True, False):
        out = apply_crop(f, box, antialias=aa)[0, :, :, 0].astype(float)
        ox, oy = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
        centroid = np.array([(out * ox).sum(), (out * oy).sum()]) / out.sum()
        want = map_points(np.array([cx, cy]), box)
        np.testing.assert_allclose(centroid, want, atol=0.1)


def test_point_outside_the_crop_is_invisible():
    box = CropBox(10, 20, 40, 30, False, 16)
    tr = np.array([[[30, 35], [9.9, 35], [30, 19.9], [50.0, 35], [30, 50.0], [np.nan, 30]]], np.float32)
    vis_in = np.array([[True, True, True, True, True, True]])
    _, vis = map_tracks(tr, vis_in, box)
    assert vis.tolist() == [[True, False, False, False, False, False]]
    # an invisible point stays invisible inside the crop
    _, vis = map_tracks(tr[:, :1], np.array([[False]]), box)
    assert not vis.any()
    with pytest.raises(MosicError):
        map_tracks(tr, vis_in[:, :3], box)


def test_to_tensor_normalises_with_imagenet_statistics():
    f = np.zeros((2, 4, 4, 3), np.uint8)
    f[1, 2, 3] = (255, 0, 128)
    x = to_tensor(f)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32 and x.is_contiguous()
    want = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
            (128 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    np.testing.assert_allclose(x[1, :, 2, 3].numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD), rtol=1e-6)


def test_device_normalisation_equals_the_former_cpu_normalisation():
    """The loader hands over uint8 and the training loop normalises on the device: bit for bit the
    float32 frames the loader used to make on the CPU (the former to_tensor, written out here)."""
    from mosic.train.augment import normalize_frames, to_uint8_chw

    f = np.random.default_rng(0).integers(0, 256, (3, 9, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(f).permute(0, 3, 1, 2)
    old = torch.empty(x.shape, dtype=torch.float32)
    old.copy_(x)
    scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD], dtype=torch.float32).view(1, 3, 1, 1)
    bias = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], dtype=torch.float32).view(1, 3, 1, 1)
    old.mul_(scale).add_(bias)
    u = to_uint8_chw(f)
    assert u.dtype == torch.uint8 and u.shape == (3, 3, 9, 7) and u.is_contiguous()
    assert torch.equal(normalize_frames(u, IMAGENET_MEAN, IMAGENET_STD), old)
    # a batch [B, T, 3, H, W] (what the training loop gets) normalises the same
    assert torch.equal(normalize_frames(torch.stack([u, u]), IMAGENET_MEAN, IMAGENET_STD)[1], old)
    assert torch.equal(to_tensor(f), old)
    # other statistics are taken as given
    got = normalize_frames(u, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    torch.testing.assert_close(got, u.float() / 127.5 - 1, rtol=0, atol=1e-6)
    with pytest.raises(MosicError, match="uint8"):
        normalize_frames(u.float(), IMAGENET_MEAN, IMAGENET_STD)


def test_bad_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(MosicError):
        sample_crop(rng, 64, 48, scale=(0.9, 0.2))
    with pytest.raises(MosicError):
        sample_crop(rng, 64, 48, ratio=(0, 1))
    with pytest.raises(MosicError):
        CropBox(0, 0, 0, 10)
    with pytest.raises(MosicError):
        apply_crop(np.zeros((4, 4, 3), np.uint8), CropBox(0, 0, 4, 4))


# ------------------------------------------------------------------------------------------------
# the crop distribution
# ------------------------------------------------------------------------------------------------
def test_whole_frame_when_scale_and_ratio_are_one():
    box = sample_crop(np.random.default_rng(0), 320, 240, scale=(1, 1), ratio=(1, 1), flip_p=0)
    assert (box.x0, box.y0, box.w, box.h, box.flip) == (0, 0, 320, 240, False)


def test_crop_distribution_matches_torchvision():
    """Same sampler as RandomResizedCrop.get_params on the squashed 224 x 224 frame (moments of
    4,000 draws from each; the two use different generators, so only statistics can agree)."""
    from torchvision.transforms import RandomResizedCrop

    n, S = 4000, 224
    rng = np.random.default_rng(0)
    ours = []
    for _ in range(n):
        b = sample_crop(rng, 640, 360, out_size=S)  # source pixels back to the squashed frame
        ours.append((b.y0 * S / 360, b.x0 * S / 640, b.h * S / 360, b.w * S / 640, b.flip))
    ours = np.array(ours)
    torch.manual_seed(0)
    img = torch.zeros(1, S, S)
    tv = np.array([RandomResizedCrop.get_params(img, [0.4, 1.0], [3 / 4, 4 / 3]) for _ in range(n)], float)
    np.testing.assert_allclose(ours[:, :4], np.round(ours[:, :4]), atol=1e-6)  # integer pixels there
    for k in range(4):  # i, j, h, w: means and spreads within sampling error
        se = tv[:, k].std() / math.sqrt(n)
        assert abs(ours[:, k].mean() - tv[:, k].mean()) < 5 * se * math.sqrt(2) + 0.5, k
        assert abs(ours[:, k].std() - tv[:, k].std()) < 0.06 * tv[:, k].std() + 0.5, k
    area = ours[:, 2] * ours[:, 3] / S**2
    area_tv = tv[:, 2] * tv[:, 3] / S**2
    assert abs(area.mean() - area_tv.mean()) < 0.01
    assert abs(ours[:, 4].mean() - 0.5) < 0.03  # flip p = 0.5


@HYP
@given(
    W=st.integers(8, 2000), H=st.integers(8, 2000), seed=st.integers(0, 2**32 - 1),
    s0=st.floats(0.05, 1.0), s1=st.floats(0.05, 1.0), r0=st.floats(0.3, 1.0), r1=st.floats(1.0, 3.0),
    S=st.sampled_from([16, 64, 224]),
)
def test_sampled_box_is_inside_the_frame_with_area_in_scale(W, H, seed, s0, s1, r0, r1, S):
    lo, hi = min(s0, s1), max(s0, s1)
    box = sample_crop(np.random.default_rng(seed), W, H, scale=(lo, hi), ratio=(r0, r1), out_size=S)
    eps = 1e-9 * max(W, H)
    assert box.out_size == S
    assert -eps <= box.x0 and box.x0 + box.w <= W + eps and box.w > 0
    assert -eps <= box.y0 and box.y0 + box.h <= H + eps and box.h > 0
    w, h = box.w * S / W, box.h * S / H  # in the squashed square
    for v in (box.x0 * S / W, box.y0 * S / H, w, h):
        assert abs(v - round(v)) < 1e-6  # integer pixels of the squashed frame, as torchvision
    frac = w * h / S**2
    # rounding w and h to whole pixels moves the area by at most one row/column (1/S)
    fallback = frac == 1.0 or (w == S or h == S)
    assert fallback or lo - 1.01 / S <= frac <= hi + 1.01 / S


# ------------------------------------------------------------------------------------------------
# the image and the points agree
# ------------------------------------------------------------------------------------------------
@HYP
@given(
    W=st.integers(16, 96), H=st.integers(16, 96), S=st.sampled_from([16, 24, 40, 64]),
    seed=st.integers(0, 2**32 - 1), antialias=st.booleans(), scale_lo=st.floats(0.1, 1.0),
)
def test_mapped_points_land_on_the_same_content(W, H, S, seed, antialias, scale_lo):
    rng = np.random.default_rng(seed)
    box = sample_crop(rng, W, H, scale=(scale_lo, 1.0), out_size=S)
    f = coord_frames(W, H)
    out = apply_crop(f, box, antialias=antialias)[0]
    # points inside the crop, away from the crop's and the frame's edges
    fx, fy = box.w / S, box.h / S
    mx, my = 1.5 * fx + 0.01, 1.5 * fy + 0.01  # 1.5 output pixels
    ex, ey = 1.5 * max(fx, 1) + 1, 1.5 * max(fy, 1) + 1  # the resampling's reach near the frame edge
    xa, xb = max(box.x0 + mx, ex), min(box.x0 + box.w - mx, W - ex)
    ya, yb = max(box.y0 + my, ey), min(box.y0 + box.h - my, H - ey)
    assume(xa < xb and ya < yb)
    pts = np.stack([rng.uniform(xa, xb, 50), rng.uniform(ya, yb, 50)], -1)
    mapped, vis = map_tracks(pts[None], np.ones((1, 50), bool), box)
    assert vis.all()
    got = bilinear(out, mapped[0].astype(np.float64))
    want = np.stack([pts[:, 0] * LEVELS / W, pts[:, 1] * LEVELS / H], -1)
    err = got[:, :2] - want
    # uint8 rounding: 0.5 level for the source and 0.5 per resampling stage (the antialiasing
    # reduction is a second stage), plus cv2's 1/32-pixel coordinate steps
    stages = 2 if antialias and max(fx, fy) > 1 else 1
    tol = 0.5 + 0.5 * stages + 0.01 + np.array([LEVELS / W, LEVELS / H]) * max(fx, fy, 1) / 32
    assert (np.abs(err) <= tol).all(), (box, np.abs(err).max(0), tol)
    # no systematic shift: a half-pixel error moves the mean by 0.5 * LEVELS / W levels; allow a
    # quarter pixel, but never less than 0.75 levels (two uint8 roundings can bias the mean a little)
    limit = np.maximum(0.25 * LEVELS / np.array([W, H]), 0.75)
    assert (np.abs(err.mean(0)) < limit).all(), (box, err.mean(0), limit)


@HYP
@given(
    W=st.integers(8, 400), H=st.integers(8, 400), S=st.sampled_from([16, 32, 224]),
    seed=st.integers(0, 2**32 - 1),
    pts=st.lists(st.tuples(st.floats(-50, 450), st.floats(-50, 450)), min_size=1, max_size=20),
)
def test_flip_twice_is_identity(W, H, S, seed, pts):
    box = sample_crop(np.random.default_rng(seed), W, H, flip_p=0.0, out_size=S)
    fbox = CropBox(box.x0, box.y0, box.w, box.h, True, S)
    tr = np.array(pts, np.float32)[None]
    vis = np.ones(tr.shape[:2], bool)
    a, va = map_tracks(tr, vis, box)
    b, vb = map_tracks(tr, vis, fbox)
    back = b.astype(np.float64).copy()
    back[..., 0] = S - back[..., 0]  # mirror again
    np.testing.assert_allclose(back, a, atol=1e-4 * S, rtol=1e-5)
    exact = map_points(tr, box)[..., 0]
    clear = (np.abs(exact) > 1e-3) & (np.abs(exact - S) > 1e-3)  # exactly on an edge: half-open rule
    assert (va == vb)[clear].all()
    if W <= 96 and H <= 96:
        f = np.random.default_rng(seed).integers(0, 256, (1, H, W, 3), dtype=np.uint8)
        diff = apply_crop(f, fbox)[:, :, ::-1].astype(int) - apply_crop(f, box)
        assert np.abs(diff).max() <= 1


@pytest.mark.parametrize("f", [1.3, 1.9, 2.5])
def test_antialiasing_moves_nothing(f):
    """Mild reductions (Gaussian in place) and strong ones (area average) keep a spot of light
    where the crop map sends it: the centroid of a small bright blob lands on its mapped position."""
    from mosic.train.augment import _reduce

    S, W, H = 32, 400, 300
    box = CropBox(37.0, 21.0, S * f, S * f * 0.9, False, S)
    px, py = 61.3, 47.8  # the blob's centre, source pixels
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    blob = 255 * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * (3.0 * f) ** 2))
    img = np.repeat(np.round(blob).astype(np.uint8)[None, :, :, None], 3, axis=3)
    red, rbox = _reduce(img, box)
    if f < 2:  # blurred in place on the region around the box: the same pixel grid, the box shifted
        assert rbox.w == box.w and rbox.h == box.h and float(box.x0 - rbox.x0).is_integer()
    else:  # area-averaged: fewer pixels
        assert rbox.w < box.w and red.shape[2] < W
    out = apply_crop(img, box).astype(np.float64)[0, :, :, 0]
    ys, xs = np.mgrid[0:S, 0:S] + 0.5
    cx, cy = (out * xs).sum() / out.sum(), (out * ys).sum() / out.sum()
    (mx, my), = map_points(np.array([[px, py]]), box)
    assert abs(cx - mx) < 0.05 and abs(cy - my) < 0.05, (cx, cy, mx, my)
