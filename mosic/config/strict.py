"""Settings read strictly: a ``--set KEY=VALUE`` checked against the typed field it names, a
pydantic error as one line, and the nearest known key for a typo. Used by every command and by
the pipeline loader; imports nothing of mosic but its error type."""

from __future__ import annotations

import difflib
import json
import re
import typing
from typing import Annotated

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from mosic import MosicError


class _Loader(yaml.SafeLoader):
    """YAML as people write settings: PyYAML's safe loader (YAML 1.1), except that a number written with an
    exponent and no dot (``1e-3``, ``5E-4``, ``2e5``) is a float, as in YAML 1.2 (1.1 reads it as text)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    """``text`` read as settings YAML (:class:`_Loader`): every ``--set`` value and every pipelines file."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_set_value(key: str, text: str):
    """The YAML value of ``--set KEY=TEXT``; a mapping whose keys carry ':' (``{depth:2}``: YAML
    needs a space after the colon) or whose values are null is refused, showing how it was read
    and the spelling that works."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise MosicError(f"--set {key}={text}: not a valid YAML value ({first})") from None
    problem = mapping_problem(value)
    if problem:
        fixed = re.sub(r",(?=\S)", ", ", re.sub(r":(?=[^\s/])", ": ", text))
        raise MosicError(f"--set {key}={text}: read as {value!r}, {problem}; write a mapping with a space after "
                         f"each colon: --set '{key}={fixed}'")
    return value


def mapping_problem(value, where: str = "") -> str | None:
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and ":" in k:
                return f"key {where}{k!r} holds a ':'"
            if v is None:
                return f"key {where}{k!r} has no value (null)"
            sub = mapping_problem(v, f"{where}{k}.")
            if sub:
                return sub
    elif isinstance(value, list):
        for v in value:
            sub = mapping_problem(v, where)
            if sub:
                return sub
    return None


def nearest(name: str, choices) -> str:
    """' (did you mean X?)' for the choice closest to ``name``, or '' when none is close."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if not close:  # a mistyped last part: compare the last dotted parts
        tails = {c.rsplit(".", 1)[-1]: c for c in choices}
        close = [tails[t] for t in difflib.get_close_matches(name.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]}?)" if close else ""


def settings_keys(schema, prefix: str = "") -> dict[str, object]:
    """Every dotted key of a pydantic settings class -> its FieldInfo (nested classes descended)."""
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
        TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation) \
            .validate_python(value, strict=_strict(field))
    except ValidationError as e:
        err = e.errors()[0]
        default = field.get_default(call_default_factory=True)
        raise MosicError(f"--set {shown}: read as {value!r} ({type(value).__name__}), but {key} "
                         f"{_expected(err)}; e.g. --set {key}={yaml_text(default)}") from None


def _is_mapping(field) -> bool:
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


def yaml_text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)


def validation_line(e: ValidationError, schema: type[BaseModel]) -> str:
    """A pydantic error as one line: the first bad field, the value read and what it must be; an
    unknown field with the nearest known one."""
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        keys = list(settings_keys(schema))
        keys += sorted({k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)})
        return f"unknown setting {key!r}{nearest(key, keys)}{more}"
    return f"{key} = {err.get('input')!r}: {err['msg']}{more}"
