"""Store layouts: a store written by mosic-precompute opens in another Zarr v3 implementation
(tensorstore) with the same values, and stores of the older layout (schema 2, numcodecs codecs)
still read, are finished in their own layout and convert to an equal store of the current one."""

import hashlib
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
from typer.testing import CliRunner

from conftest import SMALL_CLIPS, small_oracle_store
from mosic.config import load_pipeline
from mosic.data.synthetic import generate
from mosic.precompute import runner as precompute_runner
from mosic.precompute.cli import app as precompute_app
from mosic.precompute.runner import precompute
from mosic.store_schema import DONE, SCHEMA_VERSION, StoreReader, StoreWriter
from mosic.store_schema import layout as L
from mosic.store_schema.cli import app as store_app
from mosic.store_schema.convert import convert_store

cli = CliRunner()
OLD = 2  # the schema of stores made before the current layout


def zarr_nodes(store: Path) -> dict[str, dict]:
    """Every node's metadata (zarr.json) by its path inside the store ('' for the root group)."""
    return {"" if p.parent == store else p.parent.relative_to(store).as_posix(): json.loads(p.read_text())
            for p in sorted(store.rglob("zarr.json"))}


def codec_names(store: Path) -> set[str]:
    return {c["name"] for m in zarr_nodes(store).values() if m["node_type"] == "array" for c in m["codecs"]}


def tensorstore_read(array: Path) -> np.ndarray:
    t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array)}}, open=True, read=True).result()
    return t.read().result()


def files_digest(store: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(store.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(store)).encode() + p.read_bytes())
    return h.hexdigest()


def test_every_array_of_a_precomputed_store_reads_in_tensorstore_as_the_store_reader_reads_it(tmp_path):
    _, store = small_oracle_store(tmp_path)
    r = StoreReader(store)
    assert r.spec.schema_version == SCHEMA_VERSION and len(r.done) == len(r) > 0
    nodes = zarr_nodes(store)
    arrays = sorted(k for k, m in nodes.items() if m["node_type"] == "array")
    assert arrays == sorted([L.TRACKS, L.VISIBILITY, L.STATUS, L.CLIP_VIDEO, L.CLIP_FRAMES, L.CLIP_SIZE])
    assert not any(name.startswith("numcodecs.") for name in codec_names(store))
    got = {name: tensorstore_read(store / name) for name in arrays}

    # the spec, as any JSON reader finds it in the root group's attributes
    assert nodes[""]["attributes"][L.ATTR_KEY]["spec"] == r.spec.model_dump(mode="json")
    # tracks: integers on the 1/coord_scale pixel grid; pixels = value * scale_factor
    assert got[L.TRACKS].dtype == np.int32
    scale = nodes[L.TRACKS]["attributes"]["scale_factor"]
    assert scale == 1 / r.spec.coord_scale
    pixels = (got[L.TRACKS] * scale).astype(np.float32)
    video_ids = nodes[L.CLIP_VIDEO]["attributes"]["video_ids"]
    np.testing.assert_array_equal(got[L.STATUS], r.status)
    for i, clip in enumerate(r.clips):
        item = r[i]
        np.testing.assert_array_equal(pixels[i], item.tracks)
        np.testing.assert_array_equal(got[L.VISIBILITY][i], item.visibility)
        assert video_ids[got[L.CLIP_VIDEO][i]] == clip.video_id
        assert tuple(got[L.CLIP_FRAMES][i]) == clip.frames
        assert tuple(got[L.CLIP_SIZE][i]) == (clip.width, clip.height)


def _old_mosic_precompute(monkeypatch, cfg, **kw):
    """mosic-precompute as it ran before the current layout: the same spec in store schema 2."""
    build = precompute_runner.build_spec
    with monkeypatch.context() as m:
        m.setattr(precompute_runner, "build_spec", lambda *a: build(*a).in_schema(OLD))
        return precompute(cfg, progress=False, **kw)


def _synthetic(tmp_path) -> Path:
    root = tmp_path / "synthetic"
    generate(root, videos=4, seed=1, num_frames=24, width=96, height=72)
    return root


def _cfg(root: Path, stores: Path):
    # 8 clips in chunks of 3: three chunks, so that a shard leaves a store incomplete
    return load_pipeline("synthetic-oracle", overrides={"dataset.root": str(root), "stores": str(stores),
                                                        "store.clips_per_chunk": 3, **SMALL_CLIPS})


def _same_clips(a: StoreReader, b: StoreReader) -> None:
    assert a.clips == b.clips and list(a.status) == list(b.status)
    assert a.summary()["failures"] == b.summary()["failures"]
    for i in a.done:
        np.testing.assert_array_equal(a[i].tracks, b[i].tracks)
        np.testing.assert_array_equal(a[i].visibility, b[i].visibility)


def test_an_old_layout_store_reads_is_finished_in_its_layout_and_converts_to_an_equal_current_store(
        tmp_path, monkeypatch):
    root = _synthetic(tmp_path)
    cfg = _cfg(root, tmp_path / "stores")
    half = _old_mosic_precompute(monkeypatch, cfg, shard=(0, 2))
    old = Path(half.store)
    assert not half.complete and StoreReader(old, allow_incomplete=True).spec.schema_version == OLD
    assert "numcodecs.delta" in codec_names(old)

    # today's mosic-precompute with the same settings finds the old store and finishes it in its own layout
    res = precompute(cfg, progress=False)
    assert Path(res.store) == old and res.complete
    assert [p.name for p in (tmp_path / "stores").iterdir()] == [old.name]
    assert "numcodecs.delta" in codec_names(old) and StoreReader(old).meta.codec == "fixed-delta-zstd"

    reference = StoreReader(precompute(_cfg(root, tmp_path / "fresh"), progress=False).store)
    assert reference.spec.schema_version == SCHEMA_VERSION
    r_old = StoreReader(old)
    assert r_old._direct == OLD  # the old layout keeps its fast path
    _same_clips(r_old, reference)
    inspect = cli.invoke(store_app, ["inspect", str(old)])
    assert inspect.exit_code == 0 and f"mosic-store convert {old}" in inspect.output

    before = files_digest(old)
    out = cli.invoke(store_app, ["convert", str(old)])
    assert out.exit_code == 0, out.output
    new = old.parent / reference.path.name  # the name today's mosic-precompute gives these settings
    assert out.output.startswith(f"{new}: ") and files_digest(old) == before  # never in place
    r_new = StoreReader(new)
    assert r_new.spec == r_old.spec.in_schema(SCHEMA_VERSION) and r_new.meta.complete
    assert r_new.meta.made_with["converted_from"] == str(old)
    assert not any(name.startswith("numcodecs.") for name in codec_names(new))
    _same_clips(r_new, r_old)
    # converting again keeps the finished store
    assert convert_store(str(old)) == new and StoreReader(new).meta.completed == r_new.meta.completed


def test_converting_an_incomplete_old_store_is_refused_with_the_command_that_finishes_it(tmp_path, monkeypatch):
    root = _synthetic(tmp_path)
    cfg = _cfg(root, tmp_path / "stores")
    old = Path(_old_mosic_precompute(monkeypatch, cfg, shard=(1, 2)).store)
    refused = cli.invoke(store_app, ["convert", str(old)])
    assert refused.exit_code == 2
    message = refused.output.strip()
    assert "\n" not in message and "is incomplete" in message and "`mosic-precompute " in message
    command = shlex.split(message.split("`")[1])
    assert command[0] == "mosic-precompute" and command[-2:] == ["--store", str(old)]

    finished = cli.invoke(precompute_app, command[1:] + ["--no-progress"])
    assert finished.exit_code == 0, finished.output
    assert StoreReader(old).meta.complete and StoreReader(old).spec.schema_version == OLD
    assert not (tmp_path / "stores" / StoreReader(old).spec.in_schema(SCHEMA_VERSION).store_name()).exists()
    assert cli.invoke(store_app, ["convert", str(old)]).exit_code == 0
    again = cli.invoke(store_app, ["convert", str(old.parent / StoreReader(old).spec.in_schema(SCHEMA_VERSION)
                                                .store_name())])
    assert again.exit_code == 2 and "already has the current layout" in again.output


def test_a_writer_asked_for_a_store_keeps_the_layout_the_store_has(tmp_path):
    from test_store import fake_tracks, make_clips, make_spec, write_all

    old_spec = make_spec(schema_version=OLD)
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", old_spec, make_clips(6), clips_per_chunk=3)
    assert w.meta.codec == L.default_codec(OLD)
    tracks, vis = fake_tracks(6)
    a, b, _ = w.todo()[0]
    w.write_chunk(a, tracks[a:b], vis[a:b], np.full(b - a, DONE))
    # asked with the current spec (what mosic-precompute builds now), the old store goes on in its layout
    w2 = StoreWriter.open_or_create(tmp_path / "s.zarr", make_spec(), make_clips(6), clips_per_chunk=3)
    assert w2.spec == old_spec and [(a, b) for a, b, _ in w2.todo()] == [(3, 6)]
    write_all(w2, tracks, vis)
    assert w2.finalize()
    assert json.loads((tmp_path / "s.zarr" / L.TRACKS / "zarr.json").read_text())["data_type"] == "float32"
    r = StoreReader(tmp_path / "s.zarr")
    for i in range(6):
        np.testing.assert_array_equal(r[i].tracks, L.quantize(tracks[i], old_spec.coord_scale))


def test_the_layout_is_part_of_the_store_name():
    from test_store import make_spec

    spec = make_spec()
    assert spec.schema_version == SCHEMA_VERSION != OLD
    assert spec.store_name() != spec.in_schema(OLD).store_name() and spec.key() != spec.in_schema(OLD).key()
    assert spec.in_schema(OLD).in_schema(SCHEMA_VERSION) == spec


def test_coordinates_beyond_the_int32_fixed_point_are_refused(tmp_path):
    from test_store import fake_tracks, make_clips, make_spec

    w = StoreWriter.open_or_create(tmp_path / "s.zarr", make_spec(), make_clips(3), clips_per_chunk=3)
    tracks, vis = fake_tracks(3)
    tracks[1, 0, 0, 0] = 4e7  # 4e7 px * 64 > 2^31
    with pytest.raises(ValueError, match="do not fit"):
        w.write_chunk(0, tracks, vis, np.full(3, DONE))
    assert not StoreReader(tmp_path / "s.zarr", allow_incomplete=True).done.size
