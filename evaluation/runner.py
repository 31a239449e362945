"""Running the protocols of ``mosic-eval run`` on one backbone and keeping their figures.

A run is a :class:`RunContext` (what to evaluate and how: the parsed command line, the backbone,
the data sets, all opened before any protocol runs) and a :class:`RunState` (what it has produced
so far). One function per protocol (:func:`run_linear`, :func:`run_clustering`,
:func:`run_incontext`, :func:`run_video`, :func:`run_consistency`) runs it through
:func:`call_protocol` (the resolved settings, :mod:`mosic.evaluation.settings`; the input size
rounded to the backbone's patch; a progress line), records each figure with the settings it was
computed with and the data it ran on (:func:`record`) and returns its figures; :func:`save`
writes the row into the results table, so a protocol's figures are on disk as soon as it
finishes. :func:`run_protocols` runs the chosen protocols in their fixed order and records a
failing one's error while the others go on.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mosic import MosicError
from mosic.evaluation.file_sets import fraction_seeds
from mosic.evaluation.options import parse_ints
from mosic.evaluation.results import add_to_table, make_row, superseded_since
from mosic.evaluation.results_file import add_row
from mosic.evaluation.settings import PROTOCOLS, recorded, resolve
from mosic.files import file_sha256

# where each protocol lives: (module, function, whether it takes device= and progress=)
_FUNCS = {
    "linear": ("mosic.evaluation.protocols.linear", "linear_segmentation", True),
    "clustering": ("mosic.evaluation.protocols.clustering", "frozen_clustering", True),
    "incontext": ("mosic.evaluation.protocols.incontext", "incontext_segmentation", True),
    "video": ("mosic.evaluation.protocols.video", "video_segmentation", True),
    "consistency": ("mosic.evaluation.protocols.video", "temporal_consistency", False),
}


# ------------------------------------------------------------------------------------------------
# the backbone and the data
# ------------------------------------------------------------------------------------------------
class Backbones:
    """The backbone, created for each protocol's input size (timm resamples the position embeddings
    once, at creation), or once for all with --img-size; one kept at a time."""

    def __init__(self, model: str, weights: Path | None, pretrained: bool, kwargs: dict, img_size: int | None,
                 device: str):
        self.model, self.weights, self.pretrained, self.kwargs = model, weights, pretrained, kwargs
        self.img_size, self.device = img_size, device
        self._cache: dict[int, Any] = {}
        self._patch: int | None = None

    @property
    def patch(self) -> int:
        """The backbone's patch size in pixels."""
        from mosic.backbones import model_patch_size

        if self._patch is None:
            self._patch = model_patch_size(self.model, **self.kwargs)
        return self._patch

    def input_size(self, size: int) -> int:
        """``size`` (or --img-size) rounded to the nearest multiple of the backbone's patch, a tie
        rounding up (504 px is 512 for patch 16: 32 x 32 patches)."""
        from mosic.backbones import round_to_patch

        return round_to_patch(self.img_size or size, self.patch)

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


def backbone_provenance(model: str, weights: Path | None, pretrained: bool, random: bool, kwargs: dict) -> dict:
    """What the backbone was: timm model name and arguments, and where its weights came from (the
    SHA-256 of a weights file; the hub tag; or a seeded random initialisation)."""
    import timm
    import torch

    if weights is not None and str(weights).startswith("hf-hub:"):
        src = {"weights": str(weights)}  # the hub's repository (and revision) names the files
    elif weights is not None:
        from mosic.backbones import hub_source, split_copy

        file, copy = split_copy(weights)
        if hub_source(file) is not None:  # a hub folder: its weights file
            file = Path(file) / "model.safetensors"
        src = {"weights_file": file.name, "weights_sha256": file_sha256(file)}
        if copy:
            src["weights_copy"] = copy
        init = file.parent / "backbone_init.pth"  # a training run's starting backbone, next to its result
        if file.name != init.name and init.is_file():
            src["run_init_sha256"] = file_sha256(init)
    elif random:
        src = {"weights": "random", "init_seed": 0}
    else:
        src = {"weights": f"timm hub: {model}"}
    return {"model": model, "model_kwargs": kwargs, **src, "timm": timm.__version__, "torch": torch.__version__}


def weights_label(weights: Path | None, pretrained: bool, random: bool) -> str:
    """Where the weights came from; a weights file by its resolved path, so one file is one row
    however its path was typed."""
    if weights is not None:
        return str(Path(weights).resolve() if Path(weights).exists() else weights)
    return "random" if random else "pretrained"


def data_info(ds) -> dict:
    """Data set, split, size and a fingerprint of the image (or video) list."""
    n = len(ds)
    fp = ds.fingerprint() if hasattr(ds, "fingerprint") else None
    return {"name": ds.name, "split": getattr(ds, "split", None), "items": n, "fingerprint": fp}


@dataclass(frozen=True)
class EvalData:
    """The data sets of a run, opened before any protocol runs (a wrong folder fails at once)."""

    train_ds: Any = None
    val_ds: Any = None
    video_ds: Any = None
    image_data: dict = field(default_factory=dict)  # what the image figures record of their data


def open_data(protocols: list[str], dataset: str | None, root: Path | None, train_split: str | None,
              val_split: str | None, video_dataset: str | None, video_root: Path | None, video_split: str | None,
              video_frames: int, seed: int, holdout: float | None) -> EvalData:
    """The image sets the image protocols need (val; train for linear and in-context) and the
    video set of the video protocol, at their default splits unless named."""
    from mosic.evaluation.datasets import IMAGE_SPLITS, VIDEO_SPLITS, open_seg_dataset, open_video_dataset

    image_protos = [p for p in protocols if p in ("linear", "clustering", "incontext")]
    train_ds = val_ds = video_ds = None
    if image_protos:
        tr, va = IMAGE_SPLITS[dataset]
        val_ds = open_seg_dataset(dataset, root, val_split or va)
        if "linear" in protocols or "incontext" in protocols:
            train_ds = open_seg_dataset(dataset, root, train_split or tr)
    if "video" in protocols:
        video_ds = open_video_dataset(video_dataset, video_root, video_split or VIDEO_SPLITS[video_dataset],
                                      frames=video_frames, seed=seed, holdout=holdout)
    image_data = {}
    if image_protos:
        image_data = {"dataset": dataset, "val": data_info(val_ds)}
        if train_ds is not None:
            image_data["train"] = data_info(train_ds)
    return EvalData(train_ds, val_ds, video_ds, image_data)


# ------------------------------------------------------------------------------------------------
# a run: what it reads, what it produced
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """Everything the protocols of a run read."""

    protocols: list[str]
    preset: str
    user: dict[str, dict[str, Any]]  # --set, per protocol
    nets: Backbones
    data: EvalData
    img_size: int | None  # --img-size
    device: str
    seed: int
    dataset: str | None
    video_dataset: str | None
    fractions: list[tuple[str, float]]  # in-context: (as written, value)
    fraction_draws: int  # in-context: draws averaged for a fraction below 1
    ks: str | None  # clustering: --ks as written
    video_modes: list[str]
    video_frames: int
    heldout: float | None  # the held-out fraction of a YouTube-VOS 'heldout' split scored, else None
    syn_root: Path | None  # consistency: the synthetic set and its split
    syn_split: str | None
    out: Path
    row_name: str
    model: str
    weights_label: str
    provenance: dict
    replace: bool
    table: list[dict]  # the results table before this run
    log: Callable[[str], None]  # a progress line
    warn: Callable[[str], None]  # a failed protocol's line

    @property
    def quick(self) -> bool:
        return self.preset == "quick"


@dataclass
class RunState:
    """What a run has produced so far: the figures, for each the settings and data it was
    computed with, each protocol call's settings and outputs, the failed protocols' errors."""

    figures: dict[str, float] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)  # per figure: protocol, resolved settings, data
    run_settings: dict[str, dict] = field(default_factory=dict)  # per protocol call
    details: dict[str, Any] = field(default_factory=dict)  # per protocol call: its outputs
    errors: dict[str, str] = field(default_factory=dict)  # per failed protocol (figure prefix): its error
    step: int = 0
    total: int = 0
    current: str | None = None  # the protocol running
    finished: list[str] = field(default_factory=list)  # the protocols that ran to their end (failed or not)
    replaced: list[str] = field(default_factory=list)  # earlier figures of the row that this run replaced
    superseded: list[dict] = field(default_factory=list)  # those computed with other settings, kept in the row


def count_steps(ctx: RunContext) -> int:
    """How many protocol calls the run makes (the progress lines' denominator)."""
    p = ctx.protocols
    return (("linear" in p) + ("clustering" in p) + ("consistency" in p) + ("video" in p) * len(ctx.video_modes)
            + sum(ctx.fraction_draws if f < 1 else 1 for _, f in ctx.fractions))


def protocol_function(protocol: str) -> Callable:
    mod, fn, _ = _FUNCS[protocol]
    try:
        return getattr(importlib.import_module(mod), fn)
    except ModuleNotFoundError as e:
        if e.name == mod:
            raise MosicError(f"protocol {protocol!r} is not available in this installation ({mod} is missing)") from None
        raise


def compact(d: Any, depth: int = 0) -> Any:
    """Protocol outputs for the JSON details, without per-clip tables and with very long lists
    summarised."""
    if isinstance(d, dict):
        return {k: compact(v, depth + 1) for k, v in d.items() if k not in ("per_clip",)}
    if isinstance(d, (list, tuple)) and len(d) > 200:
        return f"<{len(d)} values>"
    return d


def call_protocol(ctx: RunContext, state: RunState, protocol: str, label: str, fixed: dict, *args) -> dict:
    """Run ``protocol`` on ``args`` with its resolved settings (the preset, the run's seed and
    --img-size, ``fixed``, then --set) at an input size rounded to the backbone's patch; keep the
    settings and outputs of the call under ``label``."""
    fn = protocol_function(protocol)
    state.step += 1
    user = ctx.user.get(protocol, {})
    fixed = {"seed": ctx.seed, **fixed}
    if ctx.img_size and "img_size" not in user:
        fixed["img_size"] = ctx.img_size
    s = resolve(protocol, ctx.preset, fixed, user)
    rounded = ctx.nets.input_size(int(s.img_size))
    if rounded != s.img_size:
        ctx.log(f"{label}: input size {s.img_size} -> {rounded}, the nearest multiple of the patch ({ctx.nets.patch} px)")
        s = s.model_copy(update={"img_size": rounded})
    kw = s.model_dump()
    if _FUNCS[protocol][2]:
        kw.update(device=ctx.device, progress=True)
    t = time.perf_counter()
    ctx.log(f"[{state.step}/{state.total}] {label} ...")
    res = fn(ctx.nets.get(rounded), *args, **kw)
    fig = res.get("miou", res.get("consistency"))
    ctx.log(f"[{state.step}/{state.total}] {label} done in {time.perf_counter() - t:.0f}s"
            + (f": {fig:.1f}" if isinstance(fig, (int, float)) else ""))
    state.run_settings[label] = recorded(s)
    state.details[label] = compact(res)
    return res


def record(state: RunState, figure: str, value: float | None, protocol: str, label: str, data: dict,
           **extra) -> None:
    """Keep ``figure`` with the settings of the call ``label`` that computed it, ``extra`` and its data."""
    state.figures[figure] = value
    state.settings[figure] = {"protocol": protocol, **state.run_settings[label], **extra, "data": data}


def save(ctx: RunContext, state: RunState) -> None:
    """Add this run's figures so far to the row of ``ctx.row_name`` in the table on disk (read,
    merged and written under the table's lock, so other runs writing the same table keep theirs)."""
    details = {**state.details, "run_settings": state.run_settings, "img_size": ctx.img_size, "device": ctx.device,
               "seed": ctx.seed}
    row = make_row(ctx.row_name, ctx.model, ctx.weights_label, state.figures, settings=state.settings,
                   details=details, preset=ctx.preset, provenance=ctx.provenance)
    row["errors"] = dict(state.errors)
    before = ctx.table
    after, state.replaced = add_to_table(before, row, replace=ctx.replace)  # what this run changes, to say it
    state.superseded = superseded_since(before, after, ctx.row_name)
    add_row(ctx.out, row, replace=ctx.replace)


def failed(ctx: RunContext, state: RunState, label: str, e: Exception) -> None:
    """Record ``label``'s error (one line through ``ctx.warn``); the run goes on."""
    if isinstance(e, MosicError):
        state.errors[label] = str(e)
    else:
        state.errors[label] = f"{type(e).__name__}: {e}"
        logging.getLogger("mosic.evaluation").debug("%s failed", label, exc_info=True)
    ctx.warn(f"error: {label}: {state.errors[label]}; going on with the others")


# ------------------------------------------------------------------------------------------------
# the protocols
# ------------------------------------------------------------------------------------------------
def run_linear(ctx: RunContext, state: RunState) -> dict[str, float]:
    label = f"{ctx.dataset}/linear"
    res = call_protocol(ctx, state, "linear", label, {}, ctx.data.train_ds, ctx.data.val_ds)
    record(state, label, res["miou"], "linear", label, ctx.data.image_data)
    return {label: res["miou"]}


def kvalue(res: dict, k: int) -> float | None:
    """mIoU for K from frozen_clustering's result ({'k': {K: {...}}} or {str(K): {...}})."""
    table = res.get("k", res)
    for key in (k, str(k)):
        if key in table and isinstance(table[key], dict):
            return table[key].get("miou")
    return None


def run_clustering(ctx: RunContext, state: RunState) -> dict[str, float]:
    val = ctx.data.val_ds
    kk = clustering_ks(ctx)
    fixed: dict[str, Any] = {"ks": kk}
    user = ctx.user.get("clustering", {})
    if ctx.seed and "seeds" not in user:  # --seed shifts the K-means seeds averaged
        fixed["seeds"] = [ctx.seed + s for s in resolve("clustering", ctx.preset, None, user).seeds]
    label = f"{ctx.dataset}/clustering"
    res = call_protocol(ctx, state, "clustering", label, fixed, val)
    figures = {}
    for k in kk:
        figures[f"{label} K={k}"] = kvalue(res, k)
        record(state, f"{label} K={k}", figures[f"{label} K={k}"], "clustering", label,
               {"dataset": ctx.dataset, "val": data_info(val)}, ks=[k])
    return figures


def clustering_ks(ctx: RunContext) -> list[int]:
    """--ks, or the preset's: NeCo's K lists (the data set's rows and 500 for VOC, 151 for ADE20K; see
    :func:`mosic.evaluation.protocols.clustering.default_ks`); --quick: the classes and 3x the classes."""
    from mosic.evaluation.protocols.clustering import default_ks  # imports torch: deferred

    val = ctx.data.val_ds
    C = val.num_classes
    if ctx.ks:
        return parse_ints(ctx.ks, "--ks")
    if ctx.quick:
        return [C, 3 * C]
    rows = resolve("clustering", ctx.preset, None, ctx.user.get("clustering", {})).class_rows
    return default_ks(ctx.dataset, C, val.ignore_index, rows)


def check_run(ctx: RunContext) -> None:
    """What can be checked before any protocol runs: clustering's K values fit the patches."""
    if "clustering" in ctx.protocols:
        check_ks(ctx, ctx.data.val_ds, clustering_ks(ctx), ctx.user.get("clustering", {}))


def check_ks(ctx: RunContext, val, ks: list[int], user: dict) -> None:
    """Every K has at least K patches to cluster (one line naming --ks)."""
    size = ctx.nets.input_size(resolve("clustering", ctx.preset, None, user).img_size)
    grid = size // ctx.nets.patch
    patches = len(val) * grid * grid
    over = [k for k in ks if k > patches]
    if over:
        fit = [k for k in ks if k <= patches] or [min(patches, val.num_classes)]
        raise MosicError(f"clustering: K = {', '.join(map(str, over))} needs as many patches, but {ctx.dataset} "
                         f"{getattr(val, 'split', '')} gives {patches} ({len(val)} images x {grid} x {grid} at "
                         f"{size} px); give K values that fit with --ks, e.g. --ks {','.join(map(str, fit))}")


def run_incontext(ctx: RunContext, state: RunState) -> dict[str, float]:
    """Every fraction, each averaged over its draws (the reference's five lists where it has
    them); the table is written after each fraction, and a fraction that fails is recorded as
    failed while the others go on."""
    subsets = resolve("incontext", ctx.preset, None, ctx.user.get("incontext", {})).subsets
    figures = {}
    for text, frac in ctx.fractions:
        label = f"{ctx.dataset}/in-context {text}"
        try:
            draws = fraction_seeds(ctx.dataset, ctx.data.train_ds.split, frac, ctx.fraction_draws, ctx.seed, subsets)
            labels = [label if len(draws) == 1 else f"{label} seed {sd}" for sd in draws]
            runs = [call_protocol(ctx, state, "incontext", lb, {"fraction": frac, "seed": sd}, ctx.data.train_ds,
                                  ctx.data.val_ds) for lb, sd in zip(labels, draws)]
        except Exception as e:  # noqa: BLE001 - one fraction's failure must not lose the others' figures
            failed(ctx, state, label, e)
            save(ctx, state)
            continue
        figures[label] = float(np.mean([r["miou"] for r in runs]))
        record(state, label, figures[label], "incontext", labels[0], ctx.data.image_data, seed=draws,
               subsets_used=[r.get("subset") for r in runs], memory_ignore_used=runs[0].get("memory_ignore_used"),
               search_used=runs[0].get("search_used"))
        save(ctx, state)
    return figures


def run_video(ctx: RunContext, state: RunState) -> dict[str, float]:
    """Every clustering mode; the table is written after each, and a mode that fails is recorded
    as failed while the others go on."""
    data = {"dataset": ctx.video_dataset, "val": data_info(ctx.data.video_ds), "frames": ctx.video_frames}
    if ctx.heldout is not None:
        data["holdout"] = ctx.heldout
    figures = {}
    for m in ctx.video_modes:
        label = f"{ctx.video_dataset}/video {m}"
        try:
            res = call_protocol(ctx, state, "video", label, {"mode": m}, ctx.data.video_ds)
        except Exception as e:  # noqa: BLE001 - one mode's failure must not lose the others' figures
            failed(ctx, state, label, e)
            save(ctx, state)
            continue
        figures[label] = res["miou"]
        record(state, label, res["miou"], "video", label, dict(data))
        save(ctx, state)
    return figures


def run_consistency(ctx: RunContext, state: RunState) -> dict[str, float]:
    label = "synthetic/consistency"
    res = call_protocol(ctx, state, "consistency", label, {"split": ctx.syn_split}, ctx.syn_root)
    figures = {"synthetic/consistency": res["consistency"], "synthetic/correspondence": res["correspondence"]}
    for f, v in figures.items():
        record(state, f, v, "consistency", label,
               {"dataset": "synthetic", "split": ctx.syn_split, "root": Path(ctx.syn_root).name})
    return figures


#: each protocol's function here, and the label its error is recorded under
RUNS: dict[str, tuple[Callable[[RunContext, RunState], dict[str, float]], Callable[[RunContext], str]]] = {
    "linear": (run_linear, lambda ctx: f"{ctx.dataset}/linear"),
    "clustering": (run_clustering, lambda ctx: f"{ctx.dataset}/clustering"),
    "incontext": (run_incontext, lambda ctx: f"{ctx.dataset}/in-context"),
    "video": (run_video, lambda ctx: f"{ctx.video_dataset}/video"),
    "consistency": (run_consistency, lambda ctx: "synthetic/consistency"),
}


def run_protocols(ctx: RunContext, state: RunState) -> None:
    """Run the chosen protocols in the order of :data:`PROTOCOLS` (whatever the order asked), writing
    the table after each (and after each in-context fraction and video mode). A protocol (fraction,
    mode) that fails is recorded in ``state.errors`` with its error
    (one line through ``ctx.warn``) and the others go on; an interruption propagates with
    ``state.current`` naming the protocol it stopped."""
    state.total = count_steps(ctx)
    for p in PROTOCOLS:
        if p not in ctx.protocols:
            continue
        fn, label_of = RUNS[p]
        state.current = label = label_of(ctx)
        try:
            fn(ctx, state)
        except Exception as e:  # noqa: BLE001 - one failing protocol must not lose the others' figures
            failed(ctx, state, label, e)
        save(ctx, state)
        state.finished.append(p)
    state.current = None
