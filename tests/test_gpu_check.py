"""bench/gpu_check.py --cpu: the dry run of the GPU check runs every part that can run without a GPU,
so that the script cannot rot where no GPU is available; and its verdicts cannot pass by accident.
The harness (bench/gpu_check.py) and its parts (bench/gpu_parts/) are imported as the script finds
them: from its own folder."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check as gc  # noqa: E402
from gpu_parts import cotracker as cot  # noqa: E402


def test_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    res = json.loads(out.read_text())
    assert res["machine"]["mode"] == "cpu dry run" and "time budget" in r.stdout
    try:
        import cotracker  # noqa: F401
        assert res["cotracker"]["status"] == "ok", res["cotracker"]
    except ImportError:
        assert res["cotracker"]["status"] == "skipped" and "cotracker" in res["cotracker"]["reason"]
    t = res["train"]
    assert t["status"] == "ok" and t["step_ms"] > 0 and t["bare_ms"] > 0 and t["ratio"] > 0
    loads = {k: v for k, v in res["loader"].items() if isinstance(v, dict)}
    pipes = {k: loads.pop(k) for k in [k for k in loads if "decode+crop" in k]}
    assert len(pipes) == 2 and all(v["clips_s"] > 0 and v["clips_per_cpu_s"] > 0 for v in pipes.values())
    decodes = {k: loads.pop(k) for k in [k for k in loads if "decode_jpeg" in k]}
    assert len(decodes) == 2 and all(v["frames_s"] > 0 and v["mad_vs_cpu_decode"] < 1 for v in decodes.values())
    # the cache only where the frames are larger than it: 160 x 96 (> 104 x 104), not 64 x 48
    assert res["loader"]["status"] == "ok" and sorted(loads) == ["160x96 W=1", "160x96 cache W=1", "64x48 W=1"]
    assert all(v["steps"] == v["batches_per_epoch"] == 3 and 0 < v["busy_fraction"] <= 1 and
               np.isfinite(v["delivered_clips_s"]) and v["delivered_clips_s"] > 0 for v in loads.values())
    tr = res["torchrun"]
    # one process under torchrun still makes a process group: the backend that ran is reported
    assert tr["status"] == "ok" and tr["final_step"] == 5 and tr["resumed"] and tr["backend"] == "gloo"
    assert tr["world_size"] == 1
    ev = res["eval"]
    assert ev["status"] == "ok" and ev["linear,clustering,incontext,video"]["status"] == "ok"
    # the table is printed with every part
    for part in ("cotracker", "train", "loader", "torchrun", "eval"):
        assert part in r.stdout


def _tracks(tracks, vis):
    from mosic.precompute.trackers.base import TrackResult

    return TrackResult(tracks=np.asarray(tracks, np.float32), visibility=np.asarray(vis, bool))


def test_cotracker_verdict_compares_every_point_and_counts_a_fallback_as_failure():
    rng = np.random.default_rng(0)
    B, T, N = 4, 5, 9
    tr = rng.uniform(0, 300, (B, T, N, 2))
    tr[:, 0] = tr[0, 0]  # frame 0: the queries, the same in every clip and every run
    vis = rng.random((B, T, N)) > 0.3
    vis[:, 0] = True
    ref = _tracks(tr, vis)
    sep = cot.clip_separation(ref)
    assert sep > 10
    same = cot.compare_tracks(ref, _tracks(tr + 0.01, vis))
    assert cot.batched_row(same, sep, fell_back=False) == (True, "")
    # a fall-back to batch 1 fails the batching row even when the tracks agree
    ok, why = cot.batched_row(same, sep, fell_back=True)
    assert not ok and "fell back" in why
    # clips mixed up within the batch: frame 0 agrees, the rest does not
    mixed = cot.compare_tracks(ref, _tracks(tr[[1, 0, 3, 2]], vis[[1, 0, 3, 2]]))
    assert not cot.batched_row(mixed, sep, fell_back=False)[0]
    # visibility alone differing (positions equal) fails too
    flipped = vis.copy()
    flipped[:, 1:] = ~flipped[:, 1:]
    assert not cot.batched_row(cot.compare_tracks(ref, _tracks(tr, flipped)), sep, fell_back=False)[0]
    # tracks that do not move (random weights at their own init) cannot tell clips apart: failure
    still = np.broadcast_to(tr[:1, :1], tr.shape)
    ref_still = _tracks(still, vis)
    ok, why = cot.batched_row(cot.compare_tracks(ref_still, ref_still), cot.clip_separation(ref_still), False)
    assert not ok and "cannot tell clips apart" in why
    bad = _tracks(np.where(np.arange(N) == 3, np.nan, tr[..., 0])[..., None].repeat(2, -1), vis)
    assert not cot.batched_row(cot.compare_tracks(ref, bad), sep, False)[0]


def test_non_finite_figures_fail_a_part_and_a_part_has_a_time_limit(tmp_path):
    assert gc.non_finite({"a": 1.0, "b": {"c": float("nan"), "d": [1.0, float("inf")]}}) == ["b/c", "b/d/1"]
    r = gc.run_part(lambda ctx: {"status": "ok", "x": {"delivered_clips_s": float("nan")}}, None, 5)
    assert r["status"] == "failed" and "x/delivered_clips_s" in r["error"]

    def slow(ctx):
        import time

        time.sleep(30)
        return {"status": "ok"}

    r = gc.run_part(slow, None, 1)
    assert r["status"] == "failed" and "PartTimeout" in r["error"]


def test_a_part_left_without_time_is_skipped_and_the_json_says_so(tmp_path):
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu", "--parts", "train", "--out",
                        str(out), "--budget", "5"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["budget_s"]["total"] == 5 and res["train"]["status"] == "skipped", res["train"]
    assert "budget" in res["train"]["reason"] and "seconds" in res


def test_the_help_describes_every_part_from_its_own_module_without_loading_torch():
    r = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "bench" / "gpu_check.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(gc.PART_FNS) == sorted(("data",) + gc.PARTS) and all(callable(f) for f in gc.PART_FNS.values())
    for name in gc.PARTS:
        first = gc.MODULES[name].__doc__.splitlines()[0]
        assert f"  {name:<9}  {first}" in r.stdout, name
    # the parts import torch only when they run: --help answers at once
    assert not any(line.split("|")[-1].strip() == "torch" for line in r.stderr.splitlines())
