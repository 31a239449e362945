"""mosic.train.device_crop: the training crop in torch (for frames decoded on a GPU), checked on the
CPU against the OpenCV path it mirrors: same geometry, small grey-level differences."""

import cv2
import numpy as np
import pytest
import torch

from mosic.train.augment import CropBox, apply_crop, sample_crop, to_tensor
from mosic.train.device_crop import crop_on_device


def _frames(T=2, H=300, W=420, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(T):
        img = cv2.GaussianBlur(rng.uniform(0, 255, (H, W, 3)).astype(np.float32), (0, 0), 2.5)
        img = (img - img.min()) / (img.max() - img.min()) * 255
        out.append(img.astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("S", [64, 224])
def test_device_crop_matches_the_opencv_crop_and_is_aligned(S):
    frames = _frames()
    t = torch.from_numpy(frames)
    rng = np.random.default_rng(1)
    diffs, shifted, flips = [], [], set()
    boxes = [sample_crop(rng, 420, 300, out_size=S) for _ in range(12)]
    boxes.append(CropBox(10.3, 20.7, 50.0, 40.0, True, S))  # a crop that enlarges
    for box in boxes:
        flips.add(box.flip)
        ref = apply_crop(frames, box).astype(np.float64)
        got = crop_on_device(t, box, normalize=False).permute(0, 2, 3, 1).numpy()
        diffs.append(np.abs(got - ref).mean())
        for dx, dy in [(0.3, 0), (-0.3, 0), (0, 0.3), (0, -0.3)]:
            moved = CropBox(box.x0 + dx * box.w / S, box.y0 + dy * box.h / S, box.w, box.h, box.flip, S)
            shifted.append(np.abs(got - apply_crop(frames, moved)).mean())
        # the normalised output is what to_tensor gives for the same pixels
        torch.testing.assert_close(crop_on_device(t, box),
                                   to_tensor(np.clip(np.round(got), 0, 255).astype(np.uint8)), atol=0.03, rtol=0)
    diffs = np.array(diffs)
    assert flips == {True, False}
    # grey levels; measured 0.54 (S = 224) and 1.56 (S = 64: reductions up to 6.5x, where the
    # triangle filter and the area average differ most); 0.3 px off: 2.3 and 4.1
    assert diffs.mean() < 2.0 and diffs.max() < 3.0, diffs
    assert np.mean(shifted) > 2 * diffs.mean(), (diffs.mean(), np.mean(shifted))


def test_device_crop_takes_channels_first_and_rejects_other_shapes():
    frames = torch.from_numpy(_frames(T=1, H=60, W=80))
    box = CropBox(5, 5, 40, 30, False, 32)
    a = crop_on_device(frames, box)
    b = crop_on_device(frames.permute(0, 3, 1, 2), box)
    torch.testing.assert_close(a, b)
    with pytest.raises(Exception, match="frames must be"):
        crop_on_device(frames[0], box)
