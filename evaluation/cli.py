"""``mosic-eval``: score a backbone's dense features with the protocols of this line of work and
keep the figures in a results table.

    mosic-eval run --model vit_small_patch14_dinov2 --pretrained --dataset voc --root data/voc \\
        --video-dataset davis --video-root data/davis --protocols linear,clustering,incontext,video \\
        --name dinov2-s14 --out results
    mosic-eval compare base.json mosic.json --plot gains.png
    mosic-eval show --model vit_small_patch14_dinov2 --weights runs/x/backbone.pth \\
        --video-dataset davis --video-root data/davis --out clusters.gif

Presets: ``paper`` (the default: the settings of the reference implementations, which are the
protocol functions' defaults; docs/evaluation.md) and ``quick`` (``--quick``: scaled down, small
inputs, few epochs and iterations, for CPU demos); any setting can be overridden with
``--set PROTOCOL.KEY=VALUE``. Every row of the results records the preset, the backbone (with a
hash of its weights file) and, for every figure, the protocol's full resolved settings and the data
set, split and a fingerprint of its image list; ``compare`` refuses figures computed with different
settings unless told to flag them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, List, Optional

import numpy as np
import typer

from mosic import MosicError
from mosic.cli_common import check_like_default, friendly_errors, lines_when_piped, parse_model_kwargs, setup_logging
from mosic.config import nearest, parse_set_value
from mosic.devices import DEVICE_HELP, resolve_device
from mosic.files import file_sha256

app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                  help="Evaluate dense features: linear / clustering / in-context segmentation on images, "
                       "unsupervised video segmentation, trajectory consistency; results tables and comparisons.")

PROTOCOLS = ("linear", "clustering", "incontext", "video", "consistency")
IMAGE_KINDS = ("voc", "ade20k", "synthetic")
VIDEO_KINDS = ("davis", "ytvos", "synthetic")

# where each protocol lives: (module, function)
_FUNCS = {
    "linear": ("mosic.evaluation.protocols.linear", "linear_segmentation"),
    "clustering": ("mosic.evaluation.protocols.clustering", "frozen_clustering"),
    "incontext": ("mosic.evaluation.protocols.incontext", "incontext_segmentation"),
    "video": ("mosic.evaluation.protocols.video", "video_segmentation"),
    "consistency": ("mosic.evaluation.protocols.video", "temporal_consistency"),
}

PRESETS = ("paper", "quick")

# --quick: settings scaled down for a CPU demo (unknown keys are dropped per protocol signature)
QUICK = {
    "linear": dict(img_size=112, feat_size=28, epochs=3, step_at=2, batch_size=16, augment=False, val_mask_size=28),
    "clustering": dict(img_size=112, niter=10, nredo=1, seeds=(0,)),
    "incontext": dict(img_size=112, memory_size=10_240, augment_passes=1),
    "video": dict(img_size=112, eval_size=56, niter=10, nredo=1),
    "consistency": dict(img_size=112, max_videos=6),
}

# default splits of each data set kind: (train, val)
IMAGE_SPLITS = {"voc": ("trainaug", "val"), "ade20k": ("training", "validation"), "synthetic": ("train", "valid")}
# (YouTube-VOS: the challenge's valid/test meta.json hide the categories, so the videos of its train
# split that training leaves out are scored: mosic.data.holdout)
VIDEO_SPLITS = {"davis": "val", "ytvos": "heldout", "synthetic": "valid"}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def parse_protocols(text: str) -> list[str]:
    out = []
    for p in _split_list(text):
        p = {"in-context": "incontext", "hummingbird": "incontext", "tc": "consistency"}.get(p.lower(), p.lower())
        if p not in PROTOCOLS:
            raise MosicError(f"--protocols: unknown protocol {p!r} (choose from {', '.join(PROTOCOLS)})")
        if p not in out:
            out.append(p)
    if not out:
        raise MosicError("--protocols: give at least one of " + ", ".join(PROTOCOLS))
    return out


def parse_fractions(text: str) -> list[tuple[str, float]]:
    """'1/128,1' -> [('1/128', 0.0078125), ('1', 1.0)]."""
    out = []
    for t in _split_list(text):
        try:
            f = Fraction(t)
        except (ValueError, ZeroDivisionError):
            raise MosicError(f"--fractions: {t!r} is not a fraction (e.g. 1/128)") from None
        if not 0 < f <= 1:
            raise MosicError(f"--fractions: {t} is not in (0, 1]")
        out.append((str(f), float(f)))
    if not out:
        raise MosicError("--fractions: give at least one fraction, e.g. 1/128,1")
    return out


def parse_ints(text: str, what: str) -> list[int]:
    try:
        v = [int(t) for t in _split_list(text)]
    except ValueError:
        raise MosicError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not v or min(v) < 1:
        raise MosicError(f"{what}: expected positive integers, got {text!r}")
    return v


def parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """['video.nredo=1', 'linear.epochs=5'] -> {'video': {'nredo': 1}, 'linear': {'epochs': 5}}."""
    out: dict[str, dict[str, Any]] = {}
    for s in sets:
        key, sep, val = s.partition("=")
        key = key.strip().removeprefix("train.") if key.strip().startswith("train.model.") else key
        proto, dot, name = key.strip().partition(".")
        proto = proto.lower()
        if not sep or not dot or not name:
            raise MosicError(f"--set expects PROTOCOL.KEY=VALUE (e.g. linear.epochs=5) or model.kwargs.KEY=VALUE, "
                             f"got {s!r}")
        if proto == "model":  # the backbone's timm arguments, by the key pipelines.yaml gives them
            if name != "kwargs" and not name.startswith("kwargs."):
                raise MosicError(f"--set {s}: of the model, only model.kwargs (timm arguments) can be set here; "
                                 f"the name is --model, the weights --weights")
            value = parse_set_value(key.strip(), val)
            if name == "kwargs" and not isinstance(value, dict):
                raise MosicError(f"--set {s}: model.kwargs must be a mapping, e.g. --set 'model.kwargs={{depth: 2}}'")
            out.setdefault("model", {})[name.strip()] = value
            continue
        if proto not in PROTOCOLS:
            raise MosicError(f"--set {s!r}: unknown protocol {proto!r} (choose from {', '.join(PROTOCOLS)})")
        out.setdefault(proto, {})[name.strip()] = parse_set_value(key.strip(), val)
    return out


def model_kwargs_with_sets(kw: dict, sets: dict) -> dict:
    """The timm arguments after ``--set model.kwargs=MAPPING`` (replaces them) and
    ``--set model.kwargs.KEY=VALUE`` (one argument), as ``--set`` on mosic-train."""
    kw = dict(sets["kwargs"]) if "kwargs" in sets else dict(kw)
    for name, value in sets.items():
        if name.startswith("kwargs."):
            kw[name[len("kwargs."):]] = value
    return kw


def backbone_from_run(model: str | None, weights: Path | None, run_dir: Path | None,
                      model_kwargs: str | None) -> tuple[str, Path | None, dict, int | None]:
    """(model name, weights file, timm arguments, the run's training input size): ``--run DIR``
    means DIR/backbone.pth; a weights file with a mosic-train ``config.json`` beside it gives the
    model name and arguments not given on the command line."""
    if run_dir is not None:
        if weights is not None:
            raise MosicError("give --run DIR or --weights PATH, not both")
        if not run_dir.is_dir():
            raise MosicError(f"--run {run_dir}: no such run folder")
        weights = run_dir / "backbone.pth"
        if not weights.is_file():
            raise MosicError(f"--run {run_dir}: no backbone.pth there (it is written when mosic-train finishes)")
    if weights is not None and not Path(weights).is_file():
        raise MosicError(f"weights file not found: {weights}")
    kw = parse_model_kwargs(model_kwargs)
    cfg_file = Path(weights).parent / "config.json" if weights is not None else None
    run_size = None
    if cfg_file is not None and cfg_file.is_file():
        try:
            m = json.loads(cfg_file.read_text())["train"]["model"]
            run_model, run_kw, run_size = m["name"], dict(m.get("kwargs") or {}), m.get("img_size")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise MosicError(f"{cfg_file} is not a mosic-train config.json ({type(e).__name__}: {e})") from None
        if model is None or model.split(".")[0] == run_model.split(".")[0]:  # the pretrained tag aside
            taken = ["model name"] if model is None else []
            if model_kwargs is None:
                kw = run_kw
                taken.append("model arguments")
            model = model or run_model
            if taken:
                typer.echo(f"from {cfg_file}: {' and '.join(taken)}: {model} {json.dumps(kw)} "
                           f"(trained at {run_size} px)", err=True)
    if model is None:
        raise MosicError("--model is missing: give the timm model name, or --run DIR (a mosic-train run folder)")
    return model, weights, kw, run_size


def protocol_function(protocol: str) -> Callable:
    mod, fn = _FUNCS[protocol]
    try:
        return getattr(importlib.import_module(mod), fn)
    except ModuleNotFoundError as e:
        if e.name == mod:
            raise MosicError(f"protocol {protocol!r} is not available in this installation ({mod} is missing)") from None
        raise


def call_settings(fn: Callable, protocol: str, quick: bool, user: dict, fixed: dict) -> dict:
    """Keyword arguments for a protocol: its defaults (the paper's), then --quick, then the
    options of this CLI (``fixed``), then --set; unknown --set keys are errors, unknown --quick
    keys are dropped."""
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = [k for k in user if k not in names and not accepts_any]
    settable = sorted(n for n in names if params[n].default is not inspect.Parameter.empty)
    if unknown:
        raise MosicError(f"--set {protocol}.{unknown[0]}: {fn.__name__} has no setting {unknown[0]!r}"
                         f"{nearest(unknown[0], settable)} (settings: {', '.join(settable)})")
    for k, v in user.items():
        if k in names and params[k].default is not inspect.Parameter.empty:
            check_like_default(f"{protocol}.{k}", v, params[k].default)
    kw = {k: v for k, v in (QUICK[protocol] if quick else {}).items() if k in names or accepts_any}
    kw.update({k: v for k, v in fixed.items() if (k in names or accepts_any) and v is not None})
    kw.update(user)
    return kw


def effective_settings(fn: Callable, kw: dict) -> dict:
    """The settings a call ran with: the function's defaults updated with ``kw`` (JSON-able)."""
    out = {}
    for n, p in inspect.signature(fn).parameters.items():
        if p.default is not inspect.Parameter.empty and n not in ("device", "progress"):
            out[n] = p.default
    out.update({k: v for k, v in kw.items() if k not in ("device", "progress")})
    return json.loads(json.dumps(out, default=str))


def backbone_provenance(model: str, weights: Path | None, pretrained: bool, random: bool, kwargs: dict) -> dict:
    """What the backbone was: timm model name and arguments, and where its weights came from (the
    SHA-256 of a weights file; the hub tag; or a seeded random initialisation)."""
    import timm
    import torch

    if weights is not None:
        src = {"weights_file": Path(weights).name, "weights_sha256": file_sha256(Path(weights))}
        init = Path(weights).parent / "backbone_init.pth"  # a training run's starting backbone, next to its result
        if Path(weights).name != init.name and init.is_file():
            src["run_init_sha256"] = file_sha256(init)
    elif random:
        src = {"weights": "random", "init_seed": 0}
    else:
        src = {"weights": f"timm hub: {model}"}
    return {"model": model, "model_kwargs": kwargs, **src, "timm": timm.__version__, "torch": torch.__version__}


def data_info(ds) -> dict:
    """Data set, split, size and a fingerprint of the image (or video) list."""
    n = len(ds)
    fp = ds.fingerprint() if hasattr(ds, "fingerprint") else None
    return {"name": ds.name, "split": getattr(ds, "split", None), "items": n, "fingerprint": fp}


def weights_label(weights: Path | None, pretrained: bool, random: bool) -> str:
    if weights is not None:
        return str(weights)
    return "random" if random else "pretrained"


class Backbones:
    """The backbone, created for each protocol's input size (timm resamples the position embeddings
    once, at creation), or once for all with --img-size; one kept at a time."""

    def __init__(self, model: str, weights: Path | None, pretrained: bool, kwargs: dict, img_size: int | None,
                 device: str):
        self.model, self.weights, self.pretrained, self.kwargs = model, weights, pretrained, kwargs
        self.img_size, self.device = img_size, device
        self._cache: dict[int, Any] = {}
        self._patch: int | None = None

    def input_size(self, size: int) -> int:
        """``size`` (or --img-size) rounded to the nearest multiple of the backbone's patch, a tie
        rounding up (504 px is 512 for patch 16: 32 x 32 patches)."""
        from mosic.backbones import model_patch_size, round_to_patch

        size = self.img_size or size
        if self._patch is None:
            self._patch = model_patch_size(self.model, **self.kwargs)
        return round_to_patch(size, self._patch)

    def get(self, size: int):
        from mosic.backbones import create_backbone

        size = self.input_size(size)
        if size not in self._cache:
            self._cache.clear()
            torch_seed()
            net = create_backbone(self.model, pretrained=self.pretrained, weights=self.weights, img_size=size,
                                  **self.kwargs)
            self._cache[size] = net.eval().to(self.device)
        return self._cache[size]


def torch_seed(seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)  # a --random backbone is the same for every size and run


def _open_image(kind: str, root: Path, split: str):
    from mosic.evaluation.datasets import open_seg_dataset

    return open_seg_dataset(kind, root, split)


def _open_video(kind: str, root: Path, split: str, frames: int, seed: int):
    from mosic.evaluation.datasets import open_video_dataset

    return open_video_dataset(kind, root, split, frames=frames, seed=seed)


def _kvalue(res: dict, k: int) -> float | None:
    """mIoU for K from frozen_clustering's result ({'k': {K: {...}}} or {str(K): {...}})."""
    table = res.get("k", res)
    for key in (k, str(k)):
        if key in table and isinstance(table[key], dict):
            return table[key].get("miou")
    return None


def _compact(d: Any, depth: int = 0) -> Any:
    """Protocol outputs for the JSON details, without per-clip tables and with very long lists
    summarised."""
    if isinstance(d, dict):
        return {k: _compact(v, depth + 1) for k, v in d.items() if k not in ("per_clip",)}
    if isinstance(d, (list, tuple)) and len(d) > 200:
        return f"<{len(d)} values>"
    return d


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
@app.command("run", help="Evaluate one backbone with the chosen protocols and add its figures to its row of the "
                         "results table OUT.json / OUT.md (replacing only the figures it recomputes; --replace: "
                         "the row afresh). Each protocol's figures are written as soon as it finishes; a failing "
                         "protocol is recorded with its error, the others go on, and the exit status is 1. Image "
                         "protocols use --dataset/--root, video ones --video-dataset/--video-root; 'consistency' "
                         "needs a synthetic set (either one).")
@friendly_errors
def run(
    model: Optional[str] = typer.Option(None, "--model", help="timm model name, e.g. vit_small_patch14_dinov2 "
                                        "(default with --run or a run's backbone.pth: the run's model)"),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="a mosic-train run folder: evaluates its backbone.pth "
                                           "with the model name and arguments of its config.json"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="backbone weights file (timm state dict, mosic "
                                           "backbone.pth, or an official DINOv3, DINOv2, DINO, EVA-02 / EVA-CLIP "
                                           "checkpoint)"),
    pretrained: bool = typer.Option(False, "--pretrained", help="the hub's weights (the default without --weights/--no-pretrained)"),
    random_init: bool = typer.Option(False, "--no-pretrained", help="a random initialisation (a baseline)"),
    random_alias: bool = typer.Option(False, "--random", hidden=True, help="the same as --no-pretrained"),
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
    protocols: str = typer.Option("linear,clustering,incontext,video", "--protocols",
                                  help="comma-separated: " + ", ".join(PROTOCOLS)),
    fractions: str = typer.Option("1/128,1", "--fractions", help="in-context: fractions of the train split"),
    fraction_seeds: Optional[int] = typer.Option(None, "--fraction-seeds", min=1, help="in-context: draws averaged "
                                                 "for each fraction below 1 (default 5; --quick 1): the reference's fixed "
                                                 "lists for 1/128, 1/64, 1/8 of VOC trainaug and ADE20K training, seeded "
                                                 "random draws otherwise"),
    ks: Optional[str] = typer.Option(None, "--ks", help="clustering: K values (default: number of classes, 100, 300, 500)"),
    video_modes: str = typer.Option("frame", "--video-modes", help="video: frame (F-clustering), clip, dataset; comma-separated"),
    sets: List[str] = typer.Option([], "--set", help="KEY=VALUE (repeatable): any protocol setting as PROTOCOL.KEY, e.g. linear.epochs=5, or "
                                 "the backbone's timm arguments as model.kwargs.KEY, e.g. model.kwargs.depth=2; "
                                 "VALUE is read as YAML"),
    quick: bool = typer.Option(False, "--quick", help="the quick preset: scaled-down settings for a CPU demo "
                               "(small inputs, few epochs); same as --preset quick"),
    preset: str = typer.Option("paper", "--preset", help="paper (the reference implementations' settings) | quick"),
    name: Optional[str] = typer.Option(None, "--name", help="row name (default: model + weights)"),
    out: Path = typer.Option(Path("results"), "--out", help="results table: writes OUT.json and OUT.md"),
    merge: bool = typer.Option(False, "--merge", hidden=True, help="kept for old scripts: adding to the row is the default"),
    replace: bool = typer.Option(False, "--replace", help="drop the row's earlier figures instead of adding to them "
                                 "(other rows of the table stay)"),
    seed: int = typer.Option(0, "--seed", help="seed for subsets, clip frames, K-means"),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    from mosic.evaluation.results import add_to_table, load_or_empty, make_row, markdown_table, save_results

    if merge and replace:
        raise MosicError("give only one of --merge (the default) and --replace")
    random_init = random_init or random_alias
    if sum([weights is not None or run_dir is not None, pretrained, random_init]) > 1:
        raise MosicError("give only one of --weights PATH (or --run DIR), --pretrained, --no-pretrained")
    model, weights, mkw, run_size = backbone_from_run(model, weights, run_dir, model_kwargs)
    if preset not in PRESETS:
        raise MosicError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    quick = quick or preset == "quick"
    preset = "quick" if quick else "paper"
    protos = parse_protocols(protocols)
    user = parse_sets(sets)
    mkw = model_kwargs_with_sets(mkw, user.pop("model", {}))
    fracs = parse_fractions(fractions) if "incontext" in protos else []
    modes = _split_list(video_modes)
    for m in modes:
        if m not in ("frame", "clip", "dataset"):
            raise MosicError(f"--video-modes: unknown mode {m!r} (frame, clip, dataset)")
    image_protos = [p for p in protos if p in ("linear", "clustering", "incontext")]
    if image_protos:
        if dataset is None or root is None:
            raise MosicError(f"protocols {', '.join(image_protos)} need --dataset and --root")
        if dataset not in IMAGE_KINDS:
            raise MosicError(f"--dataset must be one of {', '.join(IMAGE_KINDS)}, got {dataset!r}")
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
    for p in protos:  # fail before any work if a protocol module is missing or a --set key is unknown
        call_settings(protocol_function(p), p, quick, user.get(p, {}), {})

    device = str(resolve_device(device))
    from mosic.backbones import preflight  # torch: not for --help

    preflight(model, weights, not random_init and weights is None, mkw)
    wlabel = weights_label(weights, pretrained, random_init)
    row_name = name or f"{model} ({wlabel})"
    nets = Backbones(model, weights, not random_init and weights is None, mkw, img_size, device)
    figures: dict[str, float] = {}
    settings: dict[str, dict] = {}  # per figure: protocol, resolved settings, data
    run_settings: dict[str, dict] = {}  # per protocol call
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}  # per failed protocol (figure prefix): its error
    common = dict(device=device, seed=seed, progress=True)

    def log(msg: str) -> None:
        typer.echo(msg, err=True)

    n_seeds = fraction_seeds or (1 if quick else 5)
    total = (("linear" in protos) + ("clustering" in protos) + ("consistency" in protos)
             + ("video" in protos) * len(modes) + sum(n_seeds if f < 1 else 1 for _, f in fracs))
    step = [0]

    def go(protocol: str, label: str, fixed: dict, *args) -> dict:
        fn = protocol_function(protocol)
        step[0] += 1
        kw = call_settings(fn, protocol, quick, user.get(protocol, {}), {**common, **fixed})
        if img_size and "img_size" not in user.get(protocol, {}):
            kw["img_size"] = img_size
        p = inspect.signature(fn).parameters.get("img_size")
        size = kw.get("img_size") or (p.default if p is not None else 224)
        rounded = nets.input_size(int(size))
        if rounded != size:
            log(f"{label}: input size {size} -> {rounded}, the nearest multiple of the patch ({nets._patch} px)")
        if p is not None:
            kw["img_size"] = rounded
        size = rounded
        t = time.perf_counter()
        log(f"[{step[0]}/{total}] {label} ...")
        res = fn(nets.get(int(size)), *args, **kw)
        fig = res.get("miou", res.get("consistency"))
        log(f"[{step[0]}/{total}] {label} done in {time.perf_counter() - t:.0f}s"
            + (f": {fig:.1f}" if isinstance(fig, (int, float)) else ""))
        run_settings[label] = effective_settings(fn, kw)
        details[label] = _compact(res)
        return res

    def record(figure: str, protocol: str, label: str, data: dict, **extra) -> None:
        settings[figure] = {"protocol": protocol, **run_settings[label], **extra, "data": data}

    # every data set is opened before any protocol runs: a wrong folder fails at once
    train_ds = val_ds = vds = None
    if image_protos:
        tr, va = IMAGE_SPLITS[dataset]
        val_ds = _open_image(dataset, root, val_split or va)
        if "linear" in protos or "incontext" in protos:
            train_ds = _open_image(dataset, root, train_split or tr)
    if "video" in protos:
        vds = _open_video(video_dataset, video_root, video_split or VIDEO_SPLITS[video_dataset], video_frames, seed)
    image_data = {}
    if image_protos:
        image_data = {"dataset": dataset, "val": data_info(val_ds)}
        if train_ds is not None:
            image_data["train"] = data_info(train_ds)

    provenance = backbone_provenance(model, weights, pretrained, random_init, mkw)
    if run_size is not None:
        provenance["run_img_size"] = run_size
    table = load_or_empty(out)
    replaced: list[str] = []

    def save() -> None:
        """Write the table with this run's figures so far: a protocol's figures are on disk as soon
        as it finishes."""
        nonlocal replaced
        row = make_row(row_name, model, wlabel, figures, settings=settings,
                       details={**details, "run_settings": run_settings, "img_size": img_size, "device": device,
                                "seed": seed},
                       preset=preset, provenance=provenance)
        row["errors"] = dict(errors)
        rows, replaced = add_to_table(table, row, replace=replace)
        save_results(rows, out)

    def protocol_linear() -> None:
        res = go("linear", f"{dataset}/linear", {}, train_ds, val_ds)
        figures[f"{dataset}/linear"] = res["miou"]
        record(f"{dataset}/linear", "linear", f"{dataset}/linear", image_data)

    def protocol_clustering() -> None:
        C = val_ds.num_classes
        kk = parse_ints(ks, "--ks") if ks else ([C, 3 * C] if quick else [C, 100, 300, 500])
        fixed = {"ks": kk}
        if seed and "seeds" not in user.get("clustering", {}):  # --seed shifts the K-means seeds averaged
            sds = call_settings(protocol_function("clustering"), "clustering", quick, user.get("clustering", {}),
                                {}).get("seeds", inspect.signature(protocol_function("clustering")).parameters["seeds"].default)
            fixed["seeds"] = [seed + s for s in sds]
        res = go("clustering", f"{dataset}/clustering", fixed, val_ds)
        for k in kk:
            figures[f"{dataset}/clustering K={k}"] = _kvalue(res, k)
            record(f"{dataset}/clustering K={k}", "clustering", f"{dataset}/clustering",
                   {"dataset": dataset, "val": data_info(val_ds)}, ks=[k])

    def protocol_incontext() -> None:
        from mosic.evaluation.file_sets import fraction_seeds

        subsets = call_settings(protocol_function("incontext"), "incontext", quick, user.get("incontext", {}),
                                {}).get("subsets", "reference")
        for text, frac in fracs:
            label = f"{dataset}/in-context {text}"
            # the paper averages 5 draws of a fraction: the reference's five lists where it has them
            draws = fraction_seeds(dataset, train_ds.split, frac, n_seeds, seed, subsets)
            labels = [label if len(draws) == 1 else f"{label} seed {sd}" for sd in draws]
            runs = [go("incontext", lb, {"fraction": frac, "seed": sd}, train_ds, val_ds) for lb, sd in zip(labels, draws)]
            figures[label] = float(np.mean([r["miou"] for r in runs]))
            record(label, "incontext", labels[0], image_data, seed=draws, subsets_used=[r.get("subset") for r in runs],
                   memory_ignore_used=runs[0].get("memory_ignore_used"), search_used=runs[0].get("search_used"))
            save()

    def protocol_video() -> None:
        for m in modes:
            res = go("video", f"{video_dataset}/video {m}", {"mode": m}, vds)
            figures[f"{video_dataset}/video {m}"] = res["miou"]
            record(f"{video_dataset}/video {m}", "video", f"{video_dataset}/video {m}",
                   {"dataset": video_dataset, "val": data_info(vds), "frames": video_frames})
            save()

    def protocol_consistency() -> None:
        res = go("consistency", "synthetic/consistency", {"split": syn_split}, syn_root)
        figures["synthetic/consistency"] = res["consistency"]
        figures["synthetic/correspondence"] = res["correspondence"]
        for f in ("synthetic/consistency", "synthetic/correspondence"):
            record(f, "consistency", "synthetic/consistency", {"dataset": "synthetic", "split": syn_split,
                                                              "root": Path(syn_root).name})

    blocks = {"linear": (protocol_linear, f"{dataset}/linear"),
              "clustering": (protocol_clustering, f"{dataset}/clustering"),
              "incontext": (protocol_incontext, f"{dataset}/in-context"),
              "video": (protocol_video, f"{video_dataset}/video"),
              "consistency": (protocol_consistency, "synthetic/consistency")}
    for p in PROTOCOLS:  # in this order, whatever the order of --protocols
        if p not in protos:
            continue
        fn, label = blocks[p]
        try:
            fn()
        except KeyboardInterrupt:
            done = ", ".join(figures) or "none"
            typer.secho(f"interrupted during {label}: the figures of the protocols that finished are in {out} "
                        f"({done})", err=True, fg=typer.colors.YELLOW)
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - one failing protocol must not lose the others' figures
            if isinstance(e, MosicError):
                errors[label] = str(e)
            else:
                errors[label] = f"{type(e).__name__}: {e}"
                logging.getLogger("mosic.evaluation").debug("protocol %s failed", p, exc_info=True)
            typer.secho(f"error: {label}: {errors[label]}; going on with the other protocols", err=True,
                        fg=typer.colors.RED)
        save()

    rows = load_or_empty(out)
    typer.echo(markdown_table([r for r in rows if r["name"] == row_name]))
    js, md = save_results(rows, out)
    if replaced:
        typer.echo(f"replaced {len(replaced)} earlier figure(s) of row {row_name!r}: {', '.join(replaced)}")
    kept = [k for r in rows if r["name"] == row_name for k in r.get("figures", {}) if k not in figures]
    if kept:
        typer.echo(f"kept {len(kept)} figure(s) of row {row_name!r} that this run did not compute "
                   f"(--replace to drop them): {', '.join(kept)}")
    typer.echo(f"wrote {js} and {md}")
    if errors:
        typer.secho(f"error: {len(errors)} protocol(s) failed (recorded in {md}): "
                    + "; ".join(f"{k}: {v}" for k, v in errors.items()), err=True, fg=typer.colors.RED)
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
    model: str = typer.Option(..., "--model", help="timm model name"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="backbone weights file"),
    pretrained: bool = typer.Option(False, "--pretrained", help="the hub's weights (default without --weights/--no-pretrained)"),
    random_init: bool = typer.Option(False, "--no-pretrained", help="a random initialisation"),
    random_alias: bool = typer.Option(False, "--random", hidden=True, help="the same as --no-pretrained"),
    model_kwargs: Optional[str] = typer.Option(None, "--model-kwargs", help="extra timm arguments (model.kwargs), as on run"),
    video_dataset: str = typer.Option(..., "--video-dataset", help="davis | ytvos | synthetic"),
    video_root: Path = typer.Option(..., "--video-root", help="video data set folder"),
    video_split: Optional[str] = typer.Option(None, "--video-split"),
    video_frames: int = typer.Option(4, "--video-frames", min=1, help="frames of the clip"),
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
    from mosic.evaluation.protocols.video import PAPER, show_clusters
    from mosic.evaluation.results import cluster_visualisation

    random_init = random_init or random_alias
    if sum([weights is not None, pretrained, random_init]) > 1:
        raise MosicError("give only one of --weights PATH, --pretrained, --random")
    if video_dataset not in VIDEO_KINDS:
        raise MosicError(f"--video-dataset must be one of {', '.join(VIDEO_KINDS)}, got {video_dataset!r}")
    if out.suffix.lower() not in (".gif", ".png"):
        raise MosicError(f"--out must end in .gif or .png, got {out}")
    device = str(resolve_device(device))
    q = QUICK["video"] if quick else {}
    size = img_size or q.get("img_size", PAPER["img_size"])
    vds = _open_video(video_dataset, video_root, video_split or VIDEO_SPLITS[video_dataset], video_frames, seed)
    if clip >= len(vds):
        raise MosicError(f"--clip {clip}: {video_dataset} has {len(vds)} clips")
    sample = vds[clip]
    nets = Backbones(model, weights, not random_init and weights is None, parse_model_kwargs(model_kwargs), None,
                     device)
    size = nets.input_size(size)
    net = nets.get(size)
    maps, miou = show_clusters(net, sample, mode=mode, img_size=size, eval_size=eval_size or q.get("eval_size"), k=k,
                               niter=q.get("niter", PAPER["niter"]), nredo=q.get("nredo", PAPER["nredo"]), seed=seed,
                               device=device, matched=not raw)
    path = cluster_visualisation(sample.frames, maps, out)
    typer.echo(f"clip {sample.video_id} frames {list(sample.frame_indices)}: {mode} clustering mIoU {miou:.1f}; wrote {path}")


def main() -> None:
    lines_when_piped()  # progress as periodic log lines in pipes and log files
    app()


if __name__ == "__main__":
    sys.exit(main())
