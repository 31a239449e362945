"""Several precompute processes on one store split its chunks (a claim per chunk, dropped by the operating
system when its holder dies); SIGTERM stops a run as Ctrl-C does; an unwritable --stores is one line."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import mosic.precompute.runner as R
from mosic.data.base import create_source
from mosic.precompute.cli import app as precompute_app
from mosic.precompute.claims import ChunkClaims
from mosic.precompute.runner import precompute
from mosic.precompute.trackers.base import create_tracker
from mosic.store_schema import StoreReader
from mosic.store_schema.writer import StoreWriter

from test_precompute import cfg_for

runner = CliRunner()


def slow_tracker(cfg, seconds: float):
    """The pipeline's tracker, ``seconds`` slower per call: two runs started together overlap."""
    source = create_source(cfg.dataset.kind, cfg.dataset.root, cfg.dataset.split)
    tracker = create_tracker(cfg.tracker, source)
    run = tracker.run

    def slow_run(*a, **k):
        time.sleep(seconds)
        return run(*a, **k)

    tracker.run = slow_run
    return tracker


def assert_same_store(a, b):
    ra, rb = StoreReader(a), StoreReader(b)
    assert ra.clips == rb.clips and list(ra.status) == list(rb.status) and ra.meta.complete and rb.meta.complete
    assert StoreWriter.open(a).failures() == StoreWriter.open(b).failures()
    for i in range(len(ra)):
        np.testing.assert_array_equal(ra[i].tracks, rb[i].tracks)
        np.testing.assert_array_equal(ra[i].visibility, rb[i].visibility)


def test_two_precompute_runs_on_one_store_split_the_clips_and_write_what_one_run_writes(synth, tmp_path):
    cfg = cfg_for(synth, tmp_path / "two")
    results = [None, None]

    def one(k):
        results[k] = precompute(cfg, progress=False, tracker=slow_tracker(cfg, 0.2))

    threads = [threading.Thread(target=one, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None and r.complete for r in results)
    clips = results[0].clips
    assert results[0].written_now + results[1].written_now == clips  # not twice each clip
    assert min(r.written_now for r in results) > 0  # both worked
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [results[0].store.name]  # no claims left
    ref = precompute(cfg_for(synth, tmp_path / "one"), progress=False)
    assert_same_store(results[0].store, ref.store)


def test_a_chunk_held_by_a_process_that_dies_is_taken_over(synth, tmp_path):
    cfg = cfg_for(synth, tmp_path / "s")

    def stop(a, b):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        precompute(cfg, progress=False, on_chunk=stop)  # chunk 0 (clips 0, 1) written
    store = next((tmp_path / "s").glob("*.zarr"))
    lock = ChunkClaims(store)._lock(2).lock_file  # chunk 1 (clips 2, 3): another process works on it
    holder = subprocess.Popen([sys.executable, "-c", f"from filelock import FileLock; import time; "
                               f"held = FileLock({lock!r}); held.acquire(); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    done, result = [], []
    t = threading.Thread(target=lambda: result.append(precompute(cfg, progress=False,
                                                                 on_chunk=lambda a, b: done.append(a))))
    t.start()
    deadline = time.time() + 60
    while done != [4]:  # the free chunk first; then it waits for the held one
        assert time.time() < deadline and t.is_alive(), done
        time.sleep(0.05)
    os.kill(holder.pid, signal.SIGKILL)  # the holder dies without a word: its claim goes with it
    holder.wait()
    t.join(60)
    assert done == [4, 2] and result[0].complete and result[0].written_now == 4
    assert_same_store(result[0].store, precompute(cfg_for(synth, tmp_path / "ref"), progress=False).store)


def test_sigterm_stops_precompute_as_ctrl_c_does_keeping_the_chunks_written(synth, tmp_path, monkeypatch):
    def fallback(signum, frame):  # where the command does not handle SIGTERM, this test fails instead of dying
        raise SystemExit("SIGTERM not handled")

    previous = signal.signal(signal.SIGTERM, fallback)
    do_chunk = R._do_chunk

    def then_sigterm(*a, **k):
        do_chunk(*a, **k)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(R, "_do_chunk", then_sigterm)
    try:
        out = runner.invoke(precompute_app, ["--root", str(synth), "--stores", str(tmp_path / "stores"), "--grid", "6",
                                             "-T", "6", "--step", "2", "--clips-per-video", "2",
                                             "--clips-per-chunk", "2", "--no-progress"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert out.exit_code == 143, out.output
    assert "interrupted: 2 of 6 clips are saved" in out.output and "run the same command again" in out.output


def test_a_stores_folder_that_cannot_be_written_is_one_line_before_any_work(synth, tmp_path):
    (tmp_path / "a_file").write_text("x")
    out = runner.invoke(precompute_app, ["--root", str(synth), "--stores", str(tmp_path / "a_file/stores"),
                                         "--grid", "6", "-T", "6", "--no-progress"])
    assert out.exit_code == 2 and out.exception is None or isinstance(out.exception, SystemExit)
    assert out.output.strip().splitlines() == [f"error: --stores {tmp_path}/a_file/stores: {tmp_path}/a_file is a "
                                               "file, not a folder; choose another place"]
