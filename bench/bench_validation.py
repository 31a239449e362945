"""What the in-training validation costs: a training run of a pipeline at its default settings
(validation included), the time its validations took (``val_seconds`` of the ``log.jsonl`` rows)
against the run's wall time, and the curve it drew.

    python bench/bench_validation.py [--pipeline synthetic] [--data data/synthetic] [--videos 24] [--work DIR]

On the synthetic pipeline it makes the data (train and valid splits) and the store first. Other
pipelines need their store and validation set in place (e.g. ``--pipeline ytvos`` on a GPU machine
with YouTube-VOS tracks and Pascal VOC at ``validate.root``). Prints the fraction; the target is
below 10% at default settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="synthetic")
    p.add_argument("--data", default=None, help="the data set root (synthetic: made here when missing)")
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--set", dest="sets", action="append", default=[], help="train.KEY=VALUE (yaml value)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--work", default=None, help="keep stores and the run here (default: a temporary folder)")
    a = p.parse_args()

    import torch
    from mosic.config.strict import load_yaml

    if a.threads:
        torch.set_num_threads(a.threads)
    from mosic.config import load_pipeline
    from mosic.precompute.runner import precompute
    from mosic.train.train import train

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="mosic-val-"))
    work.mkdir(parents=True, exist_ok=True)
    over = {"stores": str(work / "stores")}
    if a.data:
        over["dataset.root"] = a.data
    for s in a.sets:
        k, _, v = s.partition("=")
        over[k] = load_yaml(v)
    cfg = load_pipeline(a.pipeline, overrides=over)
    if cfg.dataset.kind == "synthetic":
        from mosic.data.synthetic import generate

        root = Path(cfg.dataset.root) if a.data else work / "synthetic"
        cfg = load_pipeline(a.pipeline, overrides={**over, "dataset.root": str(root)})
        generate(root, videos=a.videos, seed=0)
        generate(root, videos=max(8, a.videos // 3), seed=0, split="valid")
        precompute(cfg, progress=False)
    ts = cfg.train
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    res = train(cfg, ts, run, progress=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("kind") == "validation"]
    spent = sum(r["val_seconds"] for r in val)
    v = ts.validate_
    print(f"pipeline {a.pipeline}: {res['steps']} steps, validation every {v.every} ({', '.join(v.protocols)}, "
          f"{val[0]['images'] if val else 0} images of {val[0]['data'] if val else '-'}, {v.network})")
    print(f"run {wall:.1f}s, of which {len(val)} validations {spent:.1f}s ({spent / len(val) if val else 0:.2f}s each): "
          f"{100 * spent / wall:.1f}% of the run; training alone {wall - spent:.1f}s, validation adds "
          f"{100 * spent / max(wall - spent, 1e-9):.1f}%")
    for r in val:
        figs = "  ".join(f"{k[4:]} {r[k]:.1f}" for k in r if k.startswith("val_") and k != "val_seconds")
        print(f"  step {r['step']:5d}: {figs}")
    print(f"curve: {run / 'validation.png'}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
