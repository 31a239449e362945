import os
import pickle

import numpy as np
import pytest

from mosic import MosicError
from mosic.config import ClipSettings
from mosic.data.base import ClipRef
from mosic.store_schema import (
    DONE,
    FAILED,
    CorruptStoreError,
    DatasetSpec,
    Failure,
    IncompleteStoreError,
    StoreError,
    StoreMismatchError,
    StoreReader,
    StoreSpec,
    StoreWriter,
    TrackerSpec,
)
from mosic.store_schema import layout as L

T, G = 4, 3
N = G * G


def make_spec(**kw) -> StoreSpec:
    base = dict(
        dataset=DatasetSpec(kind="synthetic", split="train", fingerprint="abc123", num_videos=3),
        clips=ClipSettings(length=T, step=2),
        grid=G,
        tracker=TrackerSpec(name="lk", version="test-1", params={"win": 21}),
    )
    base.update(kw)
    return StoreSpec(**base)


def make_clips(n: int) -> list[ClipRef]:
    return [ClipRef(f"v{i // 2}", tuple(range(i % 2, i % 2 + 2 * T, 2)), 64, 48) for i in range(n)]


def fake_tracks(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tracks = rng.uniform(-10, 70, size=(n, T, N, 2)).astype(np.float32)
    vis = rng.random((n, T, N)) > 0.3
    return tracks, vis


def write_all(w: StoreWriter, tracks, vis, fail: set[int] = frozenset()):
    for a, b, _ in w.todo():
        st = np.array([FAILED if i in fail else DONE for i in range(a, b)], dtype=np.uint8)
        fl = [Failure(video_id=w_clip.video_id, clip=i, reason="broken")
              for i, w_clip in zip(range(a, b), make_clips(b)[a:b]) if i in fail]
        w.write_chunk(a, tracks[a:b], vis[a:b], st, fl)


def test_round_trip_is_lossless_to_documented_precision(tmp_path):
    spec = make_spec()
    clips = make_clips(7)
    tracks, vis = fake_tracks(7)
    w = StoreWriter.open_or_create(tmp_path / spec.store_name(), spec, clips, clips_per_chunk=3)
    write_all(w, tracks, vis)
    assert w.finalize()
    r = StoreReader(tmp_path / spec.store_name())
    assert len(r) == 7 and list(r.done) == list(range(7))
    assert r.clips == clips
    for i in range(7):
        item = r[i]
        assert item.clip == clips[i]
        # error at most half a quantisation step, and exactly the documented quantisation
        assert np.abs(item.tracks - tracks[i]).max() <= 0.5 / spec.coord_scale + 1e-6
        np.testing.assert_array_equal(item.tracks, L.quantize(tracks[i], spec.coord_scale))
        np.testing.assert_array_equal(item.visibility, vis[i])


def test_store_name_carries_tracker_and_hash():
    a, b = make_spec(), make_spec(grid=4)
    assert "lk" in a.store_name() and "g3" in a.store_name() and a.key() in a.store_name()
    assert a.store_name() != b.store_name()
    assert make_spec().key() == a.key()  # stable


def test_incomplete_store_is_refused_until_finalized(tmp_path):
    spec = make_spec()
    tracks, vis = fake_tracks(6)
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(6), clips_per_chunk=3)
    a, b, _ = w.todo()[0]
    w.write_chunk(a, tracks[a:b], vis[a:b], np.full(b - a, DONE))
    assert not w.finalize()
    with pytest.raises(IncompleteStoreError, match="3 of 6 clips"):
        StoreReader(tmp_path / "s.zarr")
    r = StoreReader(tmp_path / "s.zarr", allow_incomplete=True)
    assert list(r.done) == [0, 1, 2]
    with pytest.raises(StoreError, match="not written yet"):
        r[4]
    # resume: only the unwritten chunk is left
    w2 = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(6), clips_per_chunk=3)
    assert [(a, b) for a, b, _ in w2.todo()] == [(3, 6)]
    write_all(w2, tracks, vis)
    assert w2.finalize()
    assert StoreReader(tmp_path / "s.zarr").meta.complete


def test_failed_clips_are_recorded_and_retried(tmp_path):
    spec = make_spec()
    tracks, vis = fake_tracks(6)
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(6), clips_per_chunk=4)
    write_all(w, tracks, vis, fail={1, 5})
    assert w.finalize()
    r = StoreReader(tmp_path / "s.zarr")
    assert list(r.done) == [0, 2, 3, 4]
    assert {f["clip"] for f in r.summary()["failures"]} == {1, 5}
    with pytest.raises(StoreError, match="failed"):
        r[1]
    # a re-run retries failed clips (only their chunks), and success clears the failure
    w2 = StoreWriter.open(tmp_path / "s.zarr")
    todo = w2.todo()
    assert [(a, b, list(i)) for a, b, i in todo] == [(0, 4, [1]), (4, 6, [5])]
    assert w2.todo(retry_failed=False) == []
    write_all(w2, tracks, vis)
    r = StoreReader(tmp_path / "s.zarr")
    assert list(r.done) == list(range(6)) and r.summary()["failures"] == []


def test_same_path_other_spec_is_refused(tmp_path):
    spec = make_spec()
    StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(2))
    other = make_spec(tracker=TrackerSpec(name="lk", version="test-2"))
    with pytest.raises(StoreMismatchError, match=r"tracker.version: store has 'test-1', asked for 'test-2'"):
        StoreWriter.open_or_create(tmp_path / "s.zarr", other, make_clips(2))
    with pytest.raises(StoreMismatchError, match="another list of clips"):
        StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(3))


def test_reader_checks_requirements(tmp_path):
    spec = make_spec()
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(2))
    write_all(w, *fake_tracks(2))
    w.finalize()
    StoreReader(tmp_path / "s.zarr", require={"grid": G, "clips.length": T, "tracker.name": "lk"})
    with pytest.raises(StoreError, match=r"grid: store has 3, the experiment asks for 16"):
        StoreReader(tmp_path / "s.zarr", require={"grid": 16})
    with pytest.raises(StoreError, match="unknown store spec field"):
        StoreReader(tmp_path / "s.zarr", require={"gird": 16})


def test_no_half_created_store_under_the_real_name(tmp_path, monkeypatch):
    import mosic.store_schema.writer as W

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(W, "_create", boom)
    with pytest.raises(OSError, match="No space"):
        StoreWriter.open_or_create(tmp_path / "s.zarr", make_spec(), make_clips(2))
    assert list(tmp_path.iterdir()) == []


def test_not_a_store_and_missing_store(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        StoreReader(tmp_path / "nope.zarr")
    import zarr

    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(StoreError, match="not a mosic trajectory store"):
        StoreReader(tmp_path / "plain.zarr")


def test_corrupt_chunk_names_the_clips(tmp_path):
    spec = make_spec()
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(6), clips_per_chunk=3)
    write_all(w, *fake_tracks(6))
    w.finalize()
    chunk = tmp_path / "s.zarr" / "tracks" / "c" / "1" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(b"\x00garbage" * 10)
    r = StoreReader(tmp_path / "s.zarr")
    r[0]
    with pytest.raises(CorruptStoreError, match=r"clips 3\.\.5"):
        r[4]


def _opened_store(folder):
    """A complete 4-clip store in chunks of 2, its reader after one read, and what was written."""
    tracks, vis = fake_tracks(4)
    w = StoreWriter.open_or_create(folder / "s.zarr", make_spec(), make_clips(4), clips_per_chunk=2)
    write_all(w, tracks, vis)
    w.finalize()
    r = StoreReader(folder / "s.zarr")
    r[0]
    return r, tracks, vis


def test_reader_pickles_for_dataloader_workers(tmp_path):
    r, tracks, vis = _opened_store(tmp_path)
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._group is None and not r2._cache
    np.testing.assert_array_equal(r2[3].visibility, vis[3])


def test_reader_in_forked_worker(tmp_path):
    r, tracks, vis = _opened_store(tmp_path)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ok = np.array_equal(r[2].visibility, vis[2]) and np.array_equal(r[1].visibility, vis[1])
            os.write(wr, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(rd, 1) == b"1"


def test_lru_cache_stays_within_budget(tmp_path):
    spec = make_spec()
    tracks, vis = fake_tracks(8)
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(8), clips_per_chunk=2)
    write_all(w, tracks, vis)
    w.finalize()
    per_chunk = tracks[:2].nbytes + vis[:2].nbytes
    r = StoreReader(tmp_path / "s.zarr", cache_mb=2.5 * per_chunk / 2**20)
    for i in range(8):
        np.testing.assert_array_equal(r[i].visibility, vis[i])
    assert len(r._cache) == 2 and r._cached <= 2.5 * per_chunk


def test_write_chunk_rejects_partial_chunks_and_nan(tmp_path):
    spec = make_spec()
    tracks, vis = fake_tracks(6)
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(6), clips_per_chunk=3)
    with pytest.raises(ValueError, match="whole chunk"):
        w.write_chunk(1, tracks[1:4], vis[1:4], np.full(3, DONE))
    bad = tracks[:3].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        w.write_chunk(0, bad, vis[:3], np.full(3, DONE))
    assert not StoreReader(tmp_path / "s.zarr", allow_incomplete=True).done.size


def test_schema_version_mismatch_is_refused(tmp_path):
    spec = make_spec()
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(2))
    d = dict(w.group.attrs[L.ATTR_KEY])
    d["spec"] = dict(d["spec"], schema_version=999)
    w.group.attrs[L.ATTR_KEY] = d
    with pytest.raises(MosicError, match="schema version 999"):
        StoreReader(tmp_path / "s.zarr")


def _zarr_path(r: StoreReader) -> StoreReader:
    """The same reader forced onto the zarr decode path."""
    r = pickle.loads(pickle.dumps(r))
    r._direct = None
    return r


#: (store schema, track codec): every layout a store can have, the current one first
LAYOUTS = [(v, c) for v in sorted(L.TRACK_CODECS, reverse=True) for c in L.TRACK_CODECS[v]]
#: the schemas, each with its default codec (the layouts the reader decodes itself)
SCHEMAS = sorted(L.TRACK_CODECS, reverse=True)


@pytest.mark.parametrize("version, codec", LAYOUTS)
def test_direct_chunk_decode_is_bit_identical_to_zarr(tmp_path, version, codec):
    spec = make_spec(schema_version=version)
    tracks, vis = fake_tracks(7)  # 7 clips in chunks of 3: the last chunk is an edge chunk
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(7), clips_per_chunk=3, codec=codec)
    write_all(w, tracks, vis, fail={5})
    w.finalize()
    r = StoreReader(tmp_path / "s.zarr")
    assert r._direct == (version if codec == L.default_codec(version) else None)  # the others read through zarr
    z = _zarr_path(r)
    for c in range(3):
        (t1, v1), (t2, v2) = r._chunk(c), z._chunk(c)
        assert t1.shape == t2.shape == (min(3, 7 - 3 * c), T, N, 2) and t1.dtype == t2.dtype
        np.testing.assert_array_equal(t1.view(np.uint32), t2.view(np.uint32))
        np.testing.assert_array_equal(v1, v2)
    for i in r.done:  # every codec keeps coordinates on the 1/coord_scale grid
        np.testing.assert_array_equal(r[i].tracks, L.quantize(tracks[i], spec.coord_scale))
        np.testing.assert_array_equal(r[i].visibility, vis[i])


@pytest.mark.parametrize("version", SCHEMAS)
def test_direct_chunk_decode_of_an_unwritten_chunk_is_the_fill_value(tmp_path, version):
    spec = make_spec(schema_version=version)
    tracks, vis = fake_tracks(6)
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(6), clips_per_chunk=3)
    w.write_chunk(0, tracks[:3], vis[:3], np.full(3, DONE))
    r = StoreReader(tmp_path / "s.zarr", allow_incomplete=True)
    assert r._direct == version
    (t1, v1), (t2, v2) = r._chunk(1), _zarr_path(r)._chunk(1)
    assert not t1.any() and not v1.any()
    np.testing.assert_array_equal(t1.view(np.uint32), t2.view(np.uint32))
    np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize("version", SCHEMAS)
@pytest.mark.parametrize("array, damage", [
    ("tracks", lambda b: b"\x00garbage" * 10),
    ("tracks", lambda b: b[: len(b) // 2]),
    ("visibility", lambda b: b"\x00garbage" * 10),
])
def test_direct_chunk_decode_names_the_clips_of_a_corrupt_chunk(tmp_path, array, damage, version):
    spec = make_spec(schema_version=version)
    tracks, vis = fake_tracks(7)
    w = StoreWriter.open_or_create(tmp_path / "s.zarr", spec, make_clips(7), clips_per_chunk=3)
    write_all(w, tracks, vis)
    w.finalize()
    chunk = tmp_path / "s.zarr" / array / "c" / "2" / "0" / "0"
    chunk = chunk / "0" if array == "tracks" else chunk
    chunk.write_bytes(damage(chunk.read_bytes()))
    r = StoreReader(tmp_path / "s.zarr")
    assert r._direct == version
    for i in range(6):  # the intact chunks read as written
        np.testing.assert_array_equal(r[i].tracks, L.quantize(tracks[i], spec.coord_scale))
    with pytest.raises(CorruptStoreError, match=r"clips 6\.\.6"):
        r[6]
