"""The values of ``mosic-eval``'s options, read strictly: protocol names, fractions, integer lists,
``--set`` (checked against the protocols' typed settings, :mod:`mosic.evaluation.settings`), the
backbone of a ``mosic-train`` run folder and the held-out fraction of YouTube-VOS. Every mistake is
one :class:`mosic.MosicError` line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from mosic import MosicError
from mosic.cli_common import parse_model_kwargs
from mosic.config.strict import check_setting, parse_set_value
from mosic.evaluation.settings import PROTOCOLS, EvalSettings

#: other names of the protocols on the command line
_PROTOCOL_ALIASES = {"in-context": "incontext", "hummingbird": "incontext", "tc": "consistency"}


def split_list(text: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def parse_protocols(text: str) -> list[str]:
    out = []
    for p in split_list(text):
        p = _PROTOCOL_ALIASES.get(p.lower(), p.lower())
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
    for t in split_list(text):
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
        v = [int(t) for t in split_list(text)]
    except ValueError:
        raise MosicError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not v or min(v) < 1:
        raise MosicError(f"{what}: expected positive integers, got {text!r}")
    return v


def parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """['video.nredo=1', 'linear.epochs=5'] -> {'video': {'nredo': 1}, 'linear': {'epochs': 5}}; each
    protocol setting checked against its typed model (an unknown key names the nearest one, a
    value of the wrong type says what it must be)."""
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
        value = parse_set_value(key.strip(), val)
        check_setting(EvalSettings, f"{proto}.{name.strip()}", value, shown=s)
        out.setdefault(proto, {})[name.strip()] = value
    return out


def model_kwargs_with_sets(kw: dict, sets: dict) -> dict:
    """The timm arguments after ``--set model.kwargs=MAPPING`` (replaces them) and
    ``--set model.kwargs.KEY=VALUE`` (one argument), as ``--set`` on mosic-train."""
    kw = dict(sets["kwargs"]) if "kwargs" in sets else dict(kw)
    for name, value in sets.items():
        if name.startswith("kwargs."):
            kw[name[len("kwargs."):]] = value
    return kw


def check_model_kwargs(model: str, kwargs: dict, sets: dict, model_kwargs: str | None) -> None:
    """Before any work: timm builds ``model`` with ``kwargs`` (on the meta device: no weights, no
    memory); otherwise one line naming the argument at fault as it was given (``--set
    model.kwargs.KEY=VALUE``, ``--model-kwargs`` or the run's config.json)."""
    from mosic.backbones import model_patch_size  # torch: not for --help

    def builds(kw: dict) -> Exception | None:
        try:
            model_patch_size(model, **kw)
        except MosicError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever timm raises on a bad argument
            return e
        return None

    err = builds(kwargs)
    if err is None:
        return
    culprits = [k for k in kwargs if builds({q: v for q, v in kwargs.items() if q != k}) is None] or list(kwargs)

    def given(k: str) -> str:
        if f"kwargs.{k}" in sets:
            return f"--set model.kwargs.{k}={sets[f'kwargs.{k}']!r}"
        if "kwargs" in sets:
            return f"--set model.kwargs: {k}={kwargs[k]!r}"
        return f"{'--model-kwargs' if model_kwargs is not None else 'model.kwargs of the run'}: {k}={kwargs[k]!r}"

    where = "; ".join(given(k) for k in culprits) or "the model's arguments"
    raise MosicError(f"{where}: timm cannot build {model} with it ({type(err).__name__}: {err}); give a value of "
                     "the type the model takes")


@dataclass(frozen=True)
class RunBackbone:
    """The backbone to evaluate, with what a ``mosic-train`` run folder says about it."""

    model: str
    weights: Path | None
    kwargs: dict
    run_size: int | None = None  # the run's training input size
    holdout: float | None = None  # the fraction of videos the run left out of training
    config: Path | None = None  # the run's config.json, when one was read
    note: str | None = None  # what was taken from the run's config.json, for the user


def backbone_from_run(model: str | None, weights: Path | None, run_dir: Path | None,
                      model_kwargs: str | None) -> RunBackbone:
    """``--run DIR`` means DIR/backbone.pth; a weights file with a mosic-train ``config.json``
    beside it gives the model name and arguments not given on the command line, and the run's
    training input size and held-out fraction."""
    if run_dir is not None:
        if weights is not None:
            raise MosicError("give --run DIR or --weights PATH, not both")
        if not run_dir.is_dir():
            raise MosicError(f"--run {run_dir}: no such run folder")
        weights = run_dir / "backbone.pth"
        if not weights.is_file():
            raise MosicError(f"--run {run_dir}: no backbone.pth there (it is written when mosic-train finishes)")
    folder_arch = None
    if weights is not None:
        from mosic.backbones import hub_source, split_copy  # torch: not for --help

        source = hub_source(weights)  # a hub folder or hf-hub: id, else None
        if source is None and not split_copy(weights)[0].is_file():
            raise MosicError(f"weights file not found: {weights}")
        if source is not None and source.startswith("local-dir:"):
            folder_arch = json.loads((Path(weights) / "config.json").read_text()).get("architecture")
        weights_file = split_copy(weights)[0] if source is None else Path(str(weights))
    kw = parse_model_kwargs(model_kwargs)
    cfg_file = weights_file.parent / "config.json" if weights is not None else None
    run_size = holdout = note = None
    if cfg_file is not None and cfg_file.is_file():
        try:
            train = json.loads(cfg_file.read_text())["train"]
            m = train["model"]
            run_model, run_kw, run_size = m["name"], dict(m.get("kwargs") or {}), m.get("img_size")
            holdout = train.get("holdout")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise MosicError(f"{cfg_file} is not a mosic-train config.json ({type(e).__name__}: {e})") from None
        if model is None or model.split(".")[0] == run_model.split(".")[0]:  # the pretrained tag aside
            taken = ["model name"] if model is None else []
            if model_kwargs is None:
                kw = run_kw
                taken.append("model arguments")
            model = model or run_model
            if taken:
                note = (f"from {cfg_file}: {' and '.join(taken)}: {model} {json.dumps(kw)} "
                        f"(trained at {run_size} px)")
    else:
        cfg_file = None
    model = model or folder_arch  # a hub folder names its architecture
    if model is None:
        raise MosicError("--model is missing: give the timm model name, or --run DIR (a mosic-train run folder)")
    return RunBackbone(model, weights, kw, run_size, holdout, cfg_file, note)


def heldout_fraction(option: float | None, run: RunBackbone) -> tuple[float, str]:
    """(the fraction of YouTube-VOS train videos that split ``heldout`` scores, where it comes
    from): the run's own ``train.holdout`` when the backbone comes from a run folder that records
    it, else ``--holdout``, else the packaged ``ytvos`` pipeline's ``train.holdout``."""
    from mosic.data.holdout import ytvos_holdout  # mosic.data opens cv2: not for --help

    if run.holdout is not None:
        if option is not None and option != run.holdout:
            raise MosicError(f"--holdout {option}: the run trained with holdout {run.holdout} ({run.config}), so "
                             f"split 'heldout' is its videos; leave --holdout out, or score all videos with "
                             f"--video-split train")
        return float(run.holdout), f"train.holdout of {run.config}"
    if option is not None:
        if not 0 <= option < 1:
            raise MosicError(f"--holdout must be a fraction in [0, 1), got {option}")
        return float(option), "--holdout"
    return ytvos_holdout(), "the ytvos pipeline's train.holdout; --holdout to change it"
