"""``mosic-eval``: score a backbone's dense features with the protocols of this line of work and
keep the figures in a results table.

    mosic-eval run --model vit_small_patch14_dinov2 --pretrained --dataset voc --root data/voc \\
        --video-dataset davis --video-root data/davis --protocols linear,clustering,incontext,video \\
        --name dinov2-s14 --out results
    mosic-eval compare base.json mosic.json --plot gains.png
    mosic-eval show --model vit_small_patch14_dinov2 --weights runs/x/backbone.pth \\
        --video-dataset davis --video-root data/davis --out clusters.gif

Presets: ``paper`` (the default: the settings of the reference implementations, the defaults of
the typed protocol settings, :mod:`mosic.evaluation.settings`; docs/evaluation.md) and ``quick``
(``--quick``: scaled down, small inputs, few epochs and iterations, for CPU demos); any setting can
be overridden with ``--set PROTOCOL.KEY=VALUE`` (``--print-config`` shows them all). Every row of
the results records the preset, the backbone (with a hash of its weights file) and, for every
figure, the protocol's full resolved settings and the data set, split and a fingerprint of its
image list; ``compare`` refuses figures computed with different settings unless told to flag them.
The protocols run in :mod:`mosic.evaluation.runner`; this module reads the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from mosic import MosicError
from mosic.cli_common import WEIGHTS_HELP, friendly_errors, lines_when_piped, setup_logging
from mosic.devices import DEVICE_HELP, resolve_device
from mosic.evaluation import runner
from mosic.evaluation.options import (backbone_from_run, check_model_kwargs, heldout_fraction,
                                      model_kwargs_with_sets, parse_fractions, parse_protocols, parse_sets, split_list)
from mosic.evaluation.pictures import cluster_visualisation
from mosic.evaluation.results import load_or_empty, markdown_table, row_for_preset
from mosic.evaluation.results_file import check_results_place
from mosic.files import check_output_place
from mosic.evaluation.settings import PRESETS, PROTOCOLS, VIDEO_MODES, resolve, settings_yaml

app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                  help="Evaluate dense features: linear / clustering / in-context segmentation on images, "
                       "unsupervised video segmentation, trajectory consistency; results tables and comparisons.")

def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def _warn(msg: str) -> None:
    typer.secho(msg, err=True, fg=typer.colors.RED)


def js_md(out: Path) -> tuple[Path, Path]:
    from mosic.evaluation.results_file import results_paths

    return results_paths(out)


def stopped_line(signame: str, state: runner.RunState, protocols: list[str], out: Path) -> str:
    """What a stopped run kept and how to go on."""
    done = ", ".join(state.figures) or "none"
    left = [p for p in protocols if p not in state.finished]
    return (f"stopped by {signame} during {state.current}: the figures that finished are in {out} ({done}); "
            f"to go on, run the same command with --protocols {','.join(left)}")


def preset_name(preset: str, quick: bool) -> str:
    if preset not in PRESETS:
        raise MosicError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return "quick" if quick or preset == "quick" else "paper"


def heldout_note(fraction: float, source: str) -> str:
    """The line that says which videos a YouTube-VOS 'heldout' split holds."""
    return (f"ytvos split 'heldout': the {fraction:.0%} of train's videos left out of training "
            f"(holdout {fraction:g}, from {source})")


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
# the backbone options of run and show, the same on both
MODEL_OPT = typer.Option(None, "--model", help="timm model name, e.g. vit_small_patch14_dinov2 (default with --run, a "
                         "run's backbone.pth or a hub folder: its model)")
RUN_OPT = typer.Option(None, "--run", help="a mosic-train run folder: its backbone.pth with the model name and "
                       "arguments of its config.json")
WEIGHTS_OPT = typer.Option(None, "--weights", help=WEIGHTS_HELP)
PRETRAINED_OPT = typer.Option(False, "--pretrained", help="the hub's weights (the default without "
                              "--weights/--no-pretrained)")
RANDOM_OPT = typer.Option(False, "--no-pretrained", help="a random initialisation (a baseline)")
RANDOM_ALIAS_OPT = typer.Option(False, "--random", hidden=True, help="the same as --no-pretrained")


@app.command("run", help="Evaluate one backbone with the chosen protocols and add its figures to its row of the "
                         "results table OUT.json / OUT.md (replacing only the figures it recomputes; --replace: "
                         "the row afresh). Each protocol's figures are written as soon as it finishes; a failing "
                         "protocol is recorded with its error, the others go on, and the exit status is 1. Image "
                         "protocols use --dataset/--root, video ones --video-dataset/--video-root; 'consistency' "
                         "needs a synthetic set (either one).")
@friendly_errors
def run(
    model: Optional[str] = MODEL_OPT,
    run_dir: Optional[Path] = RUN_OPT,
    weights: Optional[Path] = WEIGHTS_OPT,
    pretrained: bool = PRETRAINED_OPT,
    random_init: bool = RANDOM_OPT,
    random_alias: bool = RANDOM_ALIAS_OPT,
    model_kwargs: Optional[str] = typer.Option(None, "--model-kwargs", help="extra timm create_model arguments as a "
                                               "JSON object or YAML mapping (model.kwargs), e.g. '{\"depth\": 2, \"embed_dim\": 48, \"num_heads\": 3}'"),
    img_size: Optional[int] = typer.Option(None, "--img-size", min=14, help="input size for every protocol "
                                           "(default: each protocol's published size)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="image data set: voc | ade20k | synthetic"),
    root: Optional[Path] = typer.Option(None, "--root", help="image data set folder"),
    train_split: Optional[str] = typer.Option(None, "--train-split", help="default: trainaug (voc), training (ade20k), train (synthetic)"),
    val_split: Optional[str] = typer.Option(None, "--val-split", help="default: val (voc), validation (ade20k), valid (synthetic)"),
    video_dataset: Optional[str] = typer.Option(None, "--video-dataset", help="video data set: davis | ytvos | synthetic"),
    video_root: Optional[Path] = typer.Option(None, "--video-root", help="video data set folder"),
    video_split: Optional[str] = typer.Option(None, "--video-split", help="default: val (davis), heldout (ytvos: the "
                                              "train videos that training leaves out; train: all), valid (synthetic)"),
    video_frames: int = typer.Option(4, "--video-frames", min=1, help="sorted random frames per clip (TimeTuning: 4)"),
    holdout: Optional[float] = typer.Option(None, "--holdout", help="ytvos split heldout: the fraction of train's "
                                            "videos that training left out (default: the run's train.holdout "
                                            "with --run or a run's backbone.pth, else the ytvos pipeline's)"),
    protocols: str = typer.Option("linear,clustering,incontext,video", "--protocols",
                                  help="comma-separated: " + ", ".join(PROTOCOLS)),
    fractions: str = typer.Option("1/128,1", "--fractions", help="in-context: fractions of the train split"),
    fraction_seeds: Optional[int] = typer.Option(None, "--fraction-seeds", min=1, help="in-context: draws averaged "
                                                 "for each fraction below 1 (default 5; --quick 1): the reference's fixed "
                                                 "lists for 1/128, 1/64, 1/8 of VOC trainaug and ADE20K training, seeded "
                                                 "random draws otherwise"),
    ks: Optional[str] = typer.Option(None, "--ks", help="clustering: K values (default: VOC 21, 500; ADE20K 151; else the classes, 100, 300, 500)"),
    video_modes: str = typer.Option("frame", "--video-modes", help="video: frame (F-clustering), clip, dataset; comma-separated"),
    sets: List[str] = typer.Option([], "--set", help="KEY=VALUE (repeatable): any protocol setting as PROTOCOL.KEY, e.g. linear.epochs=5, or "
                                 "the backbone's timm arguments as model.kwargs.KEY, e.g. model.kwargs.depth=2; "
                                 "VALUE is read as YAML"),
    print_config: bool = typer.Option(False, "--print-config", help="print the protocols' settings (the preset "
                                      "and --set applied) as YAML and exit"),
    quick: bool = typer.Option(False, "--quick", help="the quick preset: scaled-down settings for a CPU demo "
                               "(small inputs, few epochs); same as --preset quick"),
    preset: str = typer.Option("paper", "--preset", help="paper (the reference implementations' settings) | quick"),
    name: Optional[str] = typer.Option(None, "--name", help="row name (default: model + weights)"),
    out: Path = typer.Option(Path("results"), "--out", help="results table: writes OUT.json and OUT.md (under a lock "
                             "on OUT, so concurrent runs keep every figure; an OUT.md mosic did not write is refused)"),
    merge: bool = typer.Option(False, "--merge", hidden=True, help="kept for old scripts: adding to the row is the default"),
    replace: bool = typer.Option(False, "--replace", help="drop the row's earlier figures instead of adding to them "
                                 "(other rows of the table stay)"),
    seed: int = typer.Option(0, "--seed", help="seed for subsets, clip frames, K-means"),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    if print_config:
        user = parse_sets(sets)
        user.pop("model", None)
        typer.echo(settings_yaml(parse_protocols(protocols), preset_name(preset, quick), user), nl=False)
        return
    from mosic.evaluation.datasets import IMAGE_SPLITS, SEG_KINDS, VIDEO_KINDS, VIDEO_SPLITS  # cv2: not for --help

    if merge and replace:
        raise MosicError("give only one of --merge (the default) and --replace")
    random_init = random_init or random_alias
    if sum([weights is not None or run_dir is not None, pretrained, random_init]) > 1:
        raise MosicError("give only one of --weights PATH (or --run DIR), --pretrained, --no-pretrained")
    bb = backbone_from_run(model, weights, run_dir, model_kwargs)
    if bb.note:
        typer.echo(bb.note, err=True)
    model, weights = bb.model, bb.weights
    preset = preset_name(preset, quick)
    protos = parse_protocols(protocols)
    user = parse_sets(sets)
    model_sets = user.pop("model", {})
    mkw = model_kwargs_with_sets(bb.kwargs, model_sets)
    check_model_kwargs(model, mkw, model_sets, model_kwargs)
    fracs = parse_fractions(fractions) if "incontext" in protos else []
    modes = split_list(video_modes)
    for m in modes:
        if m not in VIDEO_MODES:
            raise MosicError(f"--video-modes: unknown mode {m!r} ({', '.join(VIDEO_MODES)})")
    image_protos = [p for p in protos if p in ("linear", "clustering", "incontext")]
    if image_protos:
        if dataset is None or root is None:
            raise MosicError(f"protocols {', '.join(image_protos)} need --dataset and --root")
        if dataset not in SEG_KINDS:
            raise MosicError(f"--dataset must be one of {', '.join(SEG_KINDS)}, got {dataset!r}")
    if "video" in protos:
        if video_dataset is None or video_root is None:
            raise MosicError("protocol video needs --video-dataset and --video-root")
        if video_dataset not in VIDEO_KINDS:
            raise MosicError(f"--video-dataset must be one of {', '.join(VIDEO_KINDS)}, got {video_dataset!r}")
    syn_root = syn_split = None
    if "consistency" in protos:
        if video_dataset == "synthetic" and video_root is not None:
            syn_root, syn_split = video_root, video_split or VIDEO_SPLITS["synthetic"]
        elif dataset == "synthetic" and root is not None:
            syn_root, syn_split = root, val_split or IMAGE_SPLITS["synthetic"][1]
        else:
            raise MosicError("protocol consistency needs a synthetic set: --video-dataset synthetic --video-root DIR "
                             "(or --dataset synthetic --root DIR)")
    heldout = note = None  # a YouTube-VOS 'heldout' split scores the videos the run left out
    if "video" in protos and video_dataset == "ytvos" and (video_split or VIDEO_SPLITS["ytvos"]) == "heldout":
        heldout, source = heldout_fraction(holdout, bb)
        note = heldout_note(heldout, source)
    for p in protos:  # fail before any work if a protocol module is missing
        runner.protocol_function(p)
    table = check_results_place(out)  # writable, and no file there that mosic did not write


    device = str(resolve_device(device))
    from mosic.backbones import preflight  # torch: not for --help

    preflight(model, weights, not random_init and weights is None, mkw)
    wlabel = runner.weights_label(weights, pretrained, random_init)
    asked = name or f"{model} ({wlabel})"
    row_name = row_for_preset(table, asked, preset, replace)
    if row_name != asked:
        typer.echo(f"row {asked!r} holds figures of preset {next(r for r in table if r['name'] == asked)['preset']}; "
                   f"this {preset} run writes row {row_name!r} (--replace: write row {asked!r} afresh)", err=True)
    nets = runner.Backbones(model, weights, not random_init and weights is None, mkw, img_size, device)
    data = runner.open_data(protos, dataset, root, train_split, val_split, video_dataset, video_root, video_split,
                            video_frames, seed, heldout)
    provenance = runner.backbone_provenance(model, weights, pretrained, random_init, mkw)
    if bb.run_size is not None:
        provenance["run_img_size"] = bb.run_size
    ctx = runner.RunContext(
        protocols=protos, preset=preset, user=user, nets=nets, data=data, img_size=img_size, device=device, seed=seed,
        dataset=dataset, video_dataset=video_dataset, fractions=fracs,
        fraction_draws=fraction_seeds or (1 if preset == "quick" else 5), ks=ks, video_modes=modes,
        video_frames=video_frames, heldout=heldout, syn_root=syn_root, syn_split=syn_split, out=out,
        row_name=row_name, model=model, weights_label=wlabel, provenance=provenance, replace=replace,
        table=table, log=_log, warn=_warn)
    runner.check_run(ctx)
    state = runner.RunState()
    from mosic.stopping import stop_signals

    with stop_signals() as stop:  # Ctrl-C and SIGTERM (a scheduler's stop) alike
        try:
            runner.run_protocols(ctx, state)
        except KeyboardInterrupt:
            typer.secho(stopped_line(stop.signame or "SIGINT", state, protos, out), err=True, fg=typer.colors.YELLOW)
            raise typer.Exit(stop.exit_code) from None

    rows = load_or_empty(out)
    js, md = js_md(out)
    typer.echo(markdown_table([r for r in rows if r["name"] == row_name]))
    if note:
        typer.echo(note)
    hub = run_dir / "hub" if run_dir is not None else None
    if hub is not None and (hub / "README.md").is_file():  # the run's model card shows its results
        from mosic.backbones import add_results_to_card  # torch: not for --help

        add_results_to_card(hub, markdown_table([r for r in rows if r["name"] == row_name]))
        typer.echo(f"added the results to the model card {hub / 'README.md'}")
    if state.replaced:
        typer.echo(f"replaced {len(state.replaced)} earlier figure(s) of row {row_name!r}: {', '.join(state.replaced)}")
    if state.superseded:
        typer.echo(f"{len(state.superseded)} of them were computed with other settings ("
                   + "; ".join(f"{s['figure']}: {', '.join(s['differences'] or ['not recorded'])[:200]}"
                               for s in state.superseded)
                   + f"): their earlier values are kept in {js} under the row's 'superseded'")
    kept = [k for r in rows if r["name"] == row_name for k in r.get("figures", {}) if k not in state.figures]
    if kept:
        typer.echo(f"kept {len(kept)} figure(s) of row {row_name!r} that this run did not compute "
                   f"(--replace to drop them): {', '.join(kept)}")
    typer.echo(f"wrote {js} and {md}")
    if state.errors:
        typer.secho(f"error: {len(state.errors)} protocol(s) failed (recorded in {md}): "
                    + "; ".join(f"{k}: {v}" for k, v in state.errors.items()), err=True, fg=typer.colors.RED)
        raise typer.Exit(1)


@app.command("compare", help="Compare two results tables: every figure of A and B side by side with the gain "
                             "B - A (Markdown on stdout); figures computed with different settings are refused "
                             "(--allow-mismatch: flagged). A row of B evaluated from a training run's backbone "
                             "is compared with the row of A evaluated from that run's backbone_init.pth; other "
                             "rows pair up by name; a single-row A is compared with every row of B; otherwise "
                             "name them with --a-row/--b-row. The output says which baseline was used.")
@friendly_errors
def compare_cmd(
    a: Path = typer.Argument(..., help="results A (the baseline), .json"),
    b: Path = typer.Argument(..., help="results B, .json"),
    a_row: Optional[str] = typer.Option(None, "--a-row", help="row of A to compare"),
    b_row: Optional[str] = typer.Option(None, "--b-row", help="row of B to compare"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="also draw the gains as a bar chart (.png)"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the Markdown to this file"),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="show figures computed with different "
                                        "settings (marked ≠, differences listed) instead of refusing"),
) -> None:
    from mosic.evaluation.results import compare, plot_gains

    for place, what in ((out, "--out"), (plot, "--plot")):
        if place is not None:
            check_output_place(place, what)
    text = compare(a, b, a_row, b_row, allow_mismatch=allow_mismatch)
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if plot is not None:
        typer.echo(f"wrote {plot_gains(a, b, plot, a_row, b_row)}", err=True)


@app.command("show", help="Draw a clip's K-means clusters (TimeTuning's clustering, K = labels present) over its "
                          "frames: OUT .gif (animation) or .png (frames above overlays). Clusters are matched to "
                          "the labels so a class keeps its colour (--raw: cluster ids as found).")
@friendly_errors
def show(
    model: Optional[str] = MODEL_OPT,
    run_dir: Optional[Path] = RUN_OPT,
    weights: Optional[Path] = WEIGHTS_OPT,
    pretrained: bool = PRETRAINED_OPT,
    random_init: bool = RANDOM_OPT,
    random_alias: bool = RANDOM_ALIAS_OPT,
    model_kwargs: Optional[str] = typer.Option(None, "--model-kwargs", help="extra timm arguments (model.kwargs), as on run"),
    video_dataset: str = typer.Option(..., "--video-dataset", help="davis | ytvos | synthetic"),
    video_root: Path = typer.Option(..., "--video-root", help="video data set folder"),
    video_split: Optional[str] = typer.Option(None, "--video-split"),
    video_frames: int = typer.Option(4, "--video-frames", min=1, help="frames of the clip"),
    holdout: Optional[float] = typer.Option(None, "--holdout", help="ytvos split heldout: the fraction of videos "
                                            "training left out (default: the train.holdout of the config.json "
                                            "beside --weights, else the ytvos pipeline's)"),
    clip: int = typer.Option(0, "--clip", min=0, help="which clip (video index)"),
    mode: str = typer.Option("clip", "--mode", help="clip (one K-means over the clip) or frame"),
    k: Optional[int] = typer.Option(None, "--k", min=1, help="clusters (default: labels present)"),
    img_size: Optional[int] = typer.Option(None, "--img-size", min=14, help="input size (default 224; --quick 112)"),
    eval_size: Optional[int] = typer.Option(None, "--eval-size", min=1, help="clustering resolution (default: input size)"),
    raw: bool = typer.Option(False, "--raw", help="raw cluster ids instead of label-matched colours"),
    quick: bool = typer.Option(False, "--quick", help="small input, few K-means iterations"),
    out: Path = typer.Option(Path("clusters.gif"), "--out", help=".gif or .png"),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
) -> None:
    from mosic.evaluation.datasets import VIDEO_KINDS, VIDEO_SPLITS, open_video_dataset  # cv2, torch: not for --help
    from mosic.evaluation.protocols.video import show_clusters

    random_init = random_init or random_alias
    if sum([weights is not None or run_dir is not None, pretrained, random_init]) > 1:
        raise MosicError("give only one of --weights PATH (or --run DIR), --pretrained, --no-pretrained")
    if video_dataset not in VIDEO_KINDS:
        raise MosicError(f"--video-dataset must be one of {', '.join(VIDEO_KINDS)}, got {video_dataset!r}")
    if out.suffix.lower() not in (".gif", ".png"):
        raise MosicError(f"--out must end in .gif or .png, got {out}")
    check_output_place(out, "--out")
    bb = backbone_from_run(model, weights, run_dir, model_kwargs)
    if bb.note:
        typer.echo(bb.note, err=True)
    model, weights = bb.model, bb.weights
    check_model_kwargs(model, bb.kwargs, {}, model_kwargs)
    device = str(resolve_device(device))
    v = resolve("video", "quick" if quick else "paper")
    size = img_size or v.img_size
    split = video_split or VIDEO_SPLITS[video_dataset]
    heldout = None
    if video_dataset == "ytvos" and split == "heldout":
        heldout, source = heldout_fraction(holdout, bb)
        typer.echo(heldout_note(heldout, source), err=True)
    vds = open_video_dataset(video_dataset, video_root, split, frames=video_frames, seed=seed, holdout=heldout)
    if clip >= len(vds):
        raise MosicError(f"--clip {clip}: {video_dataset} has {len(vds)} clips")
    sample = vds[clip]
    nets = runner.Backbones(model, weights, not random_init and weights is None, bb.kwargs, None, device)
    size = nets.input_size(size)
    net = nets.get(size)
    maps, miou = show_clusters(net, sample, mode=mode, img_size=size, eval_size=eval_size or v.eval_size, k=k,
                               niter=v.niter, nredo=v.nredo, seed=seed, device=device, matched=not raw)
    path = cluster_visualisation(sample.frames, maps, out)
    typer.echo(f"clip {sample.video_id} frames {list(sample.frame_indices)}: {mode} clustering mIoU {miou:.1f}; wrote {path}")


def main() -> None:
    lines_when_piped()  # progress as periodic log lines in pipes and log files
    app()


if __name__ == "__main__":
    sys.exit(main())
