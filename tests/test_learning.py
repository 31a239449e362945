"""Control tracks (static, x/y-swapped), the motion measures of the synthetic probe, and whether
training on the exact tracks beats the controls."""

import numpy as np
import pytest

from mosic import MosicError
from mosic.evaluation.synthetic_probe import follow_scores
from mosic.store_schema.controls import control_tracks, write_control_store


def test_static_tracks_repeat_the_first_frame():
    tr = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]], [[9.0, 1.0], [2.0, 3.0]]], np.float32)
    out = control_tracks(tr, "static", 10, 10)
    assert out.shape == tr.shape
    np.testing.assert_array_equal(out, np.stack([tr[0]] * 3))
    batched = control_tracks(np.stack([tr, tr + 1]), "static", 10, 10)  # [B, T, N, 2]
    np.testing.assert_array_equal(batched[1], np.stack([tr[0] + 1] * 3))


def test_swapped_tracks_transpose_in_normalised_coordinates():
    tr = np.array([[[40.0, 30.0], [0.0, 60.0]]], np.float32)  # T=1, N=2 on a 80 x 60 frame
    out = control_tracks(tr, "swapped", 80, 60)
    # (x, y) -> (y * W / H, x * H / W): (40, 30) -> (40, 30); (0, 60) -> (80, 0)
    np.testing.assert_allclose(out, [[[40.0, 30.0], [80.0, 0.0]]])
    sq = control_tracks(np.array([[[3.0, 7.0]]]), "swapped", 10, 10)
    np.testing.assert_allclose(sq, [[[7.0, 3.0]]])
    with pytest.raises(MosicError, match="unknown track control"):
        control_tracks(tr, "mirror", 80, 60)


def test_follow_scores_counts_track_and_location_agreement():
    # 2 frames, 2 x 2 patches; cluster 1 moves from patch (col 0, row 0) to (col 1, row 0)
    c = np.zeros((2, 2, 2), int)
    c[0, 0, 0] = 1
    c[1, 0, 1] = 1
    cells = np.array([[[0, 0], [1, 1], [0, 1]], [[1, 0], [1, 1], [0, 1]]])  # point 0 follows it
    vis = np.ones((2, 3), bool)
    s = follow_scores(c, cells, vis)
    assert s == {"pairs": 3, "track": 3, "moved": 1, "track_moved": 1, "location_moved": 0}
    # a point that stays put: its location baseline is the track itself
    s = follow_scores(c, np.array([[[0, 0]], [[0, 0]]]), np.ones((2, 1), bool))
    assert s == {"pairs": 1, "track": 0, "moved": 0, "track_moved": 0, "location_moved": 0}
    # invisible at frame 1: no pair
    s = follow_scores(c, cells, np.array([[True, True, True], [False, True, True]]))
    assert s["pairs"] == 2 and s["moved"] == 0


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory):
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute

    base = tmp_path_factory.mktemp("controls")
    root = base / "synthetic"
    generate(root, videos=3, seed=1, num_frames=24, width=96, height=72)
    cfg = load_pipeline("synthetic-oracle", overrides={
        "dataset.root": str(root), "stores": str(base / "stores"), "tracker.grid": 4, "clips.length": 4,
        "clips.step": 2, "clips.clips_per_video": 2, "clips.short_videos": "adapt", "clips.track_size": None,
        "store.clips_per_chunk": 4})
    return base, precompute(cfg, progress=False).store


def test_control_store_copies_every_clip_with_changed_positions(oracle_store):
    from mosic.store_schema.reader import StoreReader

    base, src = oracle_store
    orig = StoreReader(src)
    for control in ("static", "swapped"):
        path = write_control_store(src, control, base / "stores")
        r = StoreReader(path, require={"tracker.name": f"oracle+{control}", "tracker.params.control": control})
        assert path != src and r.meta.complete and r.clips == orig.clips
        assert list(r.done) == list(orig.done)
        for i in orig.done:
            a, b = orig[i], r[i]
            np.testing.assert_array_equal(a.visibility, b.visibility)
            want = control_tracks(a.tracks, control, a.clip.width, a.clip.height)
            np.testing.assert_allclose(b.tracks, want, atol=1 / 64)
        assert write_control_store(src, control, base / "stores") == path  # reused
        with pytest.raises(MosicError, match="already a control"):
            write_control_store(path, "static", base / "stores")
