"""Does MoSiC training improve dense features? Train a small random ViT on synthetic clips with
exact (oracle) tracks for several seeds, and compare each run's initial and trained backbone on
held-out videos: patch clustering mIoU, trajectory consistency and correspondence (percent; see
evaluation/synthetic_probe.py).

    python bench/bench_learning.py [--seeds 3] [--steps 300] [--videos 48]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

KEYS = ("cluster_miou", "track_consistency", "correspondence")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--tracker", default="oracle")
    a = p.parse_args()

    import torch

    from mosic.evaluation.synthetic_probe import probe
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute
    from mosic.train.config import train_settings
    from mosic.train.model import create_backbone
    from mosic.train.train import train

    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    data = work / "synthetic"
    generate(data, videos=a.videos, seed=0)
    generate(data, videos=16, seed=0, split="valid")
    rows = []
    for seed in range(a.seeds):
        cfg = load_pipeline("synthetic", overrides={
            "dataset.root": str(data), "stores": str(work / "stores"), "tracker.name": a.tracker,
            "train.max_steps": a.steps, "train.seed": seed, "train.log_every": a.steps})
        precompute(cfg, progress=False)
        ts = train_settings(cfg.train)
        res = train(cfg, ts, work / f"run{seed}", progress=False)
        m = ts.model
        bb = create_backbone(m.name, pretrained=False, img_size=m.img_size, **m.kwargs)
        bb.load_state_dict(torch.load(work / f"run{seed}/backbone_init.pth"))
        before = probe(bb, data, split="valid", img_size=m.img_size, seed=seed)
        bb.load_state_dict(torch.load(res["backbone"]))
        after = probe(bb, data, split="valid", img_size=m.img_size, seed=seed)
        rows.append({"seed": seed, "loss": res["loss"], **{f"{k}_initial": before[k] for k in KEYS},
                     **{f"{k}_trained": after[k] for k in KEYS}})
        print(f"seed {seed}: " + "  ".join(f"{k} {before[k]:.1f} -> {after[k]:.1f}" for k in KEYS), flush=True)
    print(f"\n{a.seeds} seeds x {a.steps} steps, {a.tracker} tracks, {a.videos} training videos, 16 held-out:")
    print(f"{'measure':20s} {'initial':>8s} {'trained':>8s} {'gain (mean +- sd)':>18s}")
    summary = {}
    for k in KEYS:
        b = [r[f"{k}_initial"] for r in rows]
        t = [r[f"{k}_trained"] for r in rows]
        g = [y - x for x, y in zip(b, t)]
        sd = statistics.stdev(g) if len(g) > 1 else 0.0
        summary[k] = {"initial": statistics.mean(b), "trained": statistics.mean(t), "gain": statistics.mean(g), "gain_sd": sd}
        print(f"{k:20s} {statistics.mean(b):8.1f} {statistics.mean(t):8.1f} {statistics.mean(g):+10.1f} +- {sd:.1f}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "learning.json").write_text(json.dumps({"runs": rows, "summary": summary}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
