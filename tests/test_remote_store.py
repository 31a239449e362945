"""Stores on object storage: precompute writes and training reads ``s3://`` stores, against a real
S3-compatible server (moto's server mode) started on localhost, through s3fs and zarr's
FsspecStore — no client is mocked."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from mosic.config import load_pipeline  # noqa: E402
from mosic.data.synthetic import generate  # noqa: E402
from mosic.precompute.cli import app as precompute_app  # noqa: E402
from mosic.precompute.runner import precompute  # noqa: E402
from mosic.store_schema import StoreReader  # noqa: E402
from mosic.store_schema import location  # noqa: E402
from mosic.store_schema.cli import app as store_app  # noqa: E402
from mosic.store_schema.writer import StoreWriter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_remote import start_moto  # noqa: E402  (the benchmark's S3 server, the same in both)

runner = CliRunner()
BUCKET = "mosic-test"
CLIPS = {"tracker.grid": 4, "clips.length": 4, "clips.step": 2, "clips.clips_per_video": 2,
         "store.clips_per_chunk": 2}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free localhost port; the environment points boto/s3fs at it."""
    server, endpoint = start_moto()
    home = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                     "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_CONFIG_FILE": str(home / "config"),
                     "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials")}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        fs, _ = location.filesystem(f"s3://{BUCKET}")
        fs.mkdir(BUCKET)
        yield fs
    server.stop()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate(root, videos=2, seed=0, num_frames=24, width=96, height=72)
    return root


def cfg_for(root, stores, pipeline="synthetic", **over):
    return load_pipeline(pipeline, overrides={"dataset.root": str(root), "stores": str(stores), **CLIPS, **over})


@pytest.fixture(scope="module")
def stores(s3, synth, tmp_path_factory):
    """The same lk run written to a local folder and to an S3 prefix."""
    local = precompute(cfg_for(synth, tmp_path_factory.mktemp("stores")), progress=False)
    remote = precompute(cfg_for(synth, f"s3://{BUCKET}/stores"), progress=False)
    return local, remote


def test_location_helpers(tmp_path):
    u = location.as_location("s3://b/stores/")
    assert location.is_remote(u) and isinstance(u, str) and u == "s3://b/stores"
    assert location.join(u, "x.zarr") == "s3://b/stores/x.zarr" and (u / "x.zarr").name == "x.zarr"
    assert location.name("s3://b/stores/x.zarr") == "x.zarr"
    p = location.join(tmp_path, "x.zarr")
    assert not location.is_remote(p) and p == tmp_path / "x.zarr" and not location.exists(p)
    import pickle

    assert type(pickle.loads(pickle.dumps(u))) is location.URL


def test_remote_store_equals_local_store(s3, stores):
    local, remote = stores
    assert location.is_remote(remote.store) and str(remote.store).startswith(f"s3://{BUCKET}/stores/")
    assert remote.store.name == local.store.name  # the derived name is appended to the prefix
    assert remote.complete and remote.written_now == local.written_now == remote.clips == 4
    assert s3.exists(f"{BUCKET}/stores/{local.store.name}/tracks/zarr.json")
    a, b = StoreReader(local.store), StoreReader(remote.store)
    assert a._direct is not None and b._direct is None  # the direct chunk-file path is local only
    assert a.meta.spec == b.meta.spec and a.clips == b.clips and np.array_equal(a.done, b.done)
    for i in a.done:
        np.testing.assert_array_equal(a[i].tracks, b[i].tracks)
        np.testing.assert_array_equal(a[i].visibility, b[i].visibility)
    assert b.visibility_rate() == a.visibility_rate()
    # a reader handed to another process (pickled) opens its own connection
    import pickle

    c = pickle.loads(pickle.dumps(b))
    assert c._group is None and np.array_equal(c[int(b.done[-1])].tracks, a[int(a.done[-1])].tracks)


def test_rerun_resumes_and_mismatch_is_refused_like_locally(s3, synth, stores, tmp_path):
    local, remote = stores
    again = precompute(cfg_for(synth, f"s3://{BUCKET}/stores"), progress=False)
    assert again.store == remote.store and again.written_now == 0 and again.complete
    w = StoreWriter.open(remote.store)
    assert w.todo() == [] and w.finalize()
    # another spec at the same URL / path: the same error, naming the field
    msgs = []
    for target in (local.store, remote.store):
        out = runner.invoke(precompute_app, ["--root", str(synth), "--store", str(target), "--grid", "6",
                                             "--length", "4", "--step", "2", "--clips-per-video", "2",
                                             "--no-progress"])
        assert out.exit_code == 2, out.output
        msgs.append(out.output.replace(str(target), "STORE"))
    assert "another spec" in msgs[1] and "grid: store has 4, asked for 6" in msgs[1]
    assert msgs[0] == msgs[1]


def test_cli_precompute_inspect_and_finalize_on_s3(s3, synth):
    url = f"s3://{BUCKET}/cli/named.zarr"
    out = runner.invoke(precompute_app, ["--root", str(synth), "--store", url, "--grid", "4", "--length", "4",
                                         "--step", "2", "--clips-per-video", "2", "--tracker", "oracle",
                                         "--no-progress"])
    assert out.exit_code == 0, out.output
    assert f"store: {url}" in out.output and "complete" in out.output
    out = runner.invoke(store_app, ["inspect", url, "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.output)
    assert info["path"] == url and info["done"] == 4 and info["complete"]
    assert info["bytes_on_disk"] == s3.du(f"{BUCKET}/cli/named.zarr", total=True) > 0
    out = runner.invoke(store_app, ["inspect", url])
    assert out.exit_code == 0 and "MiB stored" in out.output
    out = runner.invoke(store_app, ["finalize", url])
    assert out.exit_code == 0 and "complete (4 done, 0 failed)" in out.output
    out = runner.invoke(store_app, ["inspect", f"s3://{BUCKET}/cli/missing.zarr"])
    assert out.exit_code != 0 and "no store at s3://" in out.output


def test_half_created_remote_store_is_not_a_store(s3, synth, monkeypatch):
    """Creation in place: until the mosic attributes are written last, the group is no store; a
    writer waits for its creator, then gives up with a clear error."""
    import zarr

    url = f"s3://{BUCKET}/half/x.zarr"
    location.open_group(url, mode="w-").create_array("status", shape=(4,), dtype="uint8")
    with pytest.raises(Exception, match="not a mosic trajectory store"):
        StoreReader(url)
    monkeypatch.setattr(StoreWriter, "REMOTE_CREATE_WAIT", 0.0)
    with pytest.raises(Exception, match="half-created store"):
        precompute(cfg_for(synth, "unused"), store=url, progress=False)
    assert isinstance(location.open_group(url, mode="r"), zarr.Group)


@pytest.mark.parametrize("workers", [0, 2])
def test_training_reads_the_s3_store(s3, synth, tmp_path, workers):
    from mosic.train.train import train

    prefix = f"s3://{BUCKET}/train"
    res = precompute(cfg_for(synth, prefix, "synthetic-oracle"), progress=False)
    tiny = {"train.model.img_size": 56,
            "train.model.kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 3, "init_values": 0.1},
            "train.model.train_blocks": 1, "train.model.head_hidden": [32], "train.model.head_dim": 16,
            "train.model.num_prototypes": 8, "train.batch_size": 2, "train.num_workers": workers,
            "train.validate.every": 0,
            "train.max_steps": 2, "train.checkpoint_every": 2, "train.log_every": 1,
            "train.optim.warmup_steps": 0}
    # `stores: s3://...`: resolve_store lists the *.zarr under the prefix and picks the one that fits
    c = cfg_for(synth, prefix, "synthetic-oracle", **tiny)
    out = train(c, c.train, tmp_path / "run", progress=False)
    assert out["steps"] == 2 and out["store"] == str(res.store)
    lines = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(np.isfinite(x["loss"]) for x in lines)
