"""``cotracker3``: frozen CoTracker-v3 (offline model) through the official ``cotracker`` package.

The package is an optional extra (``pip install -e '.[cotracker]'``); it is imported only when a
tracker is built. Weights come from ``settings.checkpoint`` (the release's ``scaled_offline.pth``,
a plain state dict) or, without one, from ``torch.hub`` (needs network access).

Coordinate conventions (read from co-tracker's source, ``cotracker/predictor.py`` and
``cotracker/models/core/model_utils.py``, release 3.0):

* CoTracker uses the ``align_corners=True`` convention: the centre of pixel index ``i`` is at
  coordinate ``i``, so an image of width W spans centres 0 .. W - 1. Evidence: the predictor
  resizes the video with ``F.interpolate(..., mode="bilinear", align_corners=True)``, scales query
  and output coordinates by ``(W_model - 1) / (W - 1)`` and ``(H_model - 1) / (H - 1)`` (x, y), and
  the model samples its feature maps with ``bilinear_sampler(..., align_corners=True)``, whose
  docstring says "0 corresponding to the center of the left-most image pixel". Its TAP-Vid loader
  maps normalised points with ``* (size - 1)`` too.
* Ours put the centre of pixel ``(col, row)`` at ``(col + 0.5, row + 0.5)``. So, with the model's
  input size ``(W_m, H_m) = (512, 384)``::

      model = (ours - 0.5) * (W_m - 1) / (W - 1)          (and the same for y with H)
      ours  = model * (W - 1) / (W_m - 1) + 0.5

  Queries and tracks are (x, y) = (column, row) on both sides; CoTracker's queries are
  (t, x, y).

What the adapter does (instead of calling ``CoTrackerPredictor.forward``, whose offline path
thresholds visibility at a hard-coded 0.9 and drops the model's confidence):

1. resize every frame to the model's resolution exactly as the predictor does (bilinear,
   ``align_corners=True``) and call ``predictor.model(video=..., queries=..., iters=6)`` with video
   B x T x 3 x 384 x 512 float in 0..255 and queries B x N x 3 = (0, x, y) in model pixels; no
   backward tracking and no support grid (as ``CoTrackerPredictor(video, grid_size=G)`` does; the
   MoSiC recipe uses no support grid. With explicit ``queries`` the predictor would add a 6 x 6
   support grid, which changes the tracks);
2. visibility = sigmoid visibility > ``visibility_threshold`` (the offline predictor's rule; the
   model's confidence is returned separately, not multiplied in);
3. on the query frame (t = 0) the track is set to the query itself and marked visible, confidence
   1 (the predictor does the same: co-tracker issue #28).

Batches of clips: the offline model's ``forward`` (3.0) fails for B > 1 (co-tracker issue #163);
:mod:`mosic.precompute.trackers.cotracker_batch_fix` works around it for batched calls of an affected
model. If a batched call still fails, the tracker warns once and tracks one clip at a time from then
on.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mosic import MosicError
from mosic.devices import resolve_device, resolve_precision
from mosic.files import file_sha256
from mosic.precompute.trackers.base import TRACKERS, Tracker, TrackResult, check_frames
from mosic.precompute.trackers.cotracker_batch_fix import view_bug_present, view_fallback_mode

if TYPE_CHECKING:
    from mosic.config import TrackerSettings
    from mosic.data.base import ClipRef, FrameSource

log = logging.getLogger(__name__)

#: bump when the adapter's output changes (the store spec records it)
ADAPTER_REVISION = "1"
PIP_INSTALL = 'pip install "cotracker @ git+https://github.com/facebookresearch/co-tracker.git"'
EXTRA_INSTALL = "pip install -e '.[cotracker]'"
CHECKPOINT_URL = "https://huggingface.co/facebook/cotracker3/resolve/main/scaled_offline.pth"
HUB_REPO, HUB_ENTRY = "facebookresearch/co-tracker", "cotracker3_offline"
ITERS = 6  # refinement iterations, as CoTrackerPredictor
WINDOW_LEN = 60  # as torch.hub's cotracker3_offline


# -- coordinates -------------------------------------------------------------------------------
def to_model_coords(points, size: tuple[int, int], model_size: tuple[int, int]):
    """Our pixel-centre (x, y) in an image of ``size`` = (W, H) -> CoTracker's coordinates in its
    input of ``model_size`` = (W_m, H_m) (pixel centres at integers, align_corners=True).
    Works on numpy arrays and torch tensors [..., 2]."""
    (w, h), (wm, hm) = size, model_size
    sx, sy = (wm - 1) / (w - 1), (hm - 1) / (h - 1)
    x = (points[..., 0] - 0.5) * sx
    y = (points[..., 1] - 0.5) * sy
    return _stack_xy(points, x, y)


def from_model_coords(points, size: tuple[int, int], model_size: tuple[int, int]):
    """Inverse of :func:`to_model_coords`: CoTracker's (x, y) at ``model_size`` -> ours at ``size``."""
    (w, h), (wm, hm) = size, model_size
    sx, sy = (w - 1) / (wm - 1), (h - 1) / (hm - 1)
    x = points[..., 0] * sx + 0.5
    y = points[..., 1] * sy + 0.5
    return _stack_xy(points, x, y)


def _stack_xy(like, x, y):
    if isinstance(like, np.ndarray):
        return np.stack([x, y], axis=-1).astype(like.dtype if like.dtype.kind == "f" else np.float64)
    import torch

    return torch.stack([x, y], dim=-1)


# -- package, weights, device ------------------------------------------------------------------
def import_predictor_class():
    """``cotracker.predictor.CoTrackerPredictor``, or MosicError with the install command."""
    import torch

    # cotracker.models.core.cotracker.cotracker3_offline calls torch.manual_seed(0) at import:
    # keep the caller's CPU random state as it was.
    state = torch.random.get_rng_state()
    try:
        mod = importlib.import_module("cotracker.predictor")
    except ImportError as e:
        raise MosicError(
            f"tracker 'cotracker3' needs the CoTracker package, which could not be imported ({e}). "
            f"Install it with: {PIP_INSTALL}   (or, in this project: {EXTRA_INSTALL})"
        ) from None
    finally:
        torch.random.set_rng_state(state)
    cls = getattr(mod, "CoTrackerPredictor", None)
    if cls is None:
        raise MosicError(
            "the installed cotracker package has no cotracker.predictor.CoTrackerPredictor; "
            f"install CoTracker-v3 with: {PIP_INSTALL}"
        )
    return cls


def cotracker_version() -> str:
    try:
        return metadata.version("cotracker")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- the tracker -------------------------------------------------------------------------------
class CoTrackerTracker(Tracker):
    name = "cotracker3"
    uses_frames = True

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        batch_size: int = 8,
        device: str = "auto",
        precision: str = "auto",
        visibility_threshold: float = 0.9,
    ):
        super().__init__(batch_size=batch_size)
        if not 0 < visibility_threshold < 1:
            raise MosicError(f"visibility_threshold must be in (0, 1), got {visibility_threshold}")
        self.visibility_threshold = float(visibility_threshold)
        predictor_cls = import_predictor_class()
        self.package_version = cotracker_version()
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise MosicError(
                f"CoTracker checkpoint not found: {self.checkpoint} "
                f"(download scaled_offline.pth from {CHECKPOINT_URL})"
            )
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device, who="cotracker3")
        self._hash: str | None = None
        self._hub_file: Path | None = None
        self.predictor = self._load(predictor_cls)
        self.model = self.predictor.model.to(self.device).eval()
        hm, wm = (int(v) for v in self.predictor.interp_shape)
        self.model_size = (wm, hm)  # (W, H)
        self.view_fix = view_bug_present(self.model, self.package_version)  # co-tracker issue #163
        self.view_fixes_used = 0  # how often the workaround turned a failing view into a reshape
        self._batched_ok = True

    # -- loading -----------------------------------------------------------------------------
    def _load(self, predictor_cls):
        import torch

        if self.checkpoint is None:
            return self._load_from_hub()
        try:
            predictor = predictor_cls(checkpoint=None, offline=True, v2=False, window_len=WINDOW_LEN)
        except TypeError as e:
            raise MosicError(
                f"the installed cotracker package ({self.package_version}) is not CoTracker-v3 "
                f"({e}); install it with: {PIP_INSTALL}"
            ) from None
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
            predictor.model.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - any unreadable / mismatched file is the user's
            raise MosicError(
                f"{self.checkpoint}: not a CoTracker-v3 offline checkpoint "
                f"({type(e).__name__}: {str(e)[:300]}); expected scaled_offline.pth from {CHECKPOINT_URL}"
            ) from None
        return predictor

    def _load_from_hub(self):
        import torch

        try:
            predictor = torch.hub.load(HUB_REPO, HUB_ENTRY, trust_repo=True)
        except Exception as e:  # noqa: BLE001 - network, GitHub or Hugging Face unreachable
            raise MosicError(
                "no CoTracker checkpoint given and the weights could not be fetched through "
                f"torch.hub ({HUB_REPO}: {HUB_ENTRY}): no network, or GitHub / Hugging Face not "
                f"reachable ({type(e).__name__}: {str(e)[:200]}). Download the offline checkpoint "
                f"scaled_offline.pth from {CHECKPOINT_URL} and pass --checkpoint PATH "
                "(or tracker.checkpoint=PATH)"
            ) from None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / "scaled_offline.pth"
        self._hub_file = cached if cached.is_file() else None
        return predictor

    # -- identity ----------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return f"cotracker3-offline/cotracker-{self.package_version}+adapter-{ADAPTER_REVISION}"

    def checkpoint_hash(self) -> str | None:
        if self._hash is None:
            path = self.checkpoint or self._hub_file
            if path is not None:
                self._hash = file_sha256(path)
        return self._hash

    def params(self) -> dict[str, Any]:
        wm, hm = self.model_size
        return {
            "visibility_threshold": self.visibility_threshold,
            "visibility_rule": "sigmoid(vis) > threshold; query frame visible",
            "model_input": f"each frame resized to {wm}x{hm} (bilinear, align_corners=True); "
            "coordinates mapped with (size - 1) ratios and the half-pixel shift",
            "iters": ITERS,
            "window_len": WINDOW_LEN,
            "support_grid": False,
            "backward_tracking": False,
            "precision": self.precision,
            "weights": "checkpoint" if self.checkpoint is not None else f"torch.hub:{HUB_REPO}:{HUB_ENTRY}",
        }

    # -- tracking ----------------------------------------------------------------------------
    def track(self, frames: np.ndarray, queries: np.ndarray, clips: Sequence["ClipRef"] | None = None) -> TrackResult:
        frames = check_frames(np.asarray(frames))
        B, T, H, W, _ = frames.shape
        if H < 2 or W < 2:
            raise MosicError(f"cotracker3 needs frames of at least 2 x 2 pixels, got {W} x {H}")
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, 2)
        N = len(queries)
        q_model = to_model_coords(queries.astype(np.float64), (W, H), self.model_size)

        tracks = np.empty((B, T, N, 2), dtype=np.float32)
        vis = np.empty((B, T, N), dtype=np.float32)
        conf = np.empty((B, T, N), dtype=np.float32)
        has_conf = True
        bs = max(1, self.batch_size) if self._batched_ok else 1
        for a in range(0, B, bs):
            b = min(B, a + bs)
            tr, v, c = self._track_batch(frames[a:b], q_model)
            tracks[a:b], vis[a:b] = tr, v
            if c is None:
                has_conf = False
            else:
                conf[a:b] = c

        tracks = from_model_coords(tracks.astype(np.float64), (W, H), self.model_size).astype(np.float32)
        visibility = vis > self.visibility_threshold
        # the query frame: the query itself, visible (as CoTrackerPredictor does)
        tracks[:, 0] = queries
        visibility[:, 0] = True
        confidence = None
        if has_conf:
            conf[:, 0] = 1.0
            confidence = conf
        return TrackResult(tracks=tracks, visibility=visibility, confidence=confidence)

    def _track_batch(self, frames: np.ndarray, q_model: np.ndarray):
        """Frames of up to ``batch_size`` clips; falls back to one clip at a time (for good) when
        a batched call fails."""
        if len(frames) == 1:
            return self._forward(frames, q_model)
        if not self._batched_ok:
            return self._one_by_one(frames, q_model)
        try:
            return self._forward(frames, q_model)
        except RuntimeError as e:
            self._batched_ok = False
            log.warning(
                "cotracker3: a batch of %d clips failed (%s: %s); tracking one clip at a time from now on",
                len(frames), type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "",
            )
            self._empty_cache()
            return self._one_by_one(frames, q_model)

    def _one_by_one(self, frames: np.ndarray, q_model: np.ndarray):
        outs = [self._forward(frames[i : i + 1], q_model) for i in range(len(frames))]
        tr = np.concatenate([o[0] for o in outs])
        v = np.concatenate([o[1] for o in outs])
        c = None if any(o[2] is None for o in outs) else np.concatenate([o[2] for o in outs])
        return tr, v, c

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _autocast(self):
        import torch

        if self.device.type == "cuda" and self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _forward(self, frames: np.ndarray, q_model: np.ndarray):
        """One model call: frames uint8 [b, T, H, W, 3], queries [N, 2] in model pixels ->
        (tracks [b, T, N, 2] in model pixels, visibility probability [b, T, N],
        confidence [b, T, N] or None), numpy float32."""
        import torch
        import torch.nn.functional as F

        b, T, H, W, _ = frames.shape
        wm, hm = self.model_size
        N = len(q_model)
        with torch.inference_mode():
            video = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            video = video.permute(0, 1, 4, 2, 3).reshape(b * T, 3, H, W).float()
            if (H, W) != (hm, wm):
                video = F.interpolate(video, size=(hm, wm), mode="bilinear", align_corners=True)
            video = video.reshape(b, T, 3, hm, wm)
            q = torch.zeros((b, N, 3), dtype=torch.float32, device=self.device)
            q[:, :, 1:] = torch.from_numpy(np.asarray(q_model, dtype=np.float32)).to(self.device)
            fix = view_fallback_mode() if (self.view_fix and b > 1) else contextlib.nullcontext()
            with self._autocast(), fix:
                out = self.model(video=video, queries=q, iters=ITERS)
            self.view_fixes_used += getattr(fix, "used", 0)
            coords, vis = out[0], out[1]
            conf = out[2] if len(out) > 2 and isinstance(out[2], torch.Tensor) else None
            coords = coords[..., :2].float().cpu().numpy()
            vis = vis.reshape(b, T, N).float().cpu().numpy()
            if conf is not None:
                conf = conf.reshape(b, T, N).float().cpu().numpy()
        return coords, vis, conf


@TRACKERS.register("cotracker3")
def make_cotracker(settings: "TrackerSettings", source: "FrameSource | None" = None) -> CoTrackerTracker:
    return CoTrackerTracker(
        checkpoint=settings.checkpoint,
        batch_size=settings.batch_size,
        device=settings.device,
        precision=settings.precision,
        visibility_threshold=settings.visibility_threshold,
    )
