"""Sharded precompute: several processes fill one store; the result equals a one-process run."""

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mosic.data.synthetic import generate
from mosic.store_schema import IncompleteStoreError, StoreReader
from mosic.store_schema.cli import app as store_app


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate(root, videos=4, seed=2, num_frames=24, width=96, height=72)
    return root


def cmd(root, store, *extra):
    return [sys.executable, "-m", "mosic.precompute.cli", "--root", str(root), "--store", str(store), "--grid", "6",
            "-T", "5", "--step", "2", "--clips-per-video", "3", "--clips-per-chunk", "2", "--no-progress", *extra]


def test_two_concurrent_shards_equal_one_process(synth, tmp_path):
    one = tmp_path / "one.zarr"
    subprocess.run(cmd(synth, one), check=True, capture_output=True)
    two = tmp_path / "two.zarr"
    procs = [subprocess.Popen(cmd(synth, two, "--shard", f"{i}/2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    a, b = StoreReader(one), StoreReader(two)
    assert b.meta.complete and a.spec == b.spec and a.clips == b.clips
    assert list(a.done) == list(b.done) == list(range(12))
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i].tracks, b[i].tracks)
        np.testing.assert_array_equal(a[i].visibility, b[i].visibility)
    assert not list(tmp_path.glob(".*creating*"))  # the losing creator cleaned up


def test_one_shard_alone_leaves_the_store_incomplete_until_the_rest_runs(synth, tmp_path):
    store = tmp_path / "s.zarr"
    out = subprocess.run(cmd(synth, store, "--shard", "1/3"), capture_output=True, text=True)
    assert out.returncode == 0 and "INCOMPLETE" in out.stdout
    with pytest.raises(IncompleteStoreError):
        StoreReader(store)
    part = StoreReader(store, allow_incomplete=True)
    assert list(part.done) == [2, 3, 8, 9]  # chunks 1 and 4 of 2 clips each
    res = CliRunner().invoke(store_app, ["finalize", str(store)])
    assert res.exit_code == 1 and "8 of 12 clips" in res.output
    for i in (0, 2):
        subprocess.run(cmd(synth, store, "--shard", f"{i}/3"), check=True, capture_output=True)
    res = CliRunner().invoke(store_app, ["finalize", str(store)])
    assert res.exit_code == 0 and "complete (12 done" in res.output
    bad = subprocess.run(cmd(synth, store, "--shard", "3/3"), capture_output=True, text=True)
    assert bad.returncode == 2 and "0 <= I < N" in bad.stderr
