"""The ``cotracker3`` adapter, tested against a fake ``cotracker`` package (CI has neither the
package nor weights), plus one optional check against the real package with random weights."""

import hashlib
import logging
import sys
import types

import numpy as np
import pytest
import torch

from mosic import MosicError
from mosic.config import TrackerSettings
from mosic.precompute.trackers import cotracker as ct
from mosic.data.grid import grid_queries
from mosic.precompute.trackers import cotracker_batch_fix
from mosic.precompute.trackers.base import TRACKERS, create_tracker

# 511 / (74 - 1) = 7: a pixel column c lands exactly on model column 7c. Non-square on purpose.
W, H = 74, 48
WM, HM = 512, 384


class FakeModel(torch.nn.Module):
    """Mimics ``CoTrackerThreeOffline``: forward(video B x T x 3 x 384 x 512 in 0..255, queries
    B x N x 3 as (t, x, y) in model pixels, pixel centres at integers) -> (coords B x T x N x 2,
    sigmoid visibility B x T x N, sigmoid confidence B x T x N, None)."""

    model_resolution = (HM, WM)

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3))
        self.mode = "shift"  # "shift": x += dx * t; "brightest": every point at frame t's brightest pixel
        self.dx = 3.0  # model pixels per frame
        self.fail_batched = False
        self.calls = []

    def forward(self, video, queries, iters=4, is_train=False, add_space_attn=True, fmaps_chunk_size=200):
        B, T, C, Hv, Wv = video.shape
        assert (C, Hv, Wv) == (3, HM, WM) and video.dtype == torch.float32
        assert float(video.max()) <= 255.0 and float(video.min()) >= 0.0
        self.calls.append(B)
        if self.fail_batched and B > 1:
            raise RuntimeError("some other failure of batched calls")
        N = queries.shape[1]
        assert (queries[:, :, 0] == 0).all()
        queried_coords = queries[..., 1:3]
        coords = queried_coords.reshape(B, 1, N, 2).expand(B, T, N, 2).float()
        coords_init = coords.view(B * T, N, 2)  # as upstream: fails for B > 1 (issue #163)
        out = coords_init.reshape(B, T, N, 2).clone()
        t = torch.arange(T, dtype=torch.float32)
        if self.mode == "shift":
            out[..., 0] += self.dx * t.view(1, T, 1)
        else:
            flat = video[:, :, 0].reshape(B, T, -1).argmax(-1)  # B, T
            col, row = (flat % WM).float(), (flat // WM).float()
            out[..., 0] = col[:, :, None]
            out[..., 1] = row[:, :, None]
        vis = ((torch.arange(N, dtype=torch.float32) + 0.5) / N).view(1, 1, N).expand(B, T, N)
        conf = torch.full((B, T, N), 0.7)
        return out, vis.contiguous(), conf, None


class FakePredictor(torch.nn.Module):
    def __init__(self, checkpoint="./checkpoints/scaled_offline.pth", offline=True, v2=False, window_len=60):
        super().__init__()
        self.model = FakeModel()
        self.interp_shape = self.model.model_resolution
        if checkpoint is not None:
            self.model.load_state_dict(torch.load(checkpoint, map_location="cpu"))


@pytest.fixture
def fake(monkeypatch):
    pkg = types.ModuleType("cotracker")
    pkg.__path__ = []
    mod = types.ModuleType("cotracker.predictor")
    mod.CoTrackerPredictor = FakePredictor
    pkg.predictor = mod
    monkeypatch.setitem(sys.modules, "cotracker", pkg)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", mod)
    return mod


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "scaled_offline.pth"
    sd = FakeModel().state_dict()
    sd["weight"] = torch.tensor([1.0, 2.0, 3.0])
    torch.save(sd, path)
    return path


def make(ckpt, **kw):
    kw.setdefault("device", "cpu")
    return ct.CoTrackerTracker(checkpoint=ckpt, **kw)


def dot_frames(paths, width=W, height=H, size=1):
    """uint8 [T, H, W, 3]: black frames with one white size x size block at (col, row) per frame."""
    out = np.zeros((len(paths), height, width, 3), dtype=np.uint8)
    for t, (c, r) in enumerate(paths):
        out[t, r : r + size, c : c + size] = 255
    return out


# -- conventions -------------------------------------------------------------------------------
def test_coordinate_conversion():
    size, msize = (W, H), (WM, HM)
    ours = np.array([[0.5, 0.5], [W - 0.5, H - 0.5], [10.5, 3.5]])
    model = ct.to_model_coords(ours, size, msize)
    # pixel centres sit at integers, corners of the pixel grid map onto each other
    np.testing.assert_allclose(model, [[0, 0], [WM - 1, HM - 1], [70, 3 * 383 / 47]], atol=1e-9)
    np.testing.assert_allclose(ct.from_model_coords(model, size, msize), ours, atol=1e-9)
    tt = torch.tensor(ours)
    torch.testing.assert_close(ct.to_model_coords(tt, size, msize), torch.tensor(model))


def test_tracks_and_queries_are_converted_both_ways(fake, ckpt):
    """A fake that moves every point by dx model pixels per frame along x only: the result must be
    the query plus dx * (W - 1) / 511 per frame along x, y untouched (no half-pixel error)."""
    tr = make(ckpt)
    T = 4
    q = grid_queries(4, W, H)
    res = tr.track(np.zeros((1, T, H, W, 3), np.uint8), q)
    assert res.tracks.shape == (1, T, 16, 2) and res.tracks.dtype == np.float32
    dx = 3.0 * (W - 1) / (WM - 1)
    expected = q[None] + np.stack([dx * np.arange(T), np.zeros(T)], -1)[:, None, :]
    np.testing.assert_allclose(res.tracks[0], expected, atol=1e-4)
    np.testing.assert_array_equal(res.tracks[0, 0], q)  # query frame: the query itself


def test_xy_order_and_half_pixel_on_non_square_frames(fake, ckpt):
    """The fake reports the brightest model pixel (its column as x, row as y); a white pixel at
    (col, row) must come back at its centre (col + 0.5, row + 0.5)."""
    tr = make(ckpt)
    tr.model.mode = "brightest"
    path = [(3, 2), (10, 7), (20, 40), (71, 11)]
    q = grid_queries(2, W, H)
    res = tr.track(dot_frames(path)[None], q)
    for t in range(1, len(path)):
        c, r = path[t]
        assert np.abs(res.tracks[0, t, :, 0] - (c + 0.5)).max() < 1e-4  # x: exact (7 model px per pixel)
        assert np.abs(res.tracks[0, t, :, 1] - (r + 0.5)).max() < 0.1  # y: within the resize's rounding


def test_run_with_track_size_maps_back(fake, ckpt):
    tr = make(ckpt)
    tr.model.mode = "brightest"
    path = [(5, 5), (30, 10), (60, 40)]  # in the small frames
    big = dot_frames([(2 * c, 2 * r) for c, r in path], 2 * W, 2 * H, size=2)
    q = grid_queries(3, 2 * W, 2 * H)
    res = tr.run(big[None], q, track_size=(W, H))
    np.testing.assert_allclose(res.tracks[0, 0], q, atol=1e-4)
    for t in range(1, len(path)):
        c, r = path[t]  # the 2 x 2 block's centre in the big frames is (2c + 1, 2r + 1)
        assert np.abs(res.tracks[0, t, :, 0] - (2 * c + 1)).max() < 1e-3
        assert np.abs(res.tracks[0, t, :, 1] - (2 * r + 1)).max() < 0.2


def test_grid_queries_row_major_xy(fake, ckpt):
    tr = make(ckpt)
    tr.model.dx = 0.0
    q = grid_queries(4, W, H)
    assert q[1, 0] > q[0, 0] and q[1, 1] == q[0, 1]  # x varies fastest
    np.testing.assert_allclose(q[:4, 0], (np.arange(4) + 0.5) * W / 4)
    np.testing.assert_allclose(q[::4, 1], (np.arange(4) + 0.5) * H / 4)
    res = tr.track(np.zeros((2, 3, H, W, 3), np.uint8), q)
    np.testing.assert_allclose(res.tracks, np.broadcast_to(q, res.tracks.shape), atol=1e-4)
    with pytest.raises(MosicError):
        grid_queries(W + 1, W, H)


# -- visibility --------------------------------------------------------------------------------
def test_visibility_threshold_and_confidence(fake, ckpt):
    # the fake's visibility probability of point n is (n + 0.5) / 16 on every frame
    q = grid_queries(4, W, H)
    frames = np.zeros((1, 3, H, W, 3), np.uint8)
    res = make(ckpt, visibility_threshold=0.5).track(frames, q)
    assert res.visibility.dtype == bool
    assert res.visibility[0, 0].all()  # the query frame is always visible
    assert res.visibility[0, 1:].sum(-1).tolist() == [8, 8] and res.visibility[0, 1:, 8:].all()
    # strictly greater: a probability equal to the threshold (8.5 / 16) is not visible
    res = make(ckpt, visibility_threshold=8.5 / 16).track(frames, q)
    assert res.visibility[0, 1:, 9:].all() and not res.visibility[0, 1:, :9].any()
    res = make(ckpt, visibility_threshold=0.9).track(frames, q)
    assert res.visibility[0, 1:].sum(-1).tolist() == [2, 2]
    assert res.confidence.dtype == np.float32
    np.testing.assert_allclose(res.confidence[0, 0], 1.0)
    np.testing.assert_allclose(res.confidence[0, 1:], 0.7)


# -- batching ----------------------------------------------------------------------------------
def three_clips():
    paths = [
        [(3, 2), (10, 7), (20, 40), (71, 11)],
        [(50, 5), (40, 9), (30, 13), (20, 17)],
        [(1, 46), (2, 30), (60, 1), (33, 33)],
    ]
    return np.stack([dot_frames(p) for p in paths])


def test_fake_reproduces_the_upstream_batch_bug():
    m = FakeModel()
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        m(torch.zeros(2, 2, 3, HM, WM), torch.zeros(2, 4, 3))
    assert cotracker_batch_fix.view_bug_present(m, "unknown")


def test_batch_of_three_equals_three_singles(fake, ckpt):
    frames, q = three_clips(), grid_queries(4, W, H)
    tr = make(ckpt, batch_size=3)
    tr.model.mode = "brightest"
    res = tr.track(frames, q)
    assert tr.model.calls == [3] and tr.view_fixes_used > 0 and tr._batched_ok
    single = make(ckpt, batch_size=1)
    single.model.mode = "brightest"
    ones = [single.track(frames[i : i + 1], q) for i in range(3)]
    assert single.model.calls == [1, 1, 1]
    np.testing.assert_array_equal(res.tracks, np.concatenate([r.tracks for r in ones]))
    np.testing.assert_array_equal(res.visibility, np.concatenate([r.visibility for r in ones]))
    np.testing.assert_array_equal(res.confidence, np.concatenate([r.confidence for r in ones]))
    assert not np.array_equal(res.tracks[0], res.tracks[1])  # the clips really differ


def test_sub_batches(fake, ckpt):
    tr = make(ckpt, batch_size=2)
    res = tr.track(np.zeros((5, 2, H, W, 3), np.uint8), grid_queries(2, W, H))
    assert tr.model.calls == [2, 2, 1] and res.tracks.shape == (5, 2, 4, 2)


@pytest.mark.parametrize("how", ["other-error", "fix-off"])
def test_falls_back_to_batch_one_and_warns_once(fake, ckpt, caplog, how):
    frames, q = three_clips(), grid_queries(4, W, H)
    tr = make(ckpt, batch_size=3)
    tr.model.mode = "brightest"
    if how == "other-error":
        tr.model.fail_batched = True
    else:
        tr.view_fix = False  # the upstream bug hits the batched call
    with caplog.at_level(logging.WARNING, logger="mosic.precompute.trackers.cotracker"):
        res = tr.track(frames, q)
        again = tr.track(frames, q)
    assert tr.model.calls == [3, 1, 1, 1, 1, 1, 1]  # one failed batched call, then singles only
    warnings = [r for r in caplog.records if "one clip at a time" in r.getMessage()]
    assert len(warnings) == 1
    ref = make(ckpt, batch_size=1)
    ref.model.mode = "brightest"
    np.testing.assert_array_equal(res.tracks, ref.track(frames, q).tracks)
    np.testing.assert_array_equal(again.tracks, res.tracks)


def test_view_fix_only_rewrites_the_failing_view():
    x = torch.arange(8.0).reshape(2, 1, 4).expand(2, 3, 4)
    with cotracker_batch_fix.view_fallback_mode() as mode:
        y = x.view(6, 4)
        z = torch.arange(6.0).view(2, 3)  # a working view stays a view
        assert z._base is not None
        with pytest.raises(RuntimeError, match="shape"):
            torch.zeros(6).view(4, 2)  # other view errors are not hidden
    assert mode.used == 1
    torch.testing.assert_close(y, x.reshape(6, 4))


# -- errors, identity ----------------------------------------------------------------------------
def test_missing_package_says_how_to_install(monkeypatch, ckpt):
    monkeypatch.setitem(sys.modules, "cotracker", None)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", None)
    with pytest.raises(MosicError) as e:
        ct.CoTrackerTracker(checkpoint=ckpt, device="cpu")
    msg = str(e.value)
    assert "pip install" in msg and "git+https://github.com/facebookresearch/co-tracker.git" in msg
    assert "pip install -e '.[cotracker]'" in msg


def test_missing_checkpoint_names_the_path(fake, tmp_path):
    missing = tmp_path / "nope" / "scaled_offline.pth"
    with pytest.raises(MosicError, match="checkpoint not found: .*nope/scaled_offline.pth"):
        make(missing)


def test_bad_checkpoint_file(fake, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MosicError, match="not a CoTracker-v3 offline checkpoint"):
        make(bad)


def test_no_checkpoint_and_no_hub_says_what_to_do(fake, monkeypatch):
    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load", offline)
    with pytest.raises(MosicError) as e:
        ct.CoTrackerTracker(checkpoint=None, device="cpu")
    msg = str(e.value)
    assert "torch.hub" in msg and "no network" in msg and "--checkpoint PATH" in msg
    assert ct.CHECKPOINT_URL in msg


def test_checkpoint_hash_version_params(fake, ckpt):
    tr = make(ckpt, visibility_threshold=0.8, precision="bf16")  # bf16 asked for on CPU -> fp32
    assert tr.checkpoint_hash() == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert tr.checkpoint_hash() is tr.checkpoint_hash()  # computed once
    assert tr.model.weight.tolist() == [1.0, 2.0, 3.0]  # the weights were loaded
    assert tr.version.startswith("cotracker3-offline/cotracker-")
    assert f"adapter-{ct.ADAPTER_REVISION}" in tr.version
    p = tr.params()
    assert p["visibility_threshold"] == 0.8 and p["precision"] == "fp32"
    assert "512x384" in p["model_input"] and p["support_grid"] is False


def test_factory_and_registry(fake, ckpt):
    assert "cotracker3" in TRACKERS
    s = TrackerSettings(name="cotracker3", checkpoint=str(ckpt), batch_size=3, device="cpu",
                        visibility_threshold=0.7)
    tr = create_tracker(s)
    assert isinstance(tr, ct.CoTrackerTracker) and tr.name == "cotracker3"
    assert tr.batch_size == 3 and tr.visibility_threshold == 0.7 and tr.device.type == "cpu"


# -- optional: the real package with random weights ---------------------------------------------
def test_real_cotracker_batch_equals_single(tmp_path):
    predictor_mod = pytest.importorskip("cotracker.predictor")
    torch.manual_seed(0)
    pred = predictor_mod.CoTrackerPredictor(checkpoint=None, offline=True, v2=False, window_len=60)
    path = tmp_path / "random.pth"
    torch.save(pred.model.state_dict(), path)
    tr = ct.CoTrackerTracker(checkpoint=path, batch_size=3, device="cpu")
    assert tr.view_fix  # the installed version has the issue-#163 line
    rng = np.random.default_rng(0)
    Wr, Hr = 64, 48
    frames = rng.integers(0, 256, (3, 4, Hr, Wr, 3), dtype=np.uint8)
    q = grid_queries(4, Wr, Hr)
    res = tr.track(frames, q)
    assert tr._batched_ok and tr.view_fixes_used > 0
    assert res.tracks.shape == (3, 4, 16, 2) and res.confidence.shape == (3, 4, 16)
    tr.batch_size = 1
    ones = [tr.track(frames[i : i + 1], q) for i in range(3)]
    np.testing.assert_allclose(res.tracks, np.concatenate([r.tracks for r in ones]), atol=1e-3)
    np.testing.assert_allclose(res.confidence, np.concatenate([r.confidence for r in ones]), atol=1e-5)
    # the adapter reproduces the stock predictor (without its support grid), in our convention
    if hasattr(pred, "_compute_sparse_tracks"):
        pred.model.load_state_dict(torch.load(path, map_location="cpu"))
        video = torch.from_numpy(frames[:1]).permute(0, 1, 4, 2, 3).float()
        qq = torch.zeros(1, len(q), 3)
        qq[0, :, 1:] = torch.from_numpy(q - 0.5)
        with torch.no_grad():
            t_ref, _ = pred._compute_sparse_tracks(video, qq, add_support_grid=False)
        np.testing.assert_allclose(t_ref[0].numpy() + 0.5, ones[0].tracks[0], atol=1e-3)
