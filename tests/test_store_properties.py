"""Property tests (hypothesis) for the store contract: spec round trip and data round trip."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mosic.config import ClipSettings
from mosic.data.base import ClipRef
from mosic.store_schema import DONE, FAILED, DatasetSpec, StoreReader, StoreSpec, StoreWriter, TrackerSpec
from mosic.store_schema import layout as L
from mosic.store_schema.spec import spec_differences

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
json_scalars = st.one_of(st.integers(-10**6, 10**6), st.booleans(), names,
                         st.floats(allow_nan=False, allow_infinity=False, width=32))

specs = st.builds(
    StoreSpec,
    dataset=st.builds(DatasetSpec, kind=names, split=names, fingerprint=st.text("0123456789abcdef", min_size=16, max_size=16),
                      num_videos=st.integers(1, 10**5)),
    clips=st.builds(ClipSettings, length=st.integers(2, 64), step=st.integers(1, 12), clips_per_video=st.integers(1, 8),
                    stride=st.one_of(st.none(), st.integers(1, 50)), short_videos=st.sampled_from(["adapt", "skip"]),
                    track_size=st.one_of(st.none(), st.tuples(st.integers(8, 2048), st.integers(8, 2048)))),
    grid=st.integers(1, 64),
    tracker=st.builds(TrackerSpec, name=names, version=names, checkpoint_sha256=st.one_of(st.none(), names),
                      params=st.dictionaries(names, json_scalars, max_size=4)),
    coord_scale=st.sampled_from([1, 16, 64, 256]),
)


@given(specs)
def test_spec_json_round_trip_and_key(spec):
    back = StoreSpec.model_validate_json(spec.model_dump_json())
    assert back == spec and back.key() == spec.key() and spec_differences(back, spec) == []
    assert spec.tracker.name.replace("/", "_") in spec.store_name() or spec.tracker.name in spec.store_name()


@given(specs, specs)
def test_different_specs_have_different_keys(a, b):
    assert (a.key() == b.key()) == (a.canonical_json() == b.canonical_json())
    assert (spec_differences(a, b) == []) == (a == b)


@st.composite
def stores(draw):
    T = draw(st.integers(2, 5))
    G = draw(st.integers(1, 3))
    C = draw(st.integers(1, 9))
    tracks = draw(arrays(np.float32, (C, T, G * G, 2),
                         elements=st.floats(-5000, 5000, allow_nan=False, width=32)))
    vis = draw(arrays(bool, (C, T, G * G)))
    ok = draw(arrays(bool, (C,)))
    cpc = draw(st.integers(1, 4))
    version, codec = draw(st.sampled_from([(v, c) for v, codecs in L.TRACK_CODECS.items() for c in codecs]))
    return T, G, tracks, vis, ok, cpc, version, codec


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stores())
def test_store_round_trip(tmp_path_factory, data):
    T, G, tracks, vis, ok, cpc, version, codec = data
    C = len(tracks)
    spec = StoreSpec(dataset=DatasetSpec(kind="synthetic", split="train", fingerprint="0" * 16, num_videos=C),
                     clips=ClipSettings(length=T, step=1), grid=G, tracker=TrackerSpec(name="lk", version="1"),
                     schema_version=version)
    clips = [ClipRef(f"v{i}", tuple(range(T)), 640, 480) for i in range(C)]
    path = tmp_path_factory.mktemp("s") / "s.zarr"
    w = StoreWriter.open_or_create(path, spec, clips, clips_per_chunk=cpc, codec=codec)
    for a, b, _ in w.todo():
        w.write_chunk(a, tracks[a:b], vis[a:b], np.where(ok[a:b], DONE, FAILED))
    assert w.finalize()
    r = StoreReader(path)
    assert list(r.done) == list(np.flatnonzero(ok)) and r.clips == clips
    for i in r.done:
        np.testing.assert_array_equal(r[i].tracks, L.quantize(tracks[i], spec.coord_scale))
        np.testing.assert_array_equal(r[i].visibility, vis[i])
        assert np.abs(r[i].tracks - tracks[i]).max() <= 0.5 / spec.coord_scale + 1e-3
