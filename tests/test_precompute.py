"""End to end: synthetic data -> precompute (lk, oracle) -> store -> inspect / show / score."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from mosic.config import load_pipeline
from mosic.precompute.cli import app as precompute_app
from mosic.precompute.runner import precompute
from mosic.store_schema import StoreReader
from mosic.store_schema.cli import app as store_app

runner = CliRunner()


def cfg_for(root, stores, **over):
    o = {"dataset.root": str(root), "stores": str(stores), "tracker.grid": 6, "clips.length": 6,
         "clips.step": 2, "clips.clips_per_video": 2, "store.clips_per_chunk": 2}
    o.update(over)
    return load_pipeline("synthetic", overrides=o)


def copy_set(synth, tmp_path):
    root = tmp_path / "synthetic"
    shutil.copytree(synth, root)
    return root


def test_oracle_store_scores_100(synth, tmp_path):
    res = precompute(cfg_for(synth, tmp_path, **{"tracker.name": "oracle"}), progress=False)
    assert res.complete and res.done == res.clips == 6 and not res.failures
    assert "oracle" in res.store.name
    r = StoreReader(res.store, require={"grid": 6, "clips.length": 6, "tracker.name": "oracle"})
    assert r[0].tracks.shape == (6, 36, 2)
    out = runner.invoke(store_app, ["score", str(res.store), "--json"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)
    assert s["delta_avg"] == pytest.approx(100) and s["average_jaccard"] == pytest.approx(100)
    assert s["occlusion_accuracy"] == pytest.approx(100)


def test_lk_store_tracks_and_is_reused(synth, tmp_path):
    cfg = cfg_for(synth, tmp_path)
    res = precompute(cfg, progress=False)
    assert res.complete and res.written_now == 6
    r = StoreReader(res.store)
    from mosic.precompute.scoring import score_store
    from mosic.store_schema.reader import open_frame_source

    s = score_store(r, open_frame_source(r))
    assert s["delta_avg"] > 50, s  # LK is a real tracker on textured synthetic scenes
    again = precompute(cfg, progress=False)  # same spec -> same store, nothing left to do
    assert again.store == res.store and again.written_now == 0 and again.complete


def test_interrupted_run_resumes_to_identical_store(synth, tmp_path):
    cfg = cfg_for(synth, tmp_path / "a")

    def stop_after_first_chunk(a, b):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        precompute(cfg, progress=False, on_chunk=stop_after_first_chunk)
    path = next((tmp_path / "a").glob("*.zarr"))
    half = StoreReader(path, allow_incomplete=True)
    assert not half.meta.complete and list(half.done) == [0, 1]
    res = precompute(cfg, progress=False)
    assert res.complete and res.written_now == 4
    ref = precompute(cfg_for(synth, tmp_path / "b"), progress=False)
    r1, r2 = StoreReader(res.store), StoreReader(ref.store)
    for i in range(len(r1)):
        np.testing.assert_array_equal(r1[i].tracks, r2[i].tracks)
        np.testing.assert_array_equal(r1[i].visibility, r2[i].visibility)


def test_corrupt_frame_is_recorded_and_run_goes_on(synth, tmp_path):
    root = copy_set(synth, tmp_path)
    vids = sorted(p.name for p in (root / "train/JPEGImages").iterdir())
    bad = root / "train/JPEGImages" / vids[1] / "00002.jpg"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[:200])  # truncated JPEG
    args = ["--root", str(root), "--stores", str(tmp_path / "stores"), "--grid", "6", "-T", "6",
            "--step", "2", "--clips-per-video", "2", "--clips-per-chunk", "2", "--no-progress"]
    out = runner.invoke(precompute_app, args)
    assert out.exit_code == 1, out.output
    assert vids[1] in out.output and "frame 2" in out.output
    store = next((tmp_path / "stores").glob("*.zarr"))
    r = StoreReader(store)  # complete: every clip has an outcome
    assert r.meta.complete and len(r.done) == 5  # only the clip holding frame 2 fails
    info = runner.invoke(store_app, ["inspect", str(store)])
    assert info.exit_code == 0 and "failures   1" in info.output and vids[1] in info.output
    # fix the file; a re-run retries just that clip
    bad.write_bytes(good_bytes)
    out = runner.invoke(precompute_app, args)
    assert out.exit_code == 0, out.output
    assert "1 written now" in out.output
    assert len(StoreReader(store).done) == 6


def test_bad_inputs_give_clear_errors(synth, tmp_path):
    base = ["--stores", str(tmp_path / "stores"), "--no-progress"]
    out = runner.invoke(precompute_app, ["--root", str(tmp_path / "missing"), *base])
    assert out.exit_code == 2 and "missing" in out.output
    # grid larger than the image: every video fails -> a clear error, no store
    out = runner.invoke(precompute_app, ["--root", str(synth), "--grid", "80", *base])
    assert out.exit_code == 2 and "larger than" in out.output
    assert not (tmp_path / "stores").exists() or not list((tmp_path / "stores").glob("*.zarr"))
    # clips longer than any video
    out = runner.invoke(precompute_app, ["--root", str(synth), "-T", "200", *base])
    assert out.exit_code == 2 and "too short" in out.output
    # a store at the same path with another spec
    p = tmp_path / "one.zarr"
    ok = runner.invoke(precompute_app, ["--root", str(synth), "--grid", "4", "-T", "4", "--store", str(p), *base])
    assert ok.exit_code == 0, ok.output
    out = runner.invoke(precompute_app, ["--root", str(synth), "--grid", "5", "-T", "4", "--store", str(p), *base])
    assert out.exit_code == 2 and "another spec" in out.output and "grid" in out.output


def test_track_size_maps_back_to_source_pixels(synth, tmp_path):
    full = precompute(cfg_for(synth, tmp_path, **{"tracker.name": "oracle"}), progress=False)
    small = precompute(cfg_for(synth, tmp_path, **{"clips.track_size": (48, 36)}), progress=False)
    assert full.store != small.store and "48x36" in small.store.name
    a, b = StoreReader(full.store), StoreReader(small.store)
    # tracks are in source pixels: frame 0 equals the (source-pixel) grid, not a 48x36 one
    np.testing.assert_allclose(b[0].tracks[0], a[0].tracks[0], atol=1.0)


def test_show_draws_png_gif_mp4(synth, tmp_path):
    res = precompute(cfg_for(synth, tmp_path, **{"tracker.name": "oracle"}), progress=False)
    for ext in ("png", "gif", "mp4"):
        out = runner.invoke(store_app, ["show", str(res.store), "--clip", "1", "--out", str(tmp_path / f"c.{ext}")])
        assert out.exit_code == 0, out.output
        assert (tmp_path / f"c.{ext}").stat().st_size > 1000
    from PIL import Image

    im = np.asarray(Image.open(tmp_path / "c.png"))
    assert im.shape[0] == 2 * 72 and im.shape[1] == 4 * 96  # 6 frames in a 4-column montage
    out = runner.invoke(store_app, ["show", str(res.store), "--out", str(tmp_path / "c.bmp")])
    assert out.exit_code == 2 and ".png, .gif or .mp4" in out.output
