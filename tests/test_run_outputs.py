"""What a training run leaves for others: its backbone as a Hugging Face / timm folder that plain timm loads
(the model card gains mosic-eval's results table), and its rows in Weights & Biases beside TensorBoard."""

import glob
import json
import struct
from pathlib import Path

import pytest
import timm
import torch
from typer.testing import CliRunner

from test_train import settings
from conftest import small_oracle_store
from mosic.train.train import train


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_oracle_store(tmp_path_factory.mktemp("outputs"))


def test_a_run_writes_a_hub_folder_that_plain_timm_loads_into_its_backbone_pth(store, tmp_path):
    cfg, _ = store
    c, ts = settings(cfg)
    res = train(c, ts, tmp_path / "run", progress=False)
    hub = Path(res["hub"])
    assert hub == tmp_path / "run" / "hub" and {p.name for p in hub.iterdir()} >= {"config.json", "model.safetensors",
                                                                                     "README.md"}
    exported = torch.load(tmp_path / "run" / "backbone.pth", weights_only=True)
    net = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()  # the folder's own arguments and size
    assert net.state_dict().keys() == exported.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in exported.items())
    m = ts.model
    ref = timm.create_model(m.name, pretrained=False, num_classes=0, img_size=m.img_size, **m.kwargs).eval()
    ref.load_state_dict(exported)
    x = torch.randn(2, 3, m.img_size, m.img_size)
    assert torch.equal(net.forward_features(x), ref.forward_features(x))
    card = (hub / "README.md").read_text()
    assert "- steps: 4" in card and "synthetic-oracle" in card and "random initialisation" in card

    from mosic.evaluation.cli import app

    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["run", "--run", str(tmp_path / "run"), "--protocols", "consistency", "--video-dataset",
                                 "synthetic", "--video-root", str(Path(cfg.dataset.root)), "--video-split", "train",
                                 "--quick", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    card = (hub / "README.md").read_text()
    assert "## Evaluation (mosic-eval)" in card and "synthetic/consistency" in card

    # --weights takes the hub folder (its architecture from its config.json) and a FILE#COPY of a checkpoint
    torch.save({"student": exported, "teacher": exported}, tmp_path / "both.pth")
    for weights, name in ((hub, []), (f"{tmp_path / 'both.pth'}#teacher", ["--model", m.name])):
        r = CliRunner().invoke(app, ["run", "--weights", str(weights), *name, "--protocols", "consistency",
                                     "--video-dataset", "synthetic", "--video-root", str(Path(cfg.dataset.root)),
                                     "--video-split", "train", "--quick", "--out", str(tmp_path / "res2"), "--device", "cpu",
                                     "--model-kwargs", json.dumps(m.kwargs)])
        assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "res2.json").read_text())["rows"]
    files = {row["provenance"]["weights_file"]: row["provenance"].get("weights_copy") for row in rows}
    assert files == {"model.safetensors": None, "both.pth": "teacher"}


def _wandb_records(path: Path) -> list[bytes]:
    """The records of a wandb run file (a LevelDB-style log: 7-byte header, 32 KiB blocks of records
    [crc32c u32][length u16][type u8][data]), joined across blocks."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, part, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            out.append(part)
            part = b""
    return out


def test_wandb_logs_the_rows_offline_and_a_resumed_run_keeps_its_wandb_run(store, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2 as pb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg, _ = store
    c, ts = settings(cfg, **{"wandb.project": "mosic-test", "max_steps": 2})
    train(c, ts, tmp_path / "run", progress=False)
    run_id = (tmp_path / "run" / "wandb_id").read_text().strip()
    c2, ts2 = settings(cfg, **{"wandb.project": "mosic-test", "max_steps": 4})
    train(c2, ts2, tmp_path / "run", resume=True, progress=False)
    files = sorted(glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / f"run-{run_id}.wandb")))
    assert len(files) == 2  # the first run and its resumption, one wandb run id
    logged, config = {}, {}
    for f in files:
        for raw in _wandb_records(Path(f)):
            rec = pb.Record()
            rec.ParseFromString(raw)
            if rec.WhichOneof("record_type") == "history":
                items = {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                logged[items["_step"]] = items
            elif rec.WhichOneof("record_type") == "run":
                config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sorted(logged) == [1, 2, 3, 4]
    for row in rows:
        assert logged[row["step"]]["loss"] == pytest.approx(row["loss"])
    assert config["train"]["wandb"]["project"] == "mosic-test" and config["name"] == "synthetic-oracle"


def test_wandb_asked_for_without_the_package_is_one_line(store, tmp_path, monkeypatch):
    import builtins

    from mosic import MosicError

    real = builtins.__import__

    def no_wandb(name, *a, **k):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    cfg, _ = store
    c, ts = settings(cfg, **{"wandb.project": "p"})
    with pytest.raises(MosicError, match=r"wandb is not installed: pip install wandb"):
        train(c, ts, tmp_path / "run", progress=False)
