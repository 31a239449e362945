"""Helpers shared by the typer command-line entry points."""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable

import typer
import yaml

from mosic import MosicError
from mosic.config import PipelineConfig, TrainSettings, find_pipelines_file
from mosic.config.strict import check_setting, load_yaml, mapping_problem, parse_set_value


def friendly_errors(fn: Callable) -> Callable:
    """Print a MosicError as one line on stderr and exit with status 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MosicError as e:
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None

    return wrapper


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'320x240' -> (320, 240)."""
    if text is None or text.lower() in ("", "none", "native"):
        return None
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise MosicError(f"a size must look like WIDTHxHEIGHT (e.g. 512x384), got {text!r}") from None


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ------------------------------------------------------------------------------------------------
# progress bars: a bar on a terminal, periodic log lines in a pipe or a log file
# ------------------------------------------------------------------------------------------------
#: seconds between progress lines when stderr is not a terminal ($MOSIC_PROGRESS_INTERVAL)
PROGRESS_INTERVAL = 30.0


class _Lines:
    """A file that passes on whole lines and drops the carriage returns of a redrawn bar."""

    def __init__(self, fp):
        self.fp = fp

    def write(self, s: str) -> None:
        s = s.replace("\r", "")
        if s.strip():
            self.fp.write(s)

    def flush(self) -> None:
        self.fp.flush()

    def __getattr__(self, name):
        return getattr(self.fp, name)


def _line_tqdm_class():
    import tqdm.std

    class LineProgress(tqdm.std.tqdm):
        """tqdm that writes one plain line per refresh, at most every PROGRESS_INTERVAL seconds."""

        def __init__(self, *args, **kwargs):
            every = float(os.environ.get("MOSIC_PROGRESS_INTERVAL", PROGRESS_INTERVAL))
            kwargs["mininterval"] = max(float(kwargs.get("mininterval") or 0), every)
            kwargs["maxinterval"] = max(float(kwargs.get("maxinterval") or 0), every)
            kwargs["dynamic_ncols"] = False
            kwargs.setdefault("ncols", 100)
            kwargs["ascii"] = True
            self._last_line = None
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):
            line = (self.__str__() if msg is None else msg).strip()
            if line and line != self._last_line:
                self.fp.write(line + "\n")
                self.fp.flush()
                self._last_line = line
            return True

        def clear(self, *args, **kwargs):
            pass

        def moveto(self, n):
            pass

        def close(self):
            if not self.disable and self.n and self.leave is False:
                self.display()  # the final count, which a bar that vanishes would not print
            super().close()

    return LineProgress


def lines_when_piped(stream=None) -> bool:
    """When ``stream`` (stderr) is not a terminal, make every tqdm progress bar of this process a
    periodic log line (no carriage returns in piped logs). Returns whether it did."""
    import tqdm
    import tqdm.std

    stream = stream or sys.stderr
    try:
        if stream.isatty():
            return False
    except (AttributeError, ValueError):
        pass
    cls = _line_tqdm_class()
    base_init = cls.__init__

    def init(self, *args, **kwargs):
        base_init(self, *args, **kwargs)
        if hasattr(self, "fp"):  # a disabled bar has no file
            self.fp = _Lines(self.fp)

    cls.__init__ = init

    def trange(*args, **kwargs):
        return cls(range(*args), **kwargs)

    tqdm.tqdm = tqdm.std.tqdm = cls
    tqdm.trange = tqdm.std.trange = trange
    try:
        import tqdm.auto

        tqdm.auto.tqdm, tqdm.auto.trange = cls, trange
    except ImportError:
        pass
    return True


# ------------------------------------------------------------------------------------------------
# the options every command that reads a pipeline shares
# ------------------------------------------------------------------------------------------------
#: the top-level keys of a pipeline in pipelines.yaml
PIPELINE_SECTIONS = ("dataset", "clips", "tracker", "store", "stores", "slurm", "train")

SET_HELP = ("KEY=VALUE (repeatable): any setting by its dotted key in pipelines.yaml, e.g. tracker.name=oracle, "
            "clips.length=8, train.model.kwargs.depth=2 (train. may be left out); VALUE is read as YAML")
PRINT_CONFIG_HELP = "print the fully resolved settings this command would run with (as pipelines.yaml) and exit"
LIST_HELP = "say which pipelines file is used, list its pipelines and exit"
CONFIG_HELP = "pipelines file (default: $MOSIC_PIPELINES, else ./pipelines.yaml, else the packaged defaults)"
PIPELINE_HELP = "pipeline name in pipelines.yaml"
WEIGHTS_HELP = ("backbone weights: a file (timm state dict, mosic backbone.pth, an official DINOv3, DINOv2, DINO, "
                "EVA-02 / EVA-CLIP checkpoint; FILE#NAME picks one of several copies), a Hugging Face / timm folder, "
                "or hf-hub:ORG/NAME")


def parse_pipeline_sets(sets: list[str]) -> dict:
    """``--set KEY=VALUE`` arguments -> dotted overrides for ``load_pipeline``, each checked strictly
    against the settings it names: pipeline fields (``dataset.``, ``clips.``, ``tracker.``, ``store.``,
    ``stores``, ``slurm.``) against ``PipelineConfig``, ``train.`` fields against ``TrainSettings``. A key that
    starts with none of the sections is a train setting (``loss.temperature=0.2`` is
    ``train.loss.temperature=0.2``)."""
    out: dict = {}
    for s in sets:
        if "=" not in s:
            raise MosicError(f"--set expects KEY=VALUE (e.g. tracker.name=oracle or train.loss.temperature=0.2), "
                             f"got {s!r}")
        k, v = s.split("=", 1)
        k = k.strip()
        value = parse_set_value(k, v)
        if k.split(".")[0] in PIPELINE_SECTIONS and k.split(".")[0] != "train":
            check_setting(PipelineConfig, k, value, shown=s)
            out[k] = value
        else:
            k = k[len("train."):] if k.startswith("train.") else k
            check_setting(TrainSettings, k, value, shown=s)
            out["train." + k] = value
    return out


def resolved_config(cfg, config_path=None) -> str:
    """The settings a command resolved, as a pipelines.yaml entry (every train setting filled in
    with its default), headed by the pipelines file they came from (for ``--print-config``)."""
    data = cfg.model_dump(mode="json", by_alias=True)
    name = data.pop("name")
    head = (f"# pipeline {name!r} of {find_pipelines_file(config_path)}, with this command line's options and "
            f"--set applied")
    return head + "\n" + yaml.safe_dump({"pipelines": {name: data}}, sort_keys=False, default_flow_style=False)


def parse_model_kwargs(text: str | None, flag: str = "--model-kwargs") -> dict:
    """``--model-kwargs`` (the same on every command): extra timm ``create_model`` arguments as a
    JSON object or a YAML mapping (``'{"depth": 2}'`` or ``'{depth: 2}'``); ``model.kwargs`` in
    pipelines.yaml."""
    if not text:
        return {}
    try:
        kw = load_yaml(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise MosicError(f"{flag} must be a JSON object (or YAML mapping), e.g. '{{\"depth\": 2}}' ({first})") from None
    if not isinstance(kw, dict):
        raise MosicError(f"{flag} must be a JSON object (or YAML mapping), e.g. '{{\"depth\": 2}}', got {text!r}")
    problem = mapping_problem(kw)
    if problem:
        raise MosicError(f"{flag} {text}: read as {kw!r}, {problem}; write a space after each colon, "
                         f"e.g. '{{depth: 2}}'")
    return kw
