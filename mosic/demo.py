"""``make demo``: the whole pipeline, end to end, on the built-in synthetic data.

Generate the synthetic set (train and a held-out valid split) -> precompute tracks with ``lk``
and ``oracle`` -> score them against the exact ground truth and draw one clip -> train a small
random ViT with MoSiC on the ``lk`` store -> compare the initial and the trained backbone on the
held-out split with every mosic-eval protocol (--quick) and print the table, the gains and a plot.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from mosic import MosicError
from mosic.cli_common import lines_when_piped


def _banner(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def run(data: Path, stores: Path, videos: int, seed: int, out: Path, train_steps: int | None = None) -> dict:
    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute
    from mosic.precompute.scoring import score_store
    from mosic.precompute.visualize import draw_tracks, save_frames
    from mosic.store_schema.reader import StoreReader, open_frame_source

    out.mkdir(parents=True, exist_ok=True)
    _banner(f"1. synthetic data: {videos} videos -> {data}")
    t = time.perf_counter()
    generate(data, videos=videos, seed=seed, progress=True)  # reuses an identical existing set
    generate(data, videos=max(8, videos // 3), seed=seed, split="valid", progress=True)
    print(f"ready in {time.perf_counter() - t:.1f}s")

    results = {}
    for pipe in ("synthetic", "synthetic-oracle"):
        cfg = load_pipeline(pipe, overrides={"dataset.root": str(data), "stores": str(stores)})
        _banner(f"2. tracks: pipeline {pipe!r} (tracker {cfg.tracker.name}, grid {cfg.tracker.grid})")
        res = precompute(cfg)
        print(f"store {res.store}: {res.done} clips done, {res.failed} failed, "
              f"{res.frames_tracked / max(res.seconds, 1e-9):.0f} frames/s")
        reader = StoreReader(res.store)
        source = open_frame_source(reader)
        scores = score_store(reader, source)
        results[cfg.tracker.name] = {
            "store": str(res.store),
            "clips": res.done,
            "visibility_rate": round(100 * reader.visibility_rate(), 1),
            **{k: round(scores[k], 1) for k in ("delta_avg", "occlusion_accuracy", "average_jaccard")},
        }
        item = reader[0]
        pic = save_frames(draw_tracks(source.read_clip(item.clip), item.tracks, item.visibility),
                          out / f"tracks-{cfg.tracker.name}.png")
        print(f"drew clip 0 to {pic}")

    _banner("3. tracking quality against the exact ground truth (TAP-Vid, percent)")
    print(f"{'tracker':10s} {'clips':>6s} {'visible%':>9s} {'delta_avg':>10s} {'OA':>6s} {'AJ':>6s}")
    for name, r in results.items():
        print(f"{name:10s} {r['clips']:6d} {r['visibility_rate']:9.1f} {r['delta_avg']:10.1f} "
              f"{r['occlusion_accuracy']:6.1f} {r['average_jaccard']:6.1f}")
    results["training"] = _train_and_compare(data, stores, out, train_steps)
    (out / "demo-results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults saved to {out / 'demo-results.json'}")
    return results


def _train_and_compare(data: Path, stores: Path, out: Path, steps: int | None) -> dict:


    from mosic.config import load_pipeline
    from mosic.train.run_log import read_log
    from mosic.train.train import train

    cfg = load_pipeline("synthetic", overrides={"dataset.root": str(data), "stores": str(stores),
                                                "train.max_steps": steps})
    ts = cfg.train
    m = ts.model
    run_dir = out / "train"
    shutil.rmtree(run_dir, ignore_errors=True)
    _banner(f"4. train: {m.name} {m.kwargs} at {m.img_size} px, random init, {ts.max_steps} steps on the lk store")
    t = time.perf_counter()
    res = train(cfg, ts, run_dir)
    lines = [r for r in read_log(run_dir, "train") if "loss" in r]
    curve = read_log(run_dir, "validation")
    print(f"trained in {time.perf_counter() - t:.0f}s: loss {lines[0]['loss']:.3f} (step {lines[0]['step']}) -> "
          f"{lines[-1]['loss']:.3f} (step {lines[-1]['step']})")
    if curve:  # the in-training validation (validate.every): the teacher on the held-out split
        print("validation of the teacher during training (K-means mIoU on the valid split): "
              + ", ".join(f"step {r['step']} {r['val_clustering']:.1f}" for r in curve if "val_clustering" in r)
              + f" ({sum(r['val_seconds'] for r in curve):.0f}s in all); curve: {run_dir / 'validation.png'}")

    _banner("5. evaluate the initial and the trained backbone (mosic-eval --quick, held-out split)")
    from mosic.evaluation.cli import app as eval_app
    from mosic.evaluation.results import load_results

    table = out / "eval"
    for name, weights in (("initial", run_dir / "backbone_init.pth"), ("trained", Path(res["backbone"]))):
        eval_app(["run", "--model", m.name, "--model-kwargs", json.dumps(m.kwargs), "--weights", str(weights),
                  "--dataset", "synthetic", "--root", str(data), "--video-dataset", "synthetic",
                  "--video-root", str(data), "--protocols", "linear,clustering,incontext,video,consistency",
                  "--quick", "--img-size", str(m.img_size), "--name", name, "--out", str(table)],
                 standalone_mode=False)
    rows = {r["name"]: r["figures"] for r in load_results(table.with_suffix(".json"))}
    eval_app(["compare", str(table.with_suffix(".json")), str(table.with_suffix(".json")), "--a-row", "initial",
              "--b-row", "trained", "--plot", str(out / "gains.png")], standalone_mode=False)
    gains = {k: rows["trained"][k] - rows["initial"][k] for k in rows["initial"]
             if rows["initial"][k] is not None and rows["trained"].get(k) is not None}
    up = sorted(k for k, g in gains.items() if g >= 1.0)
    down = sorted(k for k, g in gains.items() if g <= -1.0)
    print(f"\nfigures up by >= 1 point: {', '.join(up) or 'none'}; down by >= 1 point: {', '.join(down) or 'none'}; "
          f"the rest within 1 point.")
    if not up:
        print("Honest reading: this short CPU run did not measurably improve a random tiny ViT. MoSiC post-trains "
              "pretrained DINOv2 features on real video; see docs/does-it-learn.md and the README's 'Reproducing the paper'.")
    return {"steps": res["steps"], "loss_first": lines[0]["loss"], "loss_last": lines[-1]["loss"],
            "validation": [{k: r[k] for k in r if k in ("step", "val_clustering", "val_seconds")} for r in curve],
            "initial": rows["initial"], "trained": rows["trained"], "gains": gains}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mosic.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/synthetic"))
    p.add_argument("--stores", type=Path, default=Path("stores"))
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--train-steps", type=int, default=None, help="default: the synthetic pipeline's max_steps")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    lines_when_piped()  # progress as periodic log lines in pipes and log files, as every command
    try:
        run(a.data, a.stores, a.videos, a.seed, a.out, a.train_steps)
    except MosicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
