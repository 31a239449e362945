"""`torchrun --standalone --nproc_per_node 1 -m mosic.train` (a free port; NCCL on CUDA,
gloo on the CPU: the process group, DDP wrapper and all-reduces run with one process):
a few steps, checkpoint, resume; the resumed run must end at the requested step and
report the backend that ran

3 steps with a checkpoint at step 2, then --resume to step 5; the backend is the one the run wrote
into its config.json."""

from __future__ import annotations

import json
import os
import sys
import time

from gpu_parts.common import Ctx, run_sub


def run(ctx: Ctx) -> dict:
    cfg = ctx.cfg
    root, pfile, store = ctx.data(cfg["sizes"][0])
    run_dir = ctx.work / "run"
    # --standalone: a rendezvous on a free local port (a fixed port collides with another run)
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            "-m", "mosic.train", "--config", str(pfile), "--pipeline", "check", "--store", str(store),
            "--out", str(run_dir), "--no-progress", "--batch-size", str(min(cfg["batch"], 8)), "--workers", "2",
            "--set", "checkpoint_every=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    # cwd: the scratch folder, never the repository (its mosic/ folder would shadow the installed package)
    r1 = run_sub(base + ["--max-steps", "3"], env=env, cwd=ctx.work)
    t1 = time.perf_counter() - t
    if r1.returncode != 0:
        return {"status": "failed", "error": f"first run exit {r1.returncode}: {(r1.stderr or r1.stdout)[-1500:]}"}
    ck = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt"))
    t = time.perf_counter()
    r2 = run_sub(base + ["--max-steps", "5", "--resume"], env=env, cwd=ctx.work)
    t2 = time.perf_counter() - t
    if r2.returncode != 0:
        return {"status": "failed", "error": f"resumed run exit {r2.returncode}: {(r2.stderr or r2.stdout)[-1500:]}"}
    res = json.loads((run_dir / "result.json").read_text())
    conf = json.loads((run_dir / "config.json").read_text())
    resumed = "resumed from" in (r2.stdout + r2.stderr)
    # the backend the run's process group used (none: training ran without one)
    backend, want = conf.get("backend"), "nccl" if cfg["device"] == "cuda" else "gloo"
    errors = []
    if not (res.get("steps") == 5 and resumed and "step_0000002.pt" in ck):
        errors.append("the resumed run did not end at step 5 from the step-2 checkpoint")
    if backend != want or conf.get("world_size") != 1:
        errors.append(f"the run's process group: backend {backend}, world size {conf.get('world_size')} "
                      f"(want {want}, 1)")
    return {"status": "failed" if errors else "ok", "device": conf.get("device"), "backend": backend,
            "world_size": conf.get("world_size"), "checkpoints_after_first": ck, "resumed": resumed,
            "final_step": res.get("steps"), "first_run_s": t1, "resumed_run_s": t2,
            **({"error": "; ".join(errors)} if errors else {})}
