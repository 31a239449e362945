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


TINY = {
    "train.model.name": "vit_small_patch14_dinov2", "train.model.pretrained": False, "train.model.weights": None,
    "train.model.img_size": 112,
    "train.model.kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1},
    "train.model.train_blocks": 2, "train.model.head_hidden": [64], "train.model.head_dim": 32,
    "train.model.num_prototypes": 8,
    "train.loss.temperature": 0.1, "train.loss.sinkhorn_eps": 0.06, "train.loss.sinkhorn_iters": 3,
    "train.loss.hard": True, "train.loss.symmetric": False, "train.loss.normalize": "visible",
    "train.loss.marginals": "visible", "train.loss.teacher_sampling": "bilinear",
    "train.loss.student_sampling": "nearest",
    "train.optim.lr_backbone": 3e-4, "train.optim.lr_head": 1e-3, "train.optim.weight_decay": 0.01,
    "train.optim.warmup_steps": 0, "train.optim.min_lr_ratio": 0.0, "train.optim.clip_grad": 0.0,
    "train.batch_size": 4, "train.epochs": 100, "train.max_steps": 80, "train.mask_ratio": 0.1, "train.ema": 0.99,
    "train.crop_scale": [0.4, 1.0], "train.flip_p": 0.5, "train.num_workers": 0, "train.device": "cpu",
    "train.precision": "fp32", "train.checkpoint_every": 80, "train.log_every": 1,
    # every stored clip in every epoch, every stored point inside the crop (the 8 x 8 store is
    # sparser than a per-crop 8 x 8 selection needs)
    "train.clip_sampling": "all", "train.grid": 8,
    "train.validate.every": 0,  # no held-out split here (tests/test_validate.py covers it)
}


@pytest.fixture(scope="module")
def motion_stores(tmp_path_factory):
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute

    base = tmp_path_factory.mktemp("motion")
    root = base / "synthetic"
    generate(root, videos=8, seed=3, num_frames=48, width=160, height=120)
    generate(root, videos=8, seed=3, num_frames=48, width=160, height=120, split="valid")
    clips = {"dataset.root": str(root), "dataset.split": "train", "stores": str(base / "stores"), "tracker.grid": 8,
             "clips.length": 4, "clips.step": 12, "clips.clips_per_video": 1, "clips.short_videos": "adapt",
             "clips.track_size": None}
    src = precompute(load_pipeline("synthetic-oracle", overrides=clips), progress=False).store
    held_out = precompute(load_pipeline("synthetic-oracle", overrides={**clips, "dataset.split": "valid"}),
                          progress=False).store
    stores = {"oracle": src}
    for c in ("static", "swapped"):
        stores[f"oracle+{c}"] = write_control_store(src, c, base / "stores")
    return base, clips, stores, held_out


def test_training_on_the_true_tracks_beats_static_and_swapped_tracks(motion_stores):
    """Training on the exact tracks against static tracks (no motion) and x/y-swapped tracks (the
    transposed positions), same model, data, crops and seeds (80 steps of a 2-block ViT, 3 seeds):

    - per seed, the MoSiC loss (second half of the run) is lower on the exact tracks: along a true
      track the teacher sees the object point the student saw, so its cluster is predictable; at
      a static or transposed position it is often something else;
    - on held-out videos with the exact tracks, the trained model's first-frame cluster names the
      teacher's cluster where the point went, rather than where it was, more often (the
      ``prediction_margin`` of :func:`track_prediction`, mean over the seeds).

    Both fail if the data path or the sampler mixes up x and y (training on the true store then
    uses the swapped positions, and the other way round) or if the motion is dropped. This is what
    the tracks teach the model; it is not a claim that the backbone's features got better (see the
    docs/does-it-learn.md)."""
    import json

    import torch

    from mosic.config import load_pipeline
    from mosic.train.probe import track_prediction
    from mosic.backbones import create_backbone
    from mosic.train.model import MoSiCModel
    from mosic.train.train import train

    base, clips, stores, held_out = motion_stores
    margins = {t: [] for t in stores}
    for seed in (0, 1, 2):
        loss = {}
        for tracker, path in stores.items():
            cfg = load_pipeline("synthetic-oracle", overrides={**clips, **TINY, "tracker.name": tracker,
                                                               "train.store": str(path), "train.seed": seed})
            ts = cfg.train
            out = base / f"{tracker}-{seed}"
            train(cfg, ts, out, progress=False)
            lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
            loss[tracker] = float(np.mean([x["loss"] for x in lines[len(lines) // 2:]]))
            m = ts.model
            ck = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
            nets = []
            for key in ("student", "teacher"):
                net = MoSiCModel(create_backbone(m.name, pretrained=False, img_size=m.img_size, **m.kwargs),
                                 m.num_prototypes, m.head_hidden, m.head_dim, m.train_blocks)
                net.load_state_dict(ck[key])
                nets.append(net)
            margins[tracker].append(track_prediction(*nets, held_out, m.img_size)["prediction_margin"])
        assert loss["oracle"] < loss["oracle+static"] and loss["oracle"] < loss["oracle+swapped"], (seed, loss)
    mean = {t: float(np.mean(v)) for t, v in margins.items()}
    assert mean["oracle"] > mean["oracle+static"] and mean["oracle"] > mean["oracle+swapped"], margins


def test_the_learning_control_runs_on_any_pipeline_and_store(motion_stores, tmp_path):
    """bench/bench_learning.py --pipeline: the three-way comparison through a pipeline's recipe and
    an explicit store, its controls written from that store, each run measured by the in-training
    validation; here at tiny size on the synthetic set (the path a GPU run takes with ytvos)."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_learning", Path(__file__).parents[1] / "bench" / "bench_learning.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    base, clips, stores, _ = motion_stores
    over = {**clips, **TINY, "train.max_steps": None, "train.validate.max_images": 8}
    sets = [x for k, v in over.items() if v is not None for x in ("--set", f"{k}={json.dumps(v)}")]
    out = tmp_path / "learning.json"
    bench.main(["--pipeline", "synthetic-oracle", "--store", str(stores["oracle"]), "--steps", "4", "--seeds", "1",
                "--validate-every", "2", "--work", str(tmp_path / "work"), "--out", str(out), *sets])
    res = json.loads(out.read_text())
    assert [(r["variant"], r["steps"]) for r in res["runs"]] == [("tracks", 4), ("static", 4), ("swapped", 4)]
    for r in res["runs"]:
        assert [s for s, _ in r["val_clustering_curve"]] == [0, 2, 4]
        assert 0 <= r["val_clustering"] <= 100 and np.isfinite(r["train_loss"])
        assert r["val_clustering_gain"] == pytest.approx(r["val_clustering"] - r["val_clustering_curve"][0][1])
    # the three runs start from the same backbone: the same step-0 validation
    assert len({r["val_clustering_curve"][0][1] for r in res["runs"]}) == 1
    assert {"tracks_minus_static", "tracks_minus_swapped"} <= set(res["summary"]["val_clustering"])
    # the controls are the ones written from the given store
    cfgs = [json.loads((tmp_path / "work" / f"{v}-seed0" / "config.json").read_text())["store"]
            for v in ("tracks", "static", "swapped")]
    assert cfgs == [str(stores[t]) for t in ("oracle", "oracle+static", "oracle+swapped")]
