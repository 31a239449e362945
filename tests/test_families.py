"""Every backbone family through the training loop: a tiny random instance of DINOv2, DINOv2 with
registers, DINO, DINOv3 and EVA-02 trains with token dropping, its teacher follows by EMA, a run
resumes exactly from a checkpoint, and the export loads with plain ``timm.create_model`` with the
same outputs."""

import shutil

import pytest
import timm
import torch

from mosic.config import load_pipeline
from mosic.train.train import train

from conftest import SMALL_CLIPS, small_oracle_store, tiny_eval_set
from test_backbones import FAMILIES

CLIPS = SMALL_CLIPS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_oracle_store(tmp_path_factory.mktemp("families"))[0]


def settings(cfg, fam, **over):
    name, _, kw, size = FAMILIES[fam]
    o = {
        "train.model.name": name, "train.model.img_size": size, "train.model.kwargs": kw,
        "train.model.train_blocks": 1, "train.model.head_hidden": [32], "train.model.head_dim": 16,
        "train.model.num_prototypes": 8, "train.batch_size": 2, "train.num_workers": 0, "train.max_steps": 2,
        "train.checkpoint_every": 1, "train.log_every": 1, "train.grid": 2, "train.mask_ratio": 0.25,
        "train.ema": 0.5, "train.validate.every": 0,  # no held-out split in this store's data
    }
    o.update({f"train.{k}": v for k, v in over.items()})
    c = load_pipeline("synthetic-oracle", overrides={"dataset.root": cfg.dataset.root, "stores": cfg.stores,
                                                     **CLIPS, **o})
    return c, c.train


@pytest.fixture(scope="module")
def evalset(tmp_path_factory):
    return tiny_eval_set(tmp_path_factory.mktemp("families-eval") / "syn")


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_family_trains_resumes_exports_and_evaluates(store, evalset, tmp_path, fam):
    c, ts = settings(store, fam)
    name, _, kw, size = FAMILIES[fam]
    res = train(c, ts, tmp_path / "full", progress=False)
    assert res["steps"] == 2 and res["loss"] == res["loss"]  # finite
    ck = torch.load(tmp_path / "full/checkpoints/latest.pt", weights_only=False)
    init = torch.load(tmp_path / "full/backbone_init.pth")
    last = f"blocks.{kw['depth'] - 1}."
    k_train = next(k for k in init if k.startswith(last) and k.endswith("weight") and init[k].ndim == 2)
    s, t = ck["student"][f"backbone.{k_train}"], ck["teacher"][f"backbone.{k_train}"]
    assert not torch.equal(s, init[k_train]) and not torch.equal(t, init[k_train]) and not torch.equal(s, t)  # EMA
    k_frozen = next(k for k in init if k.startswith("blocks.0.") and k.endswith("weight") and init[k].ndim == 2)
    torch.testing.assert_close(ck["teacher"][f"backbone.{k_frozen}"], init[k_frozen], rtol=0, atol=0)

    # resume from the step-1 checkpoint: the same state at step 2
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "full/checkpoints/step_0000001.pt", part / "checkpoints/latest.pt")
    train(c, ts, part, resume=True, progress=False)
    b = torch.load(part / "checkpoints/latest.pt", weights_only=False)
    for key in ("student", "teacher"):
        for k in ck[key]:
            torch.testing.assert_close(ck[key][k], b[key][k], rtol=0, atol=0, msg=f"{fam} {key}.{k}")

    # the export: plain timm loads it, with the teacher's outputs
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "full/backbone.pth")),
                               img_size=size, num_classes=0, **kw).eval()
    from mosic.backbones import create_backbone
    from mosic.train.model import MoSiCModel

    teacher = MoSiCModel(create_backbone(name, pretrained=False, img_size=size, **kw), 8, (32,), 16, 1)
    teacher.load_state_dict(ck["teacher"])
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), teacher.backbone.eval().forward_features(x),
                                   rtol=0, atol=0)

    # every evaluation protocol at --quick on the export; 56 px is rounded to the patch (64 for 16)
    import json

    from typer.testing import CliRunner

    from mosic.evaluation.cli import app
    from mosic.evaluation.settings import PROTOCOLS
    from mosic.evaluation.results import load_results

    out = tmp_path / "results"
    r = CliRunner().invoke(app, [str(a) for a in [
        "run", "--model", name, "--weights", tmp_path / "full/backbone.pth", "--model-kwargs", json.dumps(kw),
        "--dataset", "synthetic", "--root", evalset, "--video-dataset", "synthetic", "--video-root", evalset,
        "--quick", "--out", out, "--fractions", "1", "--ks", "6", "--img-size", 56,
        "--protocols", ",".join(PROTOCOLS), "--set", "video.eval_size=28"]])
    assert r.exit_code == 0, r.output
    row = load_results(out.with_suffix(".json"))[0]
    assert {"synthetic/linear", "synthetic/clustering K=6", "synthetic/in-context 1", "synthetic/video frame",
            "synthetic/consistency"} <= set(row["figures"])
    assert all(v is not None and 0 <= v <= 100 for v in row["figures"].values()), row["figures"]
    p = 16 if "patch16" in name else 14
    assert row["settings"]["synthetic/linear"]["img_size"] == (64 if p == 16 else 56)
    assert row["settings"]["synthetic/video frame"]["img_size"] % p == 0


def test_training_normalises_with_the_backbones_statistics(store, tmp_path):
    """EVA-02 trains on crops normalised with its own (CLIP) mean and std, and the run says so."""
    import json

    c, ts = settings(store, "eva02", max_steps=1)
    train(c, ts, tmp_path / "run", progress=False)
    norm = json.loads((tmp_path / "run/config.json").read_text())["normalisation"]
    assert norm["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert norm["std"] == pytest.approx([0.26862954, 0.26130258, 0.27577711])
