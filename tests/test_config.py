import numpy as np
import pytest

from mosic import MosicError
from mosic.config import ClipSettings, load_pipeline, pipeline_names, with_overrides
from mosic.data.base import VideoInfo, plan_clips
from mosic.data.grid import grid_queries


def test_project_pipelines_load_and_validate():
    names = pipeline_names()
    assert {"synthetic", "synthetic-oracle", "ytvos", "ytvos-official", "davis", "videos"} <= set(names)
    for n in names:
        cfg = load_pipeline(n)
        assert cfg.name == n and cfg.tracker.grid in (16, 30) and cfg.clips.length == 12
    yt, official = load_pipeline("ytvos"), load_pipeline("ytvos-official")
    assert yt.tracker.name == "cotracker3" and yt.dataset.split == "train_all_frames" and yt.tracker.grid == 30
    # the two recipes track the same clips with the same tracker; the official one in fp32 (its own store)
    assert (yt.dataset, yt.clips) == (official.dataset, official.clips)
    assert yt.tracker.model_copy(update={"precision": "fp32"}) == official.tracker
    assert yt.train.batch_size == 64 and official.train.batch_size == 64
    assert load_pipeline("synthetic").tracker.name == "lk"


def test_overrides_and_errors(tmp_path):
    cfg = load_pipeline("synthetic", overrides={"tracker.grid": 8, "clips.track_size": (64, 48), "stores": None})
    assert cfg.tracker.grid == 8 and cfg.clips.track_size == (64, 48) and cfg.stores == "stores"
    assert with_overrides(cfg, {"clips.length": 4}).clips.length == 4
    with pytest.raises(MosicError, match="unknown pipeline 'nope'"):
        load_pipeline("nope")
    with pytest.raises(MosicError, match="grid"):
        load_pipeline("synthetic", overrides={"tracker.grid": 0})
    with pytest.raises(MosicError, match="not valid"):
        load_pipeline("synthetic", overrides={"tracker.gird": 3})
    bad = tmp_path / "p.yaml"
    bad.write_text("pipelines: [1, 2\n")
    with pytest.raises(MosicError, match="not valid YAML"):
        load_pipeline("x", bad)
    with pytest.raises(MosicError, match="not found"):
        load_pipeline("x", tmp_path / "missing.yaml")


def test_plan_clips_hand_made():
    vids = [VideoInfo("long", 40, 32, 24), VideoInfo("short", 20, 32, 24), VideoInfo("tiny", 3, 32, 24)]
    clips, fails = plan_clips(vids, ClipSettings(length=4, step=6, stride=None))
    # long: span 19 frames -> one clip from 0; short (20 >= 19): fits; tiny: < T frames -> failure
    assert [(c.video_id, c.frames) for c in clips] == [("long", (0, 6, 12, 18)), ("short", (0, 6, 12, 18))]
    assert [f.video_id for f in fails] == ["tiny"] and "too short" in fails[0].reason
    # adapt: a 10-frame video with step 6 takes step 10 // 4 = 2 (the official recipe)
    clips, _ = plan_clips([VideoInfo("v", 10, 8, 8)], ClipSettings(length=4, step=6, stride=None))
    assert clips[0].frames == (0, 2, 4, 6)
    clips, fails = plan_clips([VideoInfo("v", 10, 8, 8)], ClipSettings(length=4, step=6, short_videos="skip", stride=None))
    assert clips == [] and "skip" in fails[0].reason
    # several clips per video: starts spread evenly over the video
    clips, _ = plan_clips([VideoInfo("v", 40, 8, 8)], ClipSettings(length=4, step=2, clips_per_video=3, stride=None))
    assert [c.frames[0] for c in clips] == [0, 16, 33] and clips[-1].frames[-1] == 39
    clips, _ = plan_clips([VideoInfo("v", 20, 8, 8)], ClipSettings(length=4, step=2, stride=5))
    assert [c.frames[0] for c in clips] == [0, 5, 10]


def test_grid_queries_are_cell_centres_row_major_xy():
    q = grid_queries(2, 40, 20)
    np.testing.assert_allclose(q, [[10, 5], [30, 5], [10, 15], [30, 15]])
    q = grid_queries(16, 320, 240)
    assert q.shape == (256, 2) and q.dtype == np.float32
    assert q[:, 0].min() == 10 and q[:, 0].max() == 310 and q[:, 1].max() == 232.5
    with pytest.raises(MosicError, match="larger than the image"):
        grid_queries(32, 64, 24)


def test_pipelines_file_precedence(tmp_path, monkeypatch):
    from mosic.config import describe_pipelines, find_pipelines_file, packaged_pipelines_file

    packaged = packaged_pipelines_file()
    assert packaged.is_file() and "synthetic" in packaged.read_text()
    monkeypatch.delenv("MOSIC_PIPELINES", raising=False)
    monkeypatch.chdir(tmp_path)  # no pipelines.yaml here: the packaged defaults are used
    assert find_pipelines_file() == packaged
    own = tmp_path / "pipelines.yaml"
    own.write_text("pipelines:\n  mine: {dataset: {kind: synthetic, root: here}}\n")
    assert find_pipelines_file() == own  # the working folder's file wins over the packaged one
    assert "pipelines file: " + str(own) in describe_pipelines() and "mine" in describe_pipelines()
    env = tmp_path / "env.yaml"
    env.write_text(own.read_text())
    monkeypatch.setenv("MOSIC_PIPELINES", str(env))
    assert find_pipelines_file() == env
    assert find_pipelines_file(packaged) == packaged  # --config wins over everything
    monkeypatch.setenv("MOSIC_PIPELINES", str(tmp_path / "missing.yaml"))
    with pytest.raises(MosicError, match="MOSIC_PIPELINES names a file that does not exist"):
        find_pipelines_file()


def test_plan_clips_counts_raw_frames():
    """Steps and strides count raw frames: a set that keeps every 5th raw frame (YouTube-VOS
    'train': 00000, 00005, ...) gives clips at the nearest stored frames of the same raw spacing
    as the full 30 fps set, not every 6th FILE (30 raw frames)."""
    full = VideoInfo("v", 100, 8, 8)  # raw frames 0..99, all stored
    sub = VideoInfo("v", 20, 8, 8, frame_numbers=tuple(range(0, 100, 5)))  # every 5th raw frame
    cs = ClipSettings(length=4, step=6, stride=30)
    clips, fails = plan_clips([full], cs)
    assert not fails and [c.frames for c in clips] == [(0, 6, 12, 18), (30, 36, 42, 48), (60, 66, 72, 78)]
    clips, fails = plan_clips([sub], cs)
    # raw 0, 6, 12, 18 -> stored raw 0, 5, 10, 20 (indices 0, 1, 2, 4); starts every 30 raw frames
    assert not fails and [c.frames for c in clips] == [(0, 1, 2, 4), (6, 7, 8, 10), (12, 13, 14, 16)]
    # a stride finer than the stored spacing: starts that round to the same clip count once
    clips, _ = plan_clips([sub], ClipSettings(length=4, step=6, stride=1))
    assert len(clips) == len({c.frames for c in clips}) and clips[0].frames == (0, 1, 2, 4)
    # a step finer than the stored spacing would repeat frames: a failure that says why
    clips, fails = plan_clips([sub], ClipSettings(length=4, step=2, stride=None))
    assert clips == [] and "finer than the frames on disk (every 5 raw frames)" in fails[0].reason
    # short videos adapt in raw frames: 20 stored frames spanning 96 raw frames, T = 12 at step 10
    # needs 111 -> step 96 // 12 = 8 raw frames: raw 0, 8, 16, ... 88 -> stored 0, 10, 15, 25, ...
    clips, _ = plan_clips([sub], ClipSettings(length=12, step=10, stride=None))
    assert clips[0].frames == (0, 2, 3, 5, 6, 8, 10, 11, 13, 14, 16, 18)
    # the same clips as before for sets that store every raw frame (synthetic, DAVIS, videos)
    consecutive = VideoInfo("v", 40, 8, 8, frame_numbers=tuple(range(40)))
    a, _ = plan_clips([consecutive], ClipSettings(length=4, step=2, clips_per_video=3, stride=None))
    b, _ = plan_clips([VideoInfo("v", 40, 8, 8)], ClipSettings(length=4, step=2, clips_per_video=3, stride=None))
    assert a == b and [c.frames[0] for c in a] == [0, 16, 33]


def test_plan_clips_warns_once_about_coarse_frames(caplog):
    subs = [VideoInfo(f"v{i}", 20, 8, 8, frame_numbers=tuple(range(0, 100, 5))) for i in range(3)]
    with caplog.at_level("WARNING", logger="mosic.data"):
        plan_clips(subs, ClipSettings(length=4, step=6, stride=None))
    warn = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warn) == 1 and "3 of 3 videos store only every 5-th raw frame" in warn[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="mosic.data"):
        plan_clips([VideoInfo("v", 40, 8, 8)], ClipSettings(length=4, step=6, stride=None))
    assert not caplog.records


def test_the_two_youtube_vos_recipes():
    """ytvos = the paper's text; ytvos-official = the published train.sh as it runs."""

    paper = load_pipeline("ytvos").train
    official = load_pipeline("ytvos-official").train
    assert (paper.loss.teacher_sampling, paper.mask_ratio, paper.flip_p) == ("bilinear", 0.1, 0.5)
    assert (paper.loss.marginals, paper.loss.normalize, paper.export) == ("visible", "visible", "teacher")
    assert (official.loss.teacher_sampling, official.mask_ratio, official.flip_p) == ("nearest", 0.0, 0.0)
    assert (official.loss.marginals, official.loss.normalize, official.export) == ("all", "all", "student")
    assert official.precision == "fp32" and paper.precision == "auto"
    for ts in (paper, official):
        # grid "patch": one trajectory per patch, 16 x 16 for ViT-S/14 at 224 px
        assert (ts.batch_size, ts.epochs, ts.grid, ts.clip_sampling) == (64, 8, "patch", "per_video")
        assert ts.model.img_size // 14 == 16
        assert ts.loss.student_sampling == "nearest" and ts.model.num_prototypes == 100


def test_the_official_recipe_s_remaining_details():
    """ytvos-official: the official normalisation std, fp32 tracks in a store of its own; both
    recipes: CoTracker's grid on the crop, the last partial batch kept; ytvos holds videos out."""
    from mosic.train.stores import store_requirements

    yt, off = load_pipeline("ytvos"), load_pipeline("ytvos-official")
    paper, official = yt.train, off.train
    assert official.std == (0.228, 0.224, 0.225) and paper.std is None  # the backbone's own (DINOv2: ImageNet's)
    assert off.tracker.precision == "fp32" and yt.tracker.precision == "auto"
    assert store_requirements(off)["tracker.params.precision"] == "fp32"
    assert "tracker.params.precision" not in store_requirements(yt)
    assert "tracker.params.precision" not in store_requirements(load_pipeline("synthetic", overrides={
        "tracker.precision": "fp32"}))  # lk records no precision
    for ts in (paper, official):
        assert ts.grid_layout == "cotracker" and ts.drop_last is False
    assert (paper.holdout, official.holdout) == (0.05, 0.0)
