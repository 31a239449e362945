"""Check and measure every CUDA path of mosic on one GPU, with random weights and synthetic data, in
one command (`make gpu-check`, under 8 minutes on one GPU). Prints one table and writes a JSON file,
rewritten after every part (a hung or killed run keeps what was measured).

    python bench/gpu_check.py [--out bench/results/gpu_check.json] [--workers 8] [--parts ...]
    python bench/gpu_check.py --cpu      # dry run of every part that can run without a GPU (tiny sizes)

Parts, one module each in bench/gpu_parts/ (its docstring says what it measures; --help shows them):
  data       the synthetic sets and their stores the other parts read, timed
  cotracker  CoTracker3 batched against batch 1: clips/s, the tracks equal within a tolerance
  train      the training step against the bare student + teacher work, peak memory
  loader     nvJPEG, decode + crop on the GPU, the DataLoader with W workers against the step
  torchrun   one process under torchrun: steps, checkpoint, resume, the backend that ran
  eval       every mosic-eval protocol, wall time per image

A part that cannot run here (no CUDA, the cotracker package missing) is reported as skipped with the
reason; a part that fails is reported with its error and the others still run; the exit status is 1
if any part failed. A part also fails when a figure it reports is not finite. Every part has a time
limit (PART_LIMIT_S, at most 3 minutes, subprocesses included) within a total budget (--budget);
a part left without time is skipped. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

# the parts, found beside this script (its folder is on sys.path when it runs)
from gpu_parts import cotracker, data, loader, torchrun, train
from gpu_parts import eval as eval_protocols
# the running part's deadline and the subprocesses it bounds live beside the parts, which use them
from gpu_parts.common import DEADLINE, SUBPROCESS_LIMIT_S, Ctx, run_sub, settings  # noqa: F401

HERE = Path(__file__).resolve().parent
PARTS = ("cotracker", "train", "loader", "torchrun", "eval")
#: each part's module (``data`` runs first whenever a chosen part reads the synthetic sets)
MODULES = {"data": data, "cotracker": cotracker, "train": train, "loader": loader, "torchrun": torchrun,
           "eval": eval_protocols}
#: the part registry: name -> run(ctx) -> dict
PART_FNS = {name: module.run for name, module in MODULES.items()}
#: seconds each part may take (its subprocesses included), and the default total budget: the whole
#: check stays under 8 minutes on one GPU (docs/gpu.md: how the figures were estimated)
PART_LIMIT_S = {"data": 90, "cotracker": 90, "train": 50, "loader": 100, "torchrun": 70, "eval": 100}
BUDGET_S = 450


class PartTimeout(Exception):
    """Raised in a part that runs past its time limit (run_part's alarm)."""


def description() -> str | None:
    """The --help text: this module's docstring with each part's own description (the first
    paragraph of its module's docstring) in place of the one-line summaries."""
    if not __doc__:  # python -OO: no docstrings
        return None
    head, rest = __doc__.split("\nParts", 1)
    tail = rest.split("\n\n", 1)[1]
    return "\n".join([head, "Parts:", *(_part_help(name) for name in PARTS), "", tail])


def _part_help(name: str) -> str:
    lines = MODULES[name].__doc__.split("\n\n", 1)[0].splitlines()
    return "\n".join([f"  {name:<9}  {lines[0]}"] + [" " * 13 + line for line in lines[1:]])


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def table(results: dict) -> str:
    """The report: one row (part, what, value, note) per figure, in columns."""
    rows: list[tuple] = []
    for part in ("data",) + PARTS:
        r = results.get(part)
        if r is None:
            continue
        st = r.get("status")
        if st != "ok":
            why = r.get("reason") or r.get("error")
            rows.append((part, st, "", why.splitlines()[-1][:100] if why else ""))
            if st == "skipped":
                continue
        if part == "data" and st == "ok":
            rows.append((part, "synthetic sets and stores",
                         ", ".join(f"{k[:-2]}: {v:.0f} s" for k, v in r.items() if k.endswith(" s")), ""))
        elif part == "cotracker":
            for k, v in r.items():
                if isinstance(v, dict):
                    cols = [f"{n[:-8]}={x:.1f}" for n, x in v.items() if n.endswith("clips_s")]
                    rows.append((part, f"{k} clips/s", ", ".join(cols),
                                 "; ".join(f"{n[:-7]} vs batch 1: p99 {v[n]:.2f} px, vis "
                                           f"{100 * v[n[:-7] + '_vis_agree']:.1f}%"
                                           f"{' FELL BACK' if v[n[:-7] + '_fell_back'] else ''}"
                                           for n in v if n.endswith("_p99_px") and not n.startswith("clip"))
                                 + f"; clips apart {v['clip_separation_p99_px']:.1f} px"))
        elif part == "train" and st == "ok":
            rows.append((part, f"step ({r['batch']} clips x {r['frames']} frames, {r['img']} px, {r['precision']})",
                         f"{r['step_ms']:.1f} ms", f"{r['step_clips_s']:.0f} clips/s"))
            rows.append((part, "bare student + teacher", f"{r['bare_ms']:.1f} ms", ""))
            rows.append((part, "step / bare", f"{r['ratio']:.3f}", "goal <= 1.10"))
            if "peak_memory_gib" in r:
                rows.append((part, "peak memory", f"{r['peak_memory_gib']:.1f} GiB", ""))
        elif part == "loader":
            for k, v in r.items():
                if isinstance(v, dict) and "clips_per_cpu_s" in v:
                    rows.append((part, k, f"{v['clips_s']:.0f} clips/s",
                                 f"{v['clips_per_cpu_s']:.0f} clips per CPU-second"))
                elif isinstance(v, dict) and "frames_s" in v:
                    rows.append((part, k, f"{v['frames_s']:.0f} frames/s",
                                 f"vs CPU decode: {v['mad_vs_cpu_decode']:.2f} grey levels"))
                elif isinstance(v, dict):
                    rows.append((part, k, f"{v['delivered_clips_s']:.0f} delivered / "
                                          f"{v['consumed_clips_s']:.0f} consumed clips/s",
                                 f"device busy {100 * v['busy_fraction']:.0f}%"))
            if "batch_mb" in r:
                rows.append((part, "frames per batch (uint8)", f"{r['batch_mb']:.1f} MB",
                             f"sharing: {r['sharing_strategy']}"))
        elif part == "torchrun":
            rows.append((part, f"{r.get('backend')} on {r.get('device')}, world {r.get('world_size')}",
                         f"steps 0-3, resume at 2 -> {r.get('final_step')}",
                         f"{r.get('first_run_s', 0):.0f} s + {r.get('resumed_run_s', 0):.0f} s"))
        elif part == "eval":
            for k, v in r.items():
                if isinstance(v, dict) and v.get("status") == "ok":
                    rows.append((part, k, f"{v['ms_per_image']:.1f} ms/image",
                                 f"{v['images']} images, {v['seconds']:.0f} s"))
    header = ("part", "what", "value", "note")
    w = [max(len(str(x[i])) for x in rows + [header]) for i in range(4)]
    return "\n".join([_line(header, w), _line(tuple("-" * n for n in w), w)] + [_line(x, w) for x in rows])


def _line(cells: tuple, widths: list[int]) -> str:
    return "  ".join(str(c).ljust(widths[i]) for i, c in enumerate(cells))


def non_finite(r, path="") -> list[str]:
    """The keys of ``r`` (nested) whose number is NaN or infinite."""
    if isinstance(r, dict):
        return [k for key, v in r.items() for k in non_finite(v, f"{path}{key}/")]
    if isinstance(r, (list, tuple)):
        return [k for i, v in enumerate(r) for k in non_finite(v, f"{path}{i}/")]
    if isinstance(r, float) and not math.isfinite(r):
        return [path.rstrip("/")]
    return []


def write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, path)


def run_part(fn, ctx: Ctx, limit: float) -> dict:
    """``fn(ctx)`` with a time limit: SIGALRM raises PartTimeout in it (a DataLoader's own timeout
    and the subprocesses' limits end waits the alarm cannot); should the part still not return,
    faulthandler prints every thread's stack and ends the process 30 s later (the JSON keeps the
    parts before it)."""
    def alarm(signum, frame):
        raise PartTimeout(f"the part ran past its {limit:.0f} s limit")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(max(1, int(math.ceil(limit))))
    faulthandler.dump_traceback_later(limit + 30, exit=True)
    DEADLINE.end = time.monotonic() + limit
    try:
        r = fn(ctx)
    except Exception as e:  # noqa: BLE001 - a failing part is reported, the others still run
        r = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)
        DEADLINE.end = math.inf
    bad = non_finite(r)
    if bad and r.get("status") == "ok":
        r["status"] = "failed"
        r["error"] = f"non-finite figures: {', '.join(bad)}"
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=description(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU at tiny sizes (no CUDA needed)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "gpu_check.json")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--workers", default=None, help="DataLoader workers to try, e.g. 8,16")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all parts together")
    a = p.parse_args(argv)
    t_all = time.perf_counter()
    import torch

    cfg = settings(a.cpu)
    if a.workers:
        cfg["workers"] = [int(x) for x in a.workers.split(",")]
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"unknown part(s) {bad}; parts are {', '.join(PARTS)}")
    if not a.cpu and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; run with --cpu for the dry run", file=sys.stderr)
        return 2
    if a.cpu:
        torch.set_num_threads(1)
    work = a.work or Path(tempfile.mkdtemp(prefix="mosic-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(cfg, work)
    try:
        shm_free = shutil.disk_usage("/dev/shm").free / 2 ** 30
    except OSError:
        shm_free = None
    results: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                 "cuda": torch.version.cuda, "cpus": os.cpu_count(), "shm_free_gib": shm_free,
                                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not a.cpu
                                 else None, "mode": "cpu dry run" if a.cpu else "cuda"},
                     "settings": {k: v for k, v in cfg.items()}}
    # sizes the chosen parts read: the first for the step, both for CoTracker and the loader
    ctx.needed_sizes = cfg["sizes"][: 2 if {"cotracker", "loader"} & set(parts) else 1] \
        if {"cotracker", "train", "loader", "torchrun"} & set(parts) else []
    limits = {n: PART_LIMIT_S[n] for n in ("data",) + PARTS if n in parts or (n == "data" and ctx.needed_sizes)}
    print(f"[gpu_check] time budget {a.budget:.0f} s: " + ", ".join(f"{n} <= {v} s" for n, v in limits.items())
          + f"; results in {a.out} after every part", flush=True)
    results["budget_s"] = {"total": a.budget, **limits}
    write_json(a.out, results)
    t_parts = time.monotonic()
    try:
        for name in limits:
            left = a.budget - (time.monotonic() - t_parts)
            if left < 10:
                results[name] = {"status": "skipped", "reason": f"out of the {a.budget:.0f} s time budget"}
                write_json(a.out, results)
                continue
            t = time.perf_counter()
            print(f"[gpu_check] {name} (<= {min(limits[name], left):.0f} s) ...", flush=True)
            results[name] = {"status": "running"}  # what a killed run leaves
            write_json(a.out, results)
            r = run_part(PART_FNS[name], ctx, min(limits[name], left))
            r["seconds"] = time.perf_counter() - t
            results[name] = r
            write_json(a.out, results)
            print(f"[gpu_check] {name}: {r['status']} ({r['seconds']:.0f} s)", flush=True)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - t_all
    write_json(a.out, results)
    print(table(results))
    print(f"total {results['seconds']:.0f} s (budget {a.budget:.0f} s for the parts)")
    print(f"wrote {a.out}")
    return 1 if any(results.get(n, {}).get("status") == "failed" for n in limits) else 0


if __name__ == "__main__":
    sys.exit(main())
