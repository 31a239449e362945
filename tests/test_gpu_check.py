"""bench/gpu_check.py --cpu: the dry run of the GPU check runs every part that can run without a GPU,
so that the script cannot rot where no GPU is available."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    res = json.loads(out.read_text())
    assert res["machine"]["mode"] == "cpu dry run"
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
    assert res["loader"]["status"] == "ok" and len(loads) == 4 and any("cache" in k for k in loads)
    assert all(v["steps"] > 0 and 0 < v["busy_fraction"] <= 1 and v["delivered_clips_s"] > 0 for v in loads.values())
    tr = res["torchrun"]
    assert tr["status"] == "ok" and tr["final_step"] == 5 and tr["resumed"] and tr["backend"] == "gloo"
    ev = res["eval"]
    assert ev["status"] == "ok" and ev["linear,clustering,incontext,video"]["status"] == "ok"
    # the table is printed with every part
    for part in ("cotracker", "train", "loader", "torchrun", "eval"):
        assert part in r.stdout
