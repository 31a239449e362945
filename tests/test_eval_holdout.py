"""YouTube-VOS split 'heldout' scores the videos that the evaluated run left out of training: the
fraction comes from the run's config.json (train.holdout), else from --holdout, else from the
packaged ytvos pipeline; the fraction used is printed with the figures and kept in OUT.json."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mosic.config import load_pipeline, packaged_pipelines_file
from mosic.data.holdout import heldout_rank, ytvos_holdout
from mosic.evaluation.cli import app
from mosic.evaluation.results import load_results

TINY = {"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1}
runner = CliRunner()


def _first_id(low: float, high: float) -> str:
    return next(v for v in (f"vid{i:04d}" for i in range(10_000)) if low <= heldout_rank(v) < high)


@pytest.fixture(scope="module")
def ytvos(tmp_path_factory):
    """A YouTube-VOS train split of three videos: one in the 5% held out, one more in the 20%, one
    in neither."""
    root = tmp_path_factory.mktemp("ytvos")
    vids = [_first_id(0, 0.05), _first_id(0.05, 0.2), _first_id(0.2, 1)]
    rng = np.random.default_rng(0)
    for v in vids:
        for t in range(0, 30, 10):
            (root / "train/JPEGImages" / v).mkdir(parents=True, exist_ok=True)
            (root / "train/Annotations" / v).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(root / f"train/JPEGImages/{v}/{t:05d}.jpg")
            lab = np.zeros((48, 64), np.uint8)
            lab[:16] = 1
            Image.fromarray(lab, mode="L").save(root / f"train/Annotations/{v}/{t:05d}.png")
    meta = {"videos": {v: {"objects": {"1": {"category": "dog", "frames": []}}} for v in vids}}
    (root / "train/meta.json").write_text(json.dumps(meta))
    return root, vids


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A mosic-train run folder whose training held out 20% of the videos."""
    import torch

    from mosic.backbones import create_backbone

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    net = create_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=56, **TINY)
    torch.save(net.state_dict(), run / "backbone.pth")
    train = {"model": {"name": "vit_small_patch14_dinov2", "kwargs": TINY, "img_size": 56}, "holdout": 0.2}
    (run / "config.json").write_text(json.dumps({"train": train}))
    return run


def _eval(ytvos_root, out, *args):
    return runner.invoke(app, [str(a) for a in [
        "run", "--protocols", "video", "--video-dataset", "ytvos", "--video-root", ytvos_root, "--video-frames", 2,
        "--quick", "--img-size", 56, "--out", out, *args]])


def test_the_default_fraction_is_the_packaged_ytvos_pipelines():
    assert ytvos_holdout() == load_pipeline("ytvos", packaged_pipelines_file()).train.holdout == 0.05


def test_a_run_that_held_out_20_percent_is_scored_on_its_20_percent(ytvos, run_dir, tmp_path):
    root, vids = ytvos
    out = tmp_path / "res"
    r = _eval(root, out, "--run", run_dir)
    assert r.exit_code == 0, r.output
    assert (f"ytvos split 'heldout': the 20% of train's videos left out of training (holdout 0.2, from "
            f"train.holdout of {run_dir / 'config.json'})") in r.output
    row = load_results(out.with_suffix(".json"))[0]
    data = row["settings"]["ytvos/video frame"]["data"]
    assert data["holdout"] == 0.2 and data["val"]["split"] == "heldout"
    assert data["val"]["items"] == 2  # the videos ranked below 0.2, not the third
    assert row["details"]["ytvos/video frame"]["clips"] == 2
    # --holdout may repeat the run's fraction, not contradict it
    assert _eval(root, out, "--run", run_dir, "--holdout", 0.2).exit_code == 0
    r = _eval(root, out, "--run", run_dir, "--holdout", 0.05)
    assert r.exit_code == 2 and "the run trained with holdout 0.2" in r.output


def test_without_a_run_the_pipeline_default_is_used_and_printed(ytvos, tmp_path):
    root, vids = ytvos
    out = tmp_path / "res"
    r = _eval(root, out, "--model", "vit_small_patch14_dinov2", "--no-pretrained", "--model-kwargs", json.dumps(TINY))
    assert r.exit_code == 0, r.output
    assert ("ytvos split 'heldout': the 5% of train's videos left out of training (holdout 0.05, from the ytvos "
            "pipeline's train.holdout") in r.output
    data = load_results(out.with_suffix(".json"))[0]["settings"]["ytvos/video frame"]["data"]
    assert data["holdout"] == 0.05 and data["val"]["items"] == 1
    # an explicit fraction without a run
    r = _eval(root, out, "--model", "vit_small_patch14_dinov2", "--no-pretrained", "--model-kwargs", json.dumps(TINY),
              "--holdout", 0.2)
    assert r.exit_code == 0, r.output
    assert "(holdout 0.2, from --holdout)" in r.output
    assert load_results(out.with_suffix(".json"))[0]["settings"]["ytvos/video frame"]["data"]["val"]["items"] == 2
