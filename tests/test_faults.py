"""Faults: kill -9 mid-run, a reader during a write, a full disk, permission denied."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mosic import MosicError
from mosic.config import load_pipeline
from mosic.data.synthetic import generate
from mosic.precompute.runner import precompute
from mosic.store_schema import IncompleteStoreError, StoreReader

SLOW_RUN = textwrap.dedent("""
    import sys, time
    from mosic.config import load_pipeline
    from mosic.precompute.runner import precompute
    from mosic.precompute.trackers.base import TRACKERS
    from mosic.precompute.trackers.lk import LKTracker

    class SlowLK(LKTracker):  # the lk tracker, slowed down so the test can kill it midway
        def track(self, *a, **k):
            time.sleep(0.3)
            return super().track(*a, **k)

    cfg = load_pipeline("synthetic", overrides={"dataset.root": sys.argv[1], "tracker.grid": 6, "clips.length": 5,
                        "clips.step": 2, "clips.clips_per_video": 3, "store.clips_per_chunk": 2,
                        "tracker.batch_size": 1})
    precompute(cfg, store=sys.argv[2], progress=False, tracker=SlowLK(batch_size=1))
""")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate(root, videos=4, seed=5, num_frames=24, width=96, height=72)
    return root


def cfg_for(root):
    return load_pipeline("synthetic", overrides={
        "dataset.root": str(root), "tracker.grid": 6, "clips.length": 5, "clips.step": 2,
        "clips.clips_per_video": 3, "store.clips_per_chunk": 2, "tracker.batch_size": 1})


def wait_for(cond, timeout=120):
    t = time.time()
    while not cond():
        if time.time() - t > timeout:
            raise TimeoutError
        time.sleep(0.05)


def done_count(path):
    try:
        return len(StoreReader(path, allow_incomplete=True).done)
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def test_kill_9_midway_then_rerun_equals_uninterrupted(synth, tmp_path):
    from mosic.precompute.trackers.lk import LKTracker

    killed = tmp_path / "killed.zarr"
    p = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(synth), str(killed)])
    try:
        wait_for(lambda: done_count(killed) >= 4)
        # a reader during the write sees finished clips only, and refuses by default
        r = StoreReader(killed, allow_incomplete=True)
        assert 4 <= len(r.done) < 12 and all(r[i].tracks.shape == (5, 36, 2) for i in r.done)
        with pytest.raises(IncompleteStoreError):
            StoreReader(killed)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    before = StoreReader(killed, allow_incomplete=True)
    assert not before.meta.complete and len(before.done) < 12
    precompute(cfg_for(synth), store=killed, progress=False, tracker=LKTracker(batch_size=1))
    ref = precompute(cfg_for(synth), store=tmp_path / "ref.zarr", progress=False, tracker=LKTracker(batch_size=1))
    a, b = StoreReader(killed), StoreReader(ref.store)
    assert list(a.done) == list(b.done) == list(range(12))  # every clip exactly once
    for i in range(12):
        np.testing.assert_array_equal(a[i].tracks, b[i].tracks)
        np.testing.assert_array_equal(a[i].visibility, b[i].visibility)


@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "permission denied")])
def test_disk_full_or_permission_denied_keep_earlier_work(synth, tmp_path, monkeypatch, err, words):
    from mosic.store_schema.writer import StoreWriter

    real = StoreWriter.write_chunk
    calls = {"n": 0}

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(err, os.strerror(err), str(self.path / "tracks"))
        return real(self, *a, **k)

    monkeypatch.setattr(StoreWriter, "write_chunk", failing)
    with pytest.raises(MosicError, match=f"cannot write clips 4..5 .*{words}.*The 4 clips written before are intact"):
        precompute(cfg_for(synth), store=tmp_path / "s.zarr", progress=False)
    r = StoreReader(tmp_path / "s.zarr", allow_incomplete=True)
    assert list(r.done) == [0, 1, 2, 3]
    monkeypatch.setattr(StoreWriter, "write_chunk", real)
    res = precompute(cfg_for(synth), store=tmp_path / "s.zarr", progress=False)
    assert res.complete and res.written_now == 8
