"""Weights files that are not usable state dicts, an unreachable hub and a store made with other
settings each give one line naming the culprit and the option that helps."""

import socket

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mosic import MosicError
from mosic.backbones import check_hub, check_weights_file, detect_layout, read_weights

runner = CliRunner()
TINY = {"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1}


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("\n".join(str(i) for i in range(300)))
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    torch.save({"student": {"w": torch.zeros(2)}, "teacher": {"w": torch.zeros(2)}, "ema": {}, "optimizer": {},
                "scaler": {}, "step": 3, "rng": {"numpy": np.random.get_state()}}, ck / "latest.pt")
    torch.save({"w": np.zeros(3)}, tmp_path / "numpy.pth")  # needs unpickling numpy: not weights-only
    return {"empty": tmp_path / "empty.pth", "text": tmp_path / "text.pth", "training": ck / "latest.pt",
            "numpy": tmp_path / "numpy.pth"}


MESSAGES = {"empty": "is empty (0 bytes)",
            "text": "is not a PyTorch checkpoint (a text file starting '0\\n1\\n2",
            "training": "is a mosic training checkpoint, not a backbone: use the run's backbone.pth",
            "numpy": "(a zip archive) is not a plain state dict: torch.load with weights_only refuses it "
                     "(UnpicklingError: WeightsUnpickler error: Unsupported global: GLOBAL numpy"}


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_weights_file_is_named_with_what_it_is(bad_files, kind):
    with pytest.raises(MosicError) as e:
        check_weights_file(bad_files[kind], "vit_small_patch14_dinov2", TINY)
    assert MESSAGES[kind] in str(e.value) and str(bad_files[kind]) in str(e.value) and "\n" not in str(e.value)
    if kind == "training":
        assert "--resume" in str(e.value)


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_both_commands_refuse_bad_weights_in_one_line(bad_files, kind, tmp_path):
    from mosic.evaluation.cli import app as eval_app
    from mosic.train.cli import app as train_app

    r = runner.invoke(eval_app, ["run", "--model", "vit_small_patch14_dinov2", "--weights", str(bad_files[kind]),
                                 "--protocols", "video", "--video-dataset", "synthetic", "--video-root",
                                 str(tmp_path), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and MESSAGES[kind] in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(train_app, ["--weights", str(bad_files[kind]), "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and MESSAGES[kind] in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_good_state_dict_and_an_official_layout_pass(tmp_path):
    import timm

    net = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=56, **TINY)
    torch.save(net.state_dict(), tmp_path / "ok.pth")
    check_weights_file(tmp_path / "ok.pth", "vit_small_patch14_dinov2", TINY)  # pos_embed size is resampled
    assert detect_layout(read_weights(tmp_path / "ok.pth"), net) == "timm"
    torch.save({"model": {f"backbone.layer{i}.w": torch.zeros(3) for i in range(8)}}, tmp_path / "other_layout.pth")
    check_weights_file(tmp_path / "other_layout.pth", "vit_small_patch14_dinov2", TINY)  # the loader converts or says
    other = read_weights(tmp_path / "other_layout.pth")  # the same dict the loader reads: container and prefix gone
    assert sorted(other) == sorted(f"layer{i}.w" for i in range(8)) and detect_layout(other, net) is None


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f: None)
    return monkeypatch


def test_unreachable_hub_one_attempt_then_the_commands_flag(offline, tmp_path):
    from mosic.evaluation.cli import app as eval_app

    with pytest.raises(MosicError, match=r"cannot reach the Hugging Face hub .* --weights PATH, or --no-pretrained"):
        check_hub("vit_small_patch14_dinov2.lvd142m")
    r = runner.invoke(eval_app, ["run", "--model", "vit_small_patch14_dinov2", "--protocols", "video",
                                 "--video-dataset", "synthetic", "--video-root", str(tmp_path), "--out",
                                 str(tmp_path / "r")])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "or --no-pretrained for a random initialisation" in r.output  # one spelling on every command


def test_unreachable_hub_with_cached_weights_goes_offline(offline):
    import huggingface_hub
    from huggingface_hub import constants

    offline.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f: "/cache/model.safetensors")
    offline.setenv("HF_HUB_OFFLINE", "0")
    check_hub("vit_small_patch14_dinov2.lvd142m")
    assert constants.HF_HUB_OFFLINE is True  # the cached copy, without network retries


def test_store_mismatch_names_the_fields_and_the_option(tmp_path):
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute
    from mosic.train.stores import resolve_store

    generate(tmp_path / "syn", videos=2, seed=0, num_frames=16, width=64, height=48, exact_length=True)
    small = {"tracker.grid": 4, "clips.length": 4, "clips.step": 2, "stores": str(tmp_path / "stores"),
             "dataset.root": str(tmp_path / "syn")}
    precompute(load_pipeline("synthetic", overrides=small), progress=False)  # tracked with lk
    cfg = load_pipeline("synthetic-oracle", overrides=small)
    with pytest.raises(MosicError) as e:
        resolve_store(cfg, cfg.train)
    msg = str(e.value)
    assert "differs in tracker.name (store 'lk', pipeline 'oracle'): train on it with `--tracker lk`" in msg
    cfg = load_pipeline("synthetic-oracle", overrides={**small, "tracker.name": "lk"})
    assert resolve_store(cfg, cfg.train).name.startswith("synthetic-train-lk")


@pytest.mark.parametrize("container", ["model", "state_dict", "module", "model_ema", "teacher"])
def test_the_pre_flight_and_the_loader_read_the_same_containers(tmp_path, container):
    import timm

    from mosic.backbones import create_backbone

    name = "vit_small_patch14_dinov2"
    net = timm.create_model(name, pretrained=False, num_classes=0, img_size=56, **TINY)
    path = tmp_path / f"{container}.pth"
    torch.save({container: net.state_dict(), "epoch": 3}, path)
    check_weights_file(path, name, TINY)
    loaded = create_backbone(name, pretrained=False, weights=path, img_size=56, **TINY).state_dict()
    assert loaded.keys() == net.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())


def test_a_hub_id_as_weights_is_tried_once_and_an_unreachable_hub_is_one_line(offline):
    from mosic.backbones import create_backbone

    with pytest.raises(MosicError, match=r"cannot reach the Hugging Face hub .* --weights hf-hub:someone/mosic-vits "
                                         r"\(someone/mosic-vits\) are not in the local cache"):
        create_backbone("vit_small_patch14_dinov2", weights="hf-hub:someone/mosic-vits", img_size=56)
