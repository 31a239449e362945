"""Drawing tracks over frames, saved as PNG (a montage), GIF or MP4."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mosic import MosicError


def point_colors(n: int) -> np.ndarray:
    """A distinct, stable colour per point (HSV wheel), uint8 [n, 3] RGB."""
    hsv = np.stack(
        [np.linspace(0, 179, n, endpoint=False), np.full(n, 220), np.full(n, 255)], axis=-1
    ).astype(np.uint8)
    rng = np.random.default_rng(0)
    hsv = hsv[rng.permutation(n)]
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def draw_tracks(
    frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray, tail: int = 4
) -> np.ndarray:
    """frames uint8 [T,H,W,3] RGB, tracks [T,N,2] (x, y) pixel-centre coordinates, visibility
    [T,N] -> frames with each visible point as a filled dot (hollow when occluded) and a short
    tail of its last positions."""
    T, H, W, _ = frames.shape
    colors = point_colors(tracks.shape[1])
    scale = max(1, round(min(H, W) / 240))
    out = frames.copy()
    to_px = lambda p: (int(round(p[0] - 0.5)), int(round(p[1] - 0.5)))  # noqa: E731
    for t in range(T):
        img = np.ascontiguousarray(out[t])
        for n in range(tracks.shape[1]):
            c = tuple(int(v) for v in colors[n])
            for s in range(max(0, t - tail), t):
                if visibility[s, n] and visibility[s + 1, n]:
                    cv2.line(img, to_px(tracks[s, n]), to_px(tracks[s + 1, n]), c, scale, cv2.LINE_AA)
            cv2.circle(img, to_px(tracks[t, n]), 2 * scale, c, -1 if visibility[t, n] else scale, cv2.LINE_AA)
        out[t] = img
    return out


def montage(frames: np.ndarray, cols: int = 4) -> np.ndarray:
    T, H, W, C = frames.shape
    rows = -(-T // cols)
    canvas = np.full((rows * H, cols * W, C), 255, np.uint8)
    for t in range(T):
        r, c = divmod(t, cols)
        canvas[r * H:(r + 1) * H, c * W:(c + 1) * W] = frames[t]
    return canvas


def save_frames(frames: np.ndarray, out: Path, fps: int = 4) -> Path:
    """Save frames as .png (montage), .gif or .mp4 according to ``out``'s suffix."""
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".png":
        Image.fromarray(montage(frames)).save(out)
    elif suffix == ".gif":
        ims = [Image.fromarray(f) for f in frames]
        ims[0].save(out, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
    elif suffix == ".mp4":
        import av

        H, W = frames.shape[1:3]
        with av.open(str(out), mode="w") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.width, stream.height = W - W % 2, H - H % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"qscale": "3"}
            for f in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: stream.height, : stream.width]), format="rgb24")
                for pkt in stream.encode(vf):
                    container.mux(pkt)
            for pkt in stream.encode():
                container.mux(pkt)
    else:
        raise MosicError(f"--out must end in .png, .gif or .mp4, got {out.name!r}")
    return out
