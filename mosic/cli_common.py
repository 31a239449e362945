"""Helpers shared by the typer command-line entry points."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

import typer

from mosic import MosicError


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
# --set KEY=VALUE, read strictly
# ------------------------------------------------------------------------------------------------
def parse_set_value(key: str, text: str):
    """The YAML value of ``--set KEY=TEXT``; a mapping whose keys carry ':' (``{depth:2}``: YAML
    needs a space after the colon) or whose values are null is refused, showing how it was read
    and the spelling that works."""
    import re

    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise MosicError(f"--set {key}={text}: not a valid YAML value ({first})") from None
    problem = _mapping_problem(value)
    if problem:
        fixed = re.sub(r",(?=\S)", ", ", re.sub(r":(?=[^\s/])", ": ", text))
        raise MosicError(f"--set {key}={text}: read as {value!r}, {problem}; write a mapping with a space after "
                         f"each colon: --set '{key}={fixed}'")
    return value


def _mapping_problem(value, where: str = "") -> str | None:
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and ":" in k:
                return f"key {where}{k!r} holds a ':'"
            if v is None:
                return f"key {where}{k!r} has no value (null)"
            sub = _mapping_problem(v, f"{where}{k}.")
            if sub:
                return sub
    elif isinstance(value, list):
        for v in value:
            sub = _mapping_problem(v, where)
            if sub:
                return sub
    return None


def nearest(name: str, choices) -> str:
    """' (did you mean X?)' for the choice closest to ``name``, or '' when none is close."""
    import difflib

    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if not close:  # a mistyped last part: compare the last dotted parts
        tails = {c.rsplit(".", 1)[-1]: c for c in choices}
        close = [tails[t] for t in difflib.get_close_matches(name.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]}?)" if close else ""


def settings_keys(schema, prefix: str = "") -> dict[str, object]:
    """Every dotted key of a pydantic settings class -> its FieldInfo (nested classes descended)."""
    from pydantic import BaseModel

    out: dict[str, object] = {}
    for name, field in schema.model_fields.items():
        name = field.alias or name  # the key as written in pipelines.yaml and --set
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(settings_keys(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field
    return out


def check_setting(schema, key: str, value, shown: str | None = None) -> None:
    """Refuse ``--set key=value`` when ``key`` is not a field of the pydantic class ``schema``
    (naming the nearest key) or ``value`` does not validate as that field (showing how it was
    read and the field's default as an example). Keys under a free-form mapping (``model.kwargs``)
    are not checked further; ``shown`` is the argument as the user wrote it."""
    from pydantic import TypeAdapter, ValidationError

    shown = shown or key
    keys = settings_keys(schema)
    if key not in keys:
        parent = next((k for k in keys if key.startswith(k + ".")), None)
        if parent is not None and _is_mapping(keys[parent]):
            return
        raise MosicError(f"--set {shown}: unknown setting {shown.split('=')[0]!r}"
                         + nearest(key, keys) + "")
    field = keys[key]
    try:
        from typing import Annotated

        TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation) \
            .validate_python(value, strict=_strict(field))
    except ValidationError as e:
        err = e.errors()[0]
        default = field.get_default(call_default_factory=True)
        raise MosicError(f"--set {shown}: read as {value!r} ({type(value).__name__}), but {key} "
                         f"{_expected(err)}; e.g. --set {key}={_yaml(default)}") from None


def _is_mapping(field) -> bool:
    import typing

    return typing.get_origin(field.annotation) is dict or field.annotation is dict


def _strict(field) -> bool:
    """Numbers and booleans must be numbers and booleans (not '5' or 'yes' strings)."""
    return field.annotation in (int, float, bool)


def _expected(err: dict) -> str:
    msg = str(err.get("msg") or "")
    for lead in ("Input should be ", "Value should be "):
        if msg.startswith(lead):
            return "must be " + msg[len(lead):]
    return f"is not valid ({msg})" if msg else "is not valid"


def _yaml(value) -> str:
    import json

    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)


def check_like_default(key: str, value, default) -> None:
    """Refuse ``--set key=value`` whose type does not fit the setting's default (an integer for an
    integer, a number for a float, true/false for a flag, a list for a list or tuple, text for
    text); a setting whose default is None takes anything."""
    if default is None or value is None and default is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "text"
    elif isinstance(default, (list, tuple)):
        ok, kind = isinstance(value, (list, tuple)), "a list, e.g. [1, 2]"
    else:
        return
    if not ok:
        raise MosicError(f"--set {key}={_yaml(value)}: read as {value!r} ({type(value).__name__}), but {key} must be "
                         f"{kind}; e.g. --set {key}={_yaml(default)}")


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
            import os

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
PIPELINE_SECTIONS = ("dataset", "clips", "tracker", "store", "stores", "train")

SET_HELP = ("KEY=VALUE (repeatable): any setting by its dotted key in pipelines.yaml, e.g. tracker.name=oracle, "
            "clips.length=8, train.model.kwargs.depth=2 (train. may be left out); VALUE is read as YAML")
PRINT_CONFIG_HELP = "print the fully resolved settings this command would run with (as pipelines.yaml) and exit"
LIST_HELP = "say which pipelines file is used, list its pipelines and exit"
CONFIG_HELP = "pipelines file (default: $MOSIC_PIPELINES, else ./pipelines.yaml, else the packaged defaults)"
PIPELINE_HELP = "pipeline name in pipelines.yaml"


def parse_pipeline_sets(sets: list[str]) -> dict:
    """``--set KEY=VALUE`` arguments -> dotted overrides for ``load_pipeline``, each checked strictly
    against the settings it names: pipeline fields (``dataset.``, ``clips.``, ``tracker.``, ``store.``,
    ``stores``) against ``PipelineConfig``, ``train.`` fields against ``TrainSettings``. A key that
    starts with none of the sections is a train setting (``loss.temperature=0.2`` is
    ``train.loss.temperature=0.2``)."""
    from mosic.config import PipelineConfig
    from mosic.train.config import TrainSettings

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
    import yaml

    from mosic.config import find_pipelines_file
    from mosic.train.config import train_settings

    data = cfg.model_dump(mode="json", by_alias=True)
    name = data.pop("name")
    data["train"] = train_settings(cfg.train).model_dump(mode="json", by_alias=True)
    head = (f"# pipeline {name!r} of {find_pipelines_file(config_path)}, with this command line's options and "
            f"--set applied")
    return head + "\n" + yaml.safe_dump({"pipelines": {name: data}}, sort_keys=False, default_flow_style=False)


def parse_model_kwargs(text: str | None, flag: str = "--model-kwargs") -> dict:
    """``--model-kwargs`` (the same on every command): extra timm ``create_model`` arguments as a
    JSON object or a YAML mapping (``'{"depth": 2}'`` or ``'{depth: 2}'``); ``model.kwargs`` in
    pipelines.yaml."""
    import yaml

    if not text:
        return {}
    try:
        kw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise MosicError(f"{flag} must be a JSON object (or YAML mapping), e.g. '{{\"depth\": 2}}' ({first})") from None
    if not isinstance(kw, dict):
        raise MosicError(f"{flag} must be a JSON object (or YAML mapping), e.g. '{{\"depth\": 2}}', got {text!r}")
    problem = _mapping_problem(kw)
    if problem:
        raise MosicError(f"{flag} {text}: read as {kw!r}, {problem}; write a space after each colon, "
                         f"e.g. '{{depth: 2}}'")
    return kw
