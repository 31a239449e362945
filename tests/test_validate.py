"""In-training validation (train/validate.py): the teacher scored on a held-out split at step 0,
every N steps and at the end; log.jsonl rows, the plot, a resumed run's curve, clear errors."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mosic import MosicError
from mosic.config import load_pipeline
from mosic.train.train import train
from mosic.train.validate import plot_curve, read_curve

from conftest import SMALL_CLIPS, free_port, small_oracle_store

TINY = {
    "train.model.img_size": 56,
    "train.model.kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1},
    "train.model.train_blocks": 1, "train.model.head_hidden": [32], "train.model.head_dim": 16,
    "train.model.num_prototypes": 8, "train.batch_size": 2, "train.num_workers": 0, "train.max_steps": 4,
    "train.checkpoint_every": 2, "train.log_every": 1, "train.optim.warmup_steps": 0, "train.grid": 2,
    "train.validate.every": 2, "train.validate.max_images": 12,
}
CLIPS = SMALL_CLIPS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cfg, store = small_oracle_store(tmp_path_factory.mktemp("validate"), valid_videos=2)
    return cfg.model_copy(update={"train": {"store": str(store)}})


def settings(cfg, **over):
    c = load_pipeline("synthetic-oracle", overrides={"dataset.root": cfg.dataset.root, "stores": cfg.stores, **CLIPS,
                                                     "train.store": cfg.train["store"],
                                                     **TINY, **{f"train.{k}": v for k, v in over.items()}})
    return c, c.train


def test_validation_rows_plot_and_a_resumed_curve(store, tmp_path):
    c, ts = settings(store)
    assert ts.validate_.every == 2 and ts.validate_.dataset == "synthetic" and ts.validate_.network == "teacher"
    full = tmp_path / "full"
    train(c, ts, full, progress=False)
    rows = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("kind") == "validation"]
    assert [r["step"] for r in val] == [0, 2, 4]  # the initial backbone, every 2 steps, the end
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # training rows unchanged
    for r in val:
        assert 0 <= r["val_clustering"] <= 100 and r["val_seconds"] > 0
        assert r["data"] == "synthetic/valid" and r["images"] == 12 and r["network"] == "teacher"
    assert (full / "validation.png").stat().st_size > 1000
    # stopped after the step-2 checkpoint (its log up to there), resumed: the same curve, one plot
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints/step_0000002.pt", part / "checkpoints/latest.pt")
    keep = [x for x in (full / "log.jsonl").read_text().splitlines() if json.loads(x)["step"] <= 2]
    (part / "log.jsonl").write_text("\n".join(keep) + "\n")
    train(c, ts, part, resume=True, progress=False)
    curve = read_curve(part / "log.jsonl")
    assert [r["step"] for r in curve] == [0, 2, 4]
    assert [r["val_clustering"] for r in curve] == pytest.approx([r["val_clustering"] for r in val])
    assert (part / "validation.png").is_file()


def test_student_network_and_incontext(store, tmp_path):
    c, ts = settings(store, **{"validate.network": "student", "validate.protocols": ["clustering", "incontext"],
                               "validate.every": 4, "validate.memory_images": 8, "max_steps": 2})
    train(c, ts, tmp_path / "run", progress=False)
    curve = read_curve(tmp_path / "run/log.jsonl")
    assert [r["step"] for r in curve] == [0, 2]  # step 0 and the end (2 < every)
    assert all(0 <= r["val_incontext"] <= 100 and r["network"] == "student" for r in curve)


def test_read_curve_keeps_the_last_row_of_a_repeated_step(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"kind": "validation", "step": 0, "val_clustering": 5.0}, {"step": 1, "loss": 2.0},
            {"kind": "validation", "step": 3, "val_clustering": 6.0},  # then a crash, resumed from step 2
            {"kind": "validation", "step": 3, "val_clustering": 7.0}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [(r["step"], r["val_clustering"]) for r in read_curve(log)] == [(0, 5.0), (3, 7.0)]
    assert plot_curve(log, tmp_path / "v.png").is_file()
    assert plot_curve(tmp_path / "none.jsonl", tmp_path / "w.png") is None


def test_a_missing_validation_set_fails_before_training(store, tmp_path):
    c, ts = settings(store, **{"validate.split": "nope"})
    with pytest.raises(MosicError, match="validate.every=0"):
        train(c, ts, tmp_path / "run", progress=False)
    assert not (tmp_path / "run/log.jsonl").exists() or not (tmp_path / "run/log.jsonl").read_text()
    c, ts = settings(store, **{"validate.dataset": "voc"})
    with pytest.raises(MosicError, match="validate.root"):
        train(c, ts, tmp_path / "run2", progress=False)


def test_validation_does_not_change_training(store, tmp_path):
    import torch

    for name, every in (("on", 1), ("off", 0)):
        c, ts = settings(store, **{"validate.every": every, "max_steps": 3})
        train(c, ts, tmp_path / name, progress=False)
    a = torch.load(tmp_path / "on/checkpoints/latest.pt", weights_only=False)
    b = torch.load(tmp_path / "off/checkpoints/latest.pt", weights_only=False)
    for key in ("student", "teacher"):
        for k in a[key]:
            torch.testing.assert_close(a[key][k], b[key][k], rtol=0, atol=0, msg=f"{key}.{k}")


def test_rank_0_validates_alone_under_ddp(store, tmp_path):
    """torchrun, 2 processes (gloo): one validation row per step, none from rank 1, and the run ends."""
    port = free_port()
    sets = ["--set", "model.img_size=56", "--set", "model.kwargs={depth: 2, embed_dim: 48, num_heads: 3}",
            "--set", "model.train_blocks=1", "--set", "model.head_hidden=[32]", "--set", "model.head_dim=16",
            "--set", "model.num_prototypes=8", "--set", "grid=2", "--set", "validate.every=1",
            "--set", "validate.max_images=12", "--set", f"dataset.root={store.dataset.root}",
            *[x for k, v in CLIPS.items() for x in ("--set", f"{k}={v}")]]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(port), "-m", "mosic.train", "--pipeline", "synthetic-oracle", "--store",
                        store.train["store"], "--max-steps", "2", "--workers", "0", "--no-progress", "--batch-size",
                        "4", *sets, "--out", str(tmp_path / "ddp")],
                       env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["step"] for x in read_curve(tmp_path / "ddp/log.jsonl")] == [0, 1, 2]
    rows = [json.loads(x) for x in (tmp_path / "ddp/log.jsonl").read_text().splitlines()]
    assert sum(x.get("kind") == "validation" for x in rows) == 3


def test_the_incontext_memory_size_is_a_setting_and_its_images_default_to_what_holds_it(store, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import torch

    from mosic.backbones import create_backbone
    from mosic.evaluation import validation
    from mosic.train.validate import Validator

    assert validation.memory_images(102_400, 224, 14) == 400  # the official validation's memory at 224 px
    assert validation.memory_images(10_240, 224, 14) == 40
    official = load_pipeline("ytvos-official").train.validate_
    assert (official.network, official.protocols, official.memory_size, official.memory_images) == (
        "student", ("incontext",), 102_400, None)
    seen = {}
    monkeypatch.setattr(validation, "incontext_miou", lambda bb, train, val, size, dev, memory_size: seen.update(
        images=len(train), memory=memory_size) or 50.0)
    c, ts = settings(store, **{"validate.protocols": ["incontext"], "validate.memory_size": 40})
    v = Validator(ts.validate_, c, tmp_path, 56, torch.device("cpu"), True)
    bb = create_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=56, depth=1, embed_dim=48,
                         num_heads=3, init_values=0.1)
    row = v.run(SimpleNamespace(backbone=bb), 0, 0)
    assert row["val_incontext"] == 50.0 and seen == {"images": 3, "memory": 40}  # 16 patches a 56 px image
