"""Do the tracks matter? Train the same small ViT on the same synthetic clips with (a) the exact
(oracle) tracks, (b) static tracks (every frame holds the first-frame point: no motion) and (c)
x/y-swapped tracks (the transposed positions), for several seeds, and probe each trained backbone
on held-out videos (evaluation/synthetic_probe.py): cluster mIoU, track consistency,
correspondence, and the motion margin (on points that moved to another patch: first-frame cluster
kept along the track minus kept at the place the point left).

    python bench/bench_learning.py [--seeds 3] [--steps 300] [--pretrain-steps 0] [--clip-length 6] [--clip-step 12]

Any pipeline and store (``--pipeline``): the same three-way comparison on real data, e.g.

    python bench/bench_learning.py --pipeline ytvos --store stores/ytvos-...zarr --weights dinov2_vits14.pth \
        --steps 100 --seeds 3

trains the pipeline's own recipe (every setting from ``pipelines.yaml``; ``--set train.KEY=VALUE``
changes one) from ``--weights`` on the store's tracks (CoTracker on YouTube-VOS) and on its static
and x/y-swapped copies (written next to it, or into ``--controls DIR``), and measures each run
with the in-training validation (``train/validate.py``: the teacher on the pipeline's held-out
set, Pascal VOC val for YouTube-VOS, every ``--validate-every`` steps): the validation figure at
the end, its change from step 0, and the training loss, per variant, with the paired differences
(a) - (b), (a) - (c). Cost: 3 variants x ``--seeds`` training runs of ``--steps`` steps plus their
validations (not measured on a GPU here; see docs/does-it-learn.md).

``--pretrain-steps P`` first trains the random ViT for P steps on static tracks (MoSiC's
clustering without motion, from a seed no post-training run uses) and starts every run from that
backbone, so that post-training starts from features that are not random. Every training setting
is given here explicitly, not taken from the pipeline's defaults. Figures: mean +- sd over seeds
of each measure after training, and of its change from the starting backbone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

KEYS = ("cluster_miou", "track_consistency", "correspondence", "motion_margin", "track_kept_moved",
        "location_kept_moved", "origin_preferred", "origin_nearest")
#: the trained model (backbone, head, prototypes) on held-out clips with the exact tracks, and the
#: training loss (mean of the second half of the logged steps, against the run's own targets)
PRED_KEYS = ("track_prediction", "prediction_moved", "prediction_location", "prediction_margin", "train_loss")
VARIANTS = ("tracks", "static", "swapped")


def settings(data: Path, stores: Path, a, seed: int, steps: int, weights: str | None = None,
             store: str | None = None, tracker: str = "oracle") -> dict:
    """Every setting the runs rely on, as pipeline overrides."""
    return {
        "dataset.root": str(data), "dataset.split": "train", "stores": str(stores),
        "clips.length": a.clip_length, "clips.step": a.clip_step, "clips.clips_per_video": a.clips_per_video,
        "clips.short_videos": "adapt", "clips.track_size": None,
        "tracker.name": tracker, "tracker.grid": a.grid, "tracker.batch_size": 16,
        "train.store": store,
        "train.model.name": "vit_small_patch14_dinov2", "train.model.pretrained": False,
        "train.model.weights": weights, "train.model.img_size": a.img_size,
        "train.model.kwargs": {"depth": a.depth, "embed_dim": a.width, "num_heads": 3, "init_values": 0.1},
        "train.model.train_blocks": a.depth, "train.model.head_hidden": [256, 256], "train.model.head_dim": 64,
        "train.model.num_prototypes": a.prototypes, "train.model.prototype_grad": a.prototype_grad,
        "train.loss.temperature": 0.1, "train.loss.sinkhorn_eps": 0.06, "train.loss.sinkhorn_iters": 3,
        "train.loss.hard": True, "train.loss.symmetric": False, "train.loss.normalize": "visible",
        "train.loss.marginals": "visible", "train.loss.teacher_sampling": "bilinear",
        "train.loss.student_sampling": "nearest",
        "train.optim.lr_backbone": a.lr_backbone, "train.optim.lr_head": a.lr_head, "train.optim.weight_decay": 0.01,
        "train.optim.warmup_steps": 10, "train.optim.min_lr_ratio": 0.0, "train.optim.clip_grad": 0.0,
        "train.batch_size": a.batch_size, "train.epochs": 1000, "train.max_steps": steps, "train.mask_ratio": 0.1,
        "train.ema": 0.99, "train.crop_scale": [0.4, 1.0], "train.flip_p": 0.5, "train.num_workers": a.workers,
        "train.seed": seed, "train.device": "cpu", "train.precision": "fp32", "train.checkpoint_every": steps,
        # every stored clip in every epoch, and every stored point inside the crop (a store grid below
        # what a per-crop grid of that size needs), as the figures in docs/does-it-learn.md were measured
        "train.clip_sampling": "all", "train.grid": a.grid,
        "train.log_every": max(1, steps // 10),
        "train.validate.every": 0,
    }


def summarise(rows: list[dict], key: str) -> tuple[float, float]:
    v = [r[key] for r in rows]
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _paired(rows: list[dict], variants: list[str], keys: tuple[str, ...], summary: dict) -> None:
    """Print and record (a) tracks minus each control, paired by seed."""
    seeds = sorted({r["seed"] for r in rows})
    print("\n(a) tracks minus each control, paired by seed (mean +- sd; seeds where (a) is higher):")
    for k in keys:
        by = {(r["seed"], r["variant"]): r.get(k) for r in rows}
        parts = []
        for v in variants:
            if v == "tracks":
                continue
            d = [by[(s, "tracks")] - by[(s, v)] for s in seeds
                 if by.get((s, "tracks")) is not None and by.get((s, v)) is not None]
            if not d:
                continue
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            summary.setdefault(k, {})[f"tracks_minus_{v}"] = {"mean": statistics.mean(d), "sd": sd,
                                                             "higher": sum(x > 0 for x in d)}
            parts.append(f"vs {v}: {statistics.mean(d):+6.2f} +- {sd:4.2f} ({sum(x > 0 for x in d)}/{len(d)})")
        print(f"  {k:22s} " + "   ".join(parts))


def run_pipeline(a) -> dict:
    """The three-way comparison on any pipeline and store, measured by the in-training validation."""
    from mosic.config.strict import load_yaml

    from mosic.config import load_pipeline
    from mosic.store_schema.controls import write_control_store
    from mosic.store_schema.reader import StoreReader
    from mosic.train.stores import resolve_store
    from mosic.train.train import train
    from mosic.train.validate import read_curve

    over: dict = {}
    for s in a.sets:
        k, sep, v = s.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {s!r}")
        over[k] = load_yaml(v)
    base = load_pipeline(a.pipeline, overrides=over)
    store = Path(str(a.store or resolve_store(base, base.train)))
    tracker = StoreReader(store).spec.tracker.name
    controls = Path(a.controls) if a.controls else store.parent
    variants = a.variants.split(",")
    paths = {"tracks": (str(store), tracker)}
    for v in variants:
        if v != "tracks":
            paths[v] = (str(write_control_store(store, v, controls)), f"{tracker}+{v}")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for v in variants:
            st, name = paths[v]
            cfg = load_pipeline(a.pipeline, overrides={
                **over, "tracker.name": name, "train.store": st, "train.seed": seed, "train.max_steps": a.steps,
                "train.model.weights": a.weights, "train.validate.every": a.validate_every})
            ts = cfg.train
            out = work / f"{v}-seed{seed}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            res = train(cfg, ts, out, progress=False)
            logged = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
            curve = read_curve(out / "log.jsonl")
            row = {"seed": seed, "variant": v, "steps": res["steps"], "minutes": (time.perf_counter() - t0) / 60,
                   "train_loss": statistics.mean(r["loss"] for r in logged[len(logged) // 2:]),
                   "val_seconds": sum(r["val_seconds"] for r in curve)}
            for k in sorted({k for r in curve for k in r if k.startswith("val_") and k != "val_seconds"}):
                row[k] = curve[-1][k]
                row[f"{k}_gain"] = curve[-1][k] - curve[0][k]
                row[f"{k}_curve"] = [(r["step"], r[k]) for r in curve]
            rows.append(row)
            print(f"seed {seed} {v:8s} loss {row['train_loss']:.3f}  " + "  ".join(
                f"{k} {row[k]:.1f} ({row[k + '_gain']:+.1f})" for k in row if k.startswith("val_")
                and not k.endswith(("_gain", "_curve")) and k != "val_seconds") + f"  {row['minutes']:.1f} min",
                flush=True)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps({"args": vars(a), "runs": rows}, indent=2))
    keys = ("train_loss", *sorted({k for r in rows for k in r if k.startswith("val_")
                                   and not k.endswith("_curve") and k != "val_seconds"}))
    summary: dict = {}
    print(f"\n{a.pipeline}: {len(rows) // max(1, len(variants))} seeds x {a.steps} steps from "
          f"{a.weights or 'the pipeline weights'}; store {store.name}; mean +- sd over seeds")
    for k in keys:
        line = f"{k:26s}"
        for v in variants:
            vals = [r[k] for r in rows if r["variant"] == v and k in r]
            if vals:
                m, sd = statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
                summary.setdefault(k, {})[v] = {"mean": m, "sd": sd}
                line += f" {v} {m:7.2f} +- {sd:4.2f}"
        print(line)
    if "tracks" in variants and len(variants) > 1:
        _paired(rows, variants, keys, summary)
    Path(a.out).write_text(json.dumps({"args": vars(a), "runs": rows, "summary": summary}, indent=2))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return {"runs": rows, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--pretrain-steps", type=int, default=0)
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--valid-videos", type=int, default=16)
    p.add_argument("--clip-length", type=int, default=6)
    p.add_argument("--clip-step", type=int, default=12)
    p.add_argument("--clips-per-video", type=int, default=2)
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--prototypes", type=int, default=16)
    p.add_argument("--prototype-grad", default="raw", choices=("raw", "normalized"),
                   help="raw: the official prototype gradient; normalized: through F.normalize")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr-backbone", type=float, default=3e-4)
    p.add_argument("--lr-head", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--probe-step", type=int, default=12, help="frames between the probe's 4 frames")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default=None, help="keep data, stores and runs here (default: a temporary folder)")
    p.add_argument("--out", default=str(HERE / "results" / "learning.json"))
    p.add_argument("--pipeline", default=None, help="any pipeline: its recipe, measured by the in-training "
                   "validation (default: the built-in synthetic comparison with its probes)")
    p.add_argument("--store", default=None, help="the tracks (--pipeline; default: the store the pipeline finds)")
    p.add_argument("--weights", default=None, help="backbone weights to start from (--pipeline)")
    p.add_argument("--controls", default=None, help="folder for the static and swapped stores (default: the store's)")
    p.add_argument("--validate-every", type=int, default=25, help="steps between validations (--pipeline)")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="pipeline override KEY=VALUE, e.g. train.batch_size=16 (--pipeline; repeatable)")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    if a.pipeline:
        run_pipeline(a)
        return
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.evaluation.synthetic_probe import probe
    from mosic.precompute.runner import precompute
    from mosic.store_schema.controls import write_control_store
    from mosic.backbones import create_backbone
    from mosic.train.model import MoSiCModel
    from mosic.train.probe import track_prediction
    from mosic.train.train import train

    variants = a.variants.split(",")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data, stores = work / "synthetic", work / "stores"
    generate(data, videos=a.videos, seed=0)
    generate(data, videos=a.valid_videos, seed=0, split="valid")
    cfg = load_pipeline("synthetic-oracle", overrides=settings(data, stores, a, 0, a.steps))
    store = precompute(cfg, progress=False).store
    held_out = precompute(load_pipeline("synthetic-oracle", overrides={
        **settings(data, stores, a, 0, a.steps), "dataset.split": "valid"}), progress=False).store
    paths = {"tracks": (str(store), "oracle")}
    for v in ("static", "swapped"):
        paths[v] = (str(write_control_store(store, v, stores)), f"oracle+{v}")

    def run(name: str, seed: int, steps: int, variant: str, weights: str | None):
        st, tracker = paths[variant]
        c = load_pipeline("synthetic-oracle", overrides=settings(data, stores, a, seed, steps, weights, st, tracker))
        ts = c.train
        out = work / name
        if (out / "result.json").is_file():
            return json.loads((out / "result.json").read_text()), ts
        shutil.rmtree(out, ignore_errors=True)
        return train(c, ts, out, progress=False), ts

    def measure(ts, weights: str) -> dict:
        m = ts.model
        bb = create_backbone(m.name, pretrained=False, img_size=m.img_size, **m.kwargs)
        bb.load_state_dict(torch.load(weights))
        r = probe(bb, data, split="valid", img_size=m.img_size, step=a.probe_step, seed=0)
        return {k: r[k] for k in (*KEYS, "moved_fraction")}

    def predict(ts, run_dir: Path) -> dict:
        m = ts.model
        ck = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False)
        nets = []
        for key in ("student", "teacher"):
            bb = create_backbone(m.name, pretrained=False, img_size=m.img_size, **m.kwargs)
            net = MoSiCModel(bb, m.num_prototypes, m.head_hidden, m.head_dim, m.train_blocks,
                             prototype_grad=m.prototype_grad)
            net.load_state_dict(ck[key])
            nets.append(net)
        return track_prediction(*nets, held_out, m.img_size, sinkhorn_eps=ts.loss.sinkhorn_eps,
                                sinkhorn_iters=ts.loss.sinkhorn_iters)

    init = None
    if a.pretrain_steps:
        res, _ = run("pretrain", 1000, a.pretrain_steps, "static", None)
        init = res["backbone"]
    rows = []
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        start = None
        for v in variants:
            t0 = time.perf_counter()
            res, ts = run(f"{v}-seed{seed}", seed, a.steps, v, init)
            if start is None:  # the starting backbone is the same for every variant of a seed
                start = measure(ts, str(work / f"{v}-seed{seed}" / "backbone_init.pth"))
            after = measure(ts, res["backbone"])
            after.update(predict(ts, work / f"{v}-seed{seed}"))
            logged = [r["loss"] for r in map(json.loads, (work / f"{v}-seed{seed}" / "log.jsonl").read_text().splitlines())
                      if "loss" in r]
            after["train_loss"] = statistics.mean(logged[len(logged) // 2:])  # against its own targets
            row = {"seed": seed, "variant": v, "loss": res.get("loss"), "minutes": (time.perf_counter() - t0) / 60,
                   **{f"{k}_start": start[k] for k in KEYS}, **{k: after[k] for k in (*KEYS, *PRED_KEYS)},
                   "moved_fraction": after["moved_fraction"]}
            rows.append(row)
            print(f"seed {seed} {v:8s} " + "  ".join(f"{k} {start[k]:.1f}->{after[k]:.1f}" for k in KEYS)
                  + "  " + "  ".join(f"{k} {after[k]:.1f}" for k in PRED_KEYS), flush=True)
            out = Path(a.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"args": vars(a), "runs": rows}, indent=2))

    seeds = sorted({r["seed"] for r in rows})
    print(f"\n{len(seeds)} seeds x {a.steps} steps" + (f" after {a.pretrain_steps} static pretraining steps" if a.pretrain_steps else ", random init")
          + f"; clips {a.clip_length} x step {a.clip_step}; {a.videos} training videos, {a.valid_videos} held out; mean +- sd over seeds")
    print(f"{'measure':22s} {'start':>7s} " + " ".join(f"{v:>15s}" for v in variants))
    summary = {}
    for k in (*KEYS, *PRED_KEYS):
        start = [r[f"{k}_start"] for r in rows if r["variant"] == variants[0] and f"{k}_start" in r]
        line = f"{k:22s} " + (f"{statistics.mean(start):7.1f} " if start else f"{'-':>7s} ")
        for v in variants:
            m, sd = summarise([r for r in rows if r["variant"] == v], k)
            summary.setdefault(k, {})[v] = {"mean": m, "sd": sd}
            line += f" {m:7.1f} +- {sd:4.1f}"
        summary[k]["start"] = statistics.mean(start) if start else None
        print(line)
    if "tracks" in variants and len(variants) > 1:
        # same seed: same initial weights, same batches and crops, so the differences are paired
        print("\n(a) tracks minus each control, paired by seed (mean +- sd; seeds where (a) is higher):")
        for k in (*KEYS, *PRED_KEYS):
            by = {(r["seed"], r["variant"]): r[k] for r in rows}
            parts = []
            for v in variants:
                if v == "tracks":
                    continue
                d = [by[(s, "tracks")] - by[(s, v)] for s in seeds]
                sd = statistics.stdev(d) if len(d) > 1 else 0.0
                summary[k][f"tracks_minus_{v}"] = {"mean": statistics.mean(d), "sd": sd, "higher": sum(x > 0 for x in d)}
                parts.append(f"vs {v}: {statistics.mean(d):+6.2f} +- {sd:4.2f} ({sum(x > 0 for x in d)}/{len(d)})")
            print(f"  {k:22s} " + "   ".join(parts))
    Path(a.out).write_text(json.dumps({"args": vars(a), "runs": rows, "summary": summary}, indent=2))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
