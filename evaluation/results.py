"""Results tables: one row per evaluated model, one column per data set / protocol / setting.

A row is a plain dict::

    {"name": "dinov2-s14", "model": "vit_small_patch14_dinov2", "weights": "pretrained", "preset": "paper",
     "figures": {"voc/linear": 78.9, "voc/clustering K=21": 40.1, "davis/video frame": 57.4, ...},
     "settings": {"voc/linear": {"protocol": "linear", "img_size": 448, ..., "data": {...}}, ...},
     "provenance": {"model": ..., "weights_sha256": ...}, "details": {...}, "date": "2026-01-01T12:00:00"}

``figures`` holds the numbers (percentages) shown in tables and comparisons; ``settings``, for
each figure, the protocol's full resolved settings and the data set it ran on (split, size,
fingerprint of the image list); ``provenance`` the backbone; ``details`` the protocols' other
outputs (JSON only). :func:`compare` refuses (or, asked to, flags) figures whose settings differ.
:func:`save_results` writes ``<stem>.json`` (the rows) and ``<stem>.md`` (the table).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mosic import MosicError

FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------------
# rows, files
# ------------------------------------------------------------------------------------------------
def make_row(name: str, model: str, weights: str, figures: dict[str, float], settings: dict | None = None,
             details: dict | None = None, preset: str | None = None, provenance: dict | None = None) -> dict:
    from datetime import datetime

    return {"name": name, "model": model, "weights": weights, "preset": preset,
            "figures": {k: _num(v) for k, v in figures.items()},
            "settings": json.loads(json.dumps(settings or {}, default=_json_default)),
            "provenance": provenance or {}, "details": details or {},
            "date": datetime.now().isoformat(timespec="seconds")}


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def upsert(rows: list[dict], row: dict, merge: bool = False) -> list[dict]:
    """``rows`` with ``row`` replacing the row of the same name (kept in its place) or appended.
    With ``merge``, figures (and settings, details) of the old row that the new one lacks are kept."""
    out = []
    done = False
    for r in rows:
        if r.get("name") == row["name"] and not done:
            if merge:
                if r.get("preset") != row.get("preset") or r.get("provenance") != row.get("provenance"):
                    row = {**row, "preset": _mixed(r.get("preset"), row.get("preset"))}
                row = {**row, "figures": {**r.get("figures", {}), **row["figures"]},
                       "settings": {**r.get("settings", {}), **row.get("settings", {})},
                       "details": {**r.get("details", {}), **row.get("details", {})}}
            out.append(row)
            done = True
        elif r.get("name") != row["name"]:
            out.append(r)
    if not done:
        out.append(row)
    return out


def add_to_table(rows: list[dict], row: dict, replace: bool = False) -> tuple[list[dict], list[str]]:
    """``rows`` with ``row``'s figures added to the row of the same name (kept in its place; a new
    row is appended). Only the figures ``row`` holds are replaced, with their settings and details;
    the others stay. An old figure computed with other settings than its replacement (another
    preset, ``--set``, input size, data...) is not lost: it moves, with its settings, to the row's
    ``superseded`` list (JSON only). ``row["errors"]`` (protocol label -> message) replaces the old
    row's errors of the same labels, and a label the new row has a figure or setting for loses its
    old error. ``replace``: the old row is dropped first (its figures are not kept). Returns the
    rows and the names of the old figures that were replaced."""
    old = next((r for r in rows if r.get("name") == row["name"]), None)
    if old is None or replace:
        return upsert(rows, row), []
    replaced = [k for k in row.get("figures", {}) if k in old.get("figures", {})]
    superseded = list(old.get("superseded") or [])
    for k in replaced:
        diff = settings_differences(old, row, k)
        if diff is None and old.get("settings", {}).get(k) == row.get("settings", {}).get(k):
            continue
        if diff != []:
            superseded.append({"figure": k, "value": old["figures"][k], "settings": old.get("settings", {}).get(k),
                               "preset": old.get("preset"), "date": old.get("date"), "differences": diff})
    merged = upsert(rows, row, merge=True)
    new = next(r for r in merged if r.get("name") == row["name"])
    errors = {k: v for k, v in (old.get("errors") or {}).items()
              if not any(f == k or f.startswith(k + " ") for f in row.get("figures", {}))}
    errors.update(row.get("errors") or {})
    new["errors"] = errors
    if superseded:
        new["superseded"] = superseded
    return merged, replaced


def superseded_since(before: list[dict], after: list[dict], name: str) -> list[dict]:
    """The figures of row ``name`` that moved to its ``superseded`` list between two tables."""
    def of(rows):
        return next((r.get("superseded") or [] for r in rows if r.get("name") == name), [])

    return of(after)[len(of(before)):]


def row_for_preset(rows: list[dict], name: str, preset: str, replace: bool = False) -> str:
    """The row a run of ``preset`` named ``name`` writes: ``name``, unless that row holds figures of
    another preset; then ``name (preset)``, so figures of different presets never replace each
    other (``replace``: the row ``name`` is written afresh)."""
    old = next((r for r in rows if r.get("name") == name), None)
    if replace or old is None or not old.get("figures") or old.get("preset") == preset:
        return name
    apart = f"{name} ({preset})"
    other = next((r for r in rows if r.get("name") == apart), None)
    if other is not None and other.get("figures") and other.get("preset") != preset:
        raise MosicError(f"rows {name!r} and {apart!r} both hold figures of other presets than {preset}; "
                         "give another --name, or --replace to write the row afresh")
    return apart


def _mixed(a, b):
    return a if a == b else "mixed"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(float(o)) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def stem_of(out_stem: str | Path) -> Path:
    p = Path(out_stem)
    return p.with_suffix("") if p.suffix in (".json", ".md") else p


def save_results(rows: Sequence[dict], out_stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md``, each under a unique temporary name renamed over the
    old file (a reader never sees half a file); returns both paths. Several writers of one table
    share it through :func:`mosic.evaluation.results_file.add_row`, which holds its lock."""
    stem = stem_of(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for r in rows:
        if not r.get("name"):
            raise MosicError("every results row needs a name")
    js, md = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    _write_atomic(js, json.dumps({"version": FORMAT_VERSION, "rows": list(rows)}, indent=1, default=_json_default))
    _write_atomic(md, markdown_table(rows) + "\n")
    return js, md


def _write_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_results(path: str | Path) -> list[dict]:
    """The rows of a results file written by :func:`save_results` (``.json``; a ``.md`` path or a
    stem is read from the ``.json`` beside it). A missing file is an error."""
    p = Path(path)
    if p.suffix != ".json":
        p = stem_of(p).with_name(stem_of(p).name + ".json")
    if not p.is_file():
        raise MosicError(f"results file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MosicError(f"{p} is not a results file (bad JSON: {e})") from None
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r and "figures" in r for r in rows):
        raise MosicError(f"{p} is not a results file: expected {{'rows': [{{'name', 'figures', ...}}]}}")
    return rows


def load_or_empty(path: str | Path) -> list[dict]:
    p = Path(path)
    js = p if p.suffix == ".json" else stem_of(p).with_name(stem_of(p).name + ".json")
    return load_results(js) if js.exists() else []


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def columns(rows: Iterable[dict]) -> list[str]:
    """Figure names in order of first appearance."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r.get("figures", {}):
            seen.setdefault(k, None)
    return list(seen)


def _fmt(v, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


#: how every table mosic writes begins (a file that does not is not replaced)
TABLE_HEAD = "| model | backbone | weights | preset |"


def markdown_table(rows: Sequence[dict]) -> str:
    """One row per model (name, model, weights, preset), one column per figure (mIoU etc., percent)."""
    cols = columns(rows)
    head = ["model", "backbone", "weights", "preset", *cols]
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |",
             "|" + "|".join(["---"] * 4 + ["---:"] * len(cols)) + "|"]
    for r in rows:
        figs = r.get("figures", {})
        cells = ([r.get("name", ""), r.get("model", ""), r.get("weights", ""), r.get("preset") or "?"]
                 + [_fmt(figs.get(c)) for c in cols])
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    failed = [(r.get("name", ""), k, v) for r in rows for k, v in (r.get("errors") or {}).items()]
    if failed:
        lines += ["", "Failed (no figure):", *(f"- {_cell(n)}, {_cell(k)}: {_cell(v)}" for n, k, v in failed)]
    return "\n".join(lines)


def _as_rows(x) -> list[dict]:
    if isinstance(x, (str, Path)):
        return load_results(x)
    if isinstance(x, dict):
        return [x]
    return list(x)


def pairs(a, b, a_row: str | None = None, b_row: str | None = None) -> list[tuple[dict, dict]]:
    """Rows of A and B to compare: the named ones; else each row of B evaluated from a training run's
    backbone against the row of A evaluated from that run's ``backbone_init.pth`` (the fair
    baseline; the provenance's ``run_init_sha256``); else rows of the same name; else the only row
    of A against every row of B (a baseline file); else an error asking for names."""
    A, B = _as_rows(a), _as_rows(b)
    if not A or not B:
        raise MosicError("compare: a results file has no rows")

    def pick(rows, name, which):
        for r in rows:
            if r["name"] == name:
                return r
        raise MosicError(f"compare: no row named {name!r} in {which} (rows: {', '.join(r['name'] for r in rows)})")

    if a_row or b_row:
        ra = [pick(A, a_row, "A")] if a_row else (A if len(A) == 1 else None)
        rb = [pick(B, b_row, "B")] if b_row else B
        if ra is None:
            raise MosicError("compare: A has several rows; name one with --a-row")
        return [(ra[0], r) for r in rb]
    # a trained backbone's fair baseline: the same run's exported initial backbone (backbone_init.pth),
    # whose position embedding went through the same resampling as the trained one
    by_sha = {(r.get("provenance") or {}).get("weights_sha256"): r for r in A}
    by_sha.pop(None, None)
    own = [(by_sha[run_init(r)], r) for r in B if run_init(r) in by_sha]
    if own:
        return own
    names_a = {r["name"]: r for r in A}
    common = [(names_a[r["name"]], r) for r in B if r["name"] in names_a]
    if common:
        return common
    if len(A) == 1:
        return [(A[0], r) for r in B]
    raise MosicError(
        f"compare: cannot tell which rows to compare (A: {', '.join(names_a)}; B: {', '.join(r['name'] for r in B)}); "
        "give --a-row and --b-row")


def run_init(row: dict) -> str | None:
    """SHA-256 of the initial backbone of the training run whose backbone ``row`` evaluated."""
    return (row.get("provenance") or {}).get("run_init_sha256")


def baseline_note(a_row: dict, b_row: dict) -> str | None:
    """What A is for B when B is a training run's backbone: the run's own initial backbone (the fair
    baseline), the hub's backbone, or some other backbone."""
    init = run_init(b_row)
    if init is None:
        return None
    pa = a_row.get("provenance") or {}
    if pa.get("weights_sha256") == init:
        return ("Baseline: A is this run's initial backbone (backbone_init.pth), resampled as B was: at the "
                "training size, then for each protocol's input size.")
    why = ("B's position embedding was resampled at the training size and again for evaluation, A's once, so "
           "part of B − A is resampling; evaluate the run's backbone_init.pth (mosic-eval run --weights "
           "RUN/backbone_init.pth) for the fair baseline.")
    if str(pa.get("weights", "")).startswith("timm hub"):
        return "Baseline: A is the hub backbone, not this run's initial backbone: " + why
    return "Baseline: A is not this run's initial backbone (backbone_init.pth): " + why


def gains(a_row: dict, b_row: dict) -> dict[str, tuple[float | None, float | None, float | None]]:
    """{figure: (A, B, B - A)} over the figures of either row (A's order first)."""
    fa, fb = a_row.get("figures", {}), b_row.get("figures", {})
    out = {}
    for k in columns([a_row, b_row]):
        va, vb = fa.get(k), fb.get(k)
        out[k] = (va, vb, None if va is None or vb is None else vb - va)
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


#: settings that never change a figure
_NEUTRAL = {"device", "progress"}


def settings_differences(a_row: dict, b_row: dict, figure: str) -> list[str] | None:
    """The settings (dotted keys, with both values) in which the two rows' ``figure`` differ;
    None when either row does not record them."""
    sa, sb = a_row.get("settings", {}).get(figure), b_row.get("settings", {}).get(figure)
    if not isinstance(sa, dict) or not isinstance(sb, dict) or "protocol" not in sa or "protocol" not in sb:
        return None
    fa, fb = _flatten(sa), _flatten(sb)
    out = []
    for k in sorted(set(fa) | set(fb)):
        if k.split(".")[-1] in _NEUTRAL:
            continue
        if fa.get(k, "<unset>") != fb.get(k, "<unset>"):
            out.append(f"{k}: {fa.get(k, '<unset>')!r} vs {fb.get(k, '<unset>')!r}")
    return out


def compare(a_json, b_json, a_row: str | None = None, b_row: str | None = None, allow_mismatch: bool = False) -> str:
    """Markdown: for each pair of rows (see :func:`pairs`), every figure of A and B side by side
    and the gain B - A. A figure both rows have but computed with different settings (protocol
    settings, input size, data set, split, image list) is an error naming the differences, or,
    with ``allow_mismatch``, is marked ``≠`` and its differences listed under the table; a figure
    whose settings a row does not record is marked ``?``."""
    blocks = []
    for ra, rb in pairs(a_json, b_json, a_row, b_row):
        lines = [f"**{_cell(rb['name'])}** vs **{_cell(ra['name'])}** (presets: A {ra.get('preset') or '?'}, "
                 f"B {rb.get('preset') or '?'})", "",
                 f"| figure | A: {_cell(ra['name'])} | B: {_cell(rb['name'])} | B − A | settings |",
                 "|---|---:|---:|---:|---|"]
        note = baseline_note(ra, rb)
        if note:
            lines[1:1] = ["", note]
        notes = []
        for k, (va, vb, d) in gains(ra, rb).items():
            mark = ""
            if va is not None and vb is not None:
                diff = settings_differences(ra, rb, k)
                if diff is None:
                    mark = "?"
                    notes.append(f"- {k}: settings not recorded in {'A' if 'protocol' not in ra.get('settings', {}).get(k, {}) else 'B'}")
                elif diff:
                    if not allow_mismatch:
                        raise MosicError(f"compare: {k!r} of {ra['name']!r} and {rb['name']!r} was computed with "
                                         f"different settings ({'; '.join(diff[:6])}{'; ...' if len(diff) > 6 else ''}); "
                                         "rerun one of them with the other's settings, or pass --allow-mismatch to "
                                         "show them flagged")
                    mark = "≠"
                    notes.append(f"- {k}: " + "; ".join(diff))
                else:
                    mark = "same"
            lines.append(f"| {_cell(k)} | {_fmt(va)} | {_fmt(vb)} | {_fmt(d, signed=True)} | {mark} |")
        if notes:
            lines += ["", "Not comparable as they stand (≠: different settings, ?: not recorded):", *map(_cell, notes)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot_gains(a, b, png: str | Path, a_row: str | None = None, b_row: str | None = None) -> Path:
    """Horizontal bar chart of B - A per figure (one bar group per compared pair)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = pairs(a, b, a_row, b_row)
    keys = columns([r for p in ps for r in p])
    keys = [k for k in keys if any(gains(ra, rb).get(k, (None,) * 3)[2] is not None for ra, rb in ps)]
    if not keys:
        raise MosicError("plot: the compared rows share no figure")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(keys) * max(1, len(ps)) + 1.2))
    h = 0.8 / len(ps)
    y = np.arange(len(keys))
    for i, (ra, rb) in enumerate(ps):
        g = gains(ra, rb)
        vals = [(g.get(k, (None, None, None))[2] or 0.0) for k in keys]
        colour = ["tab:green" if v >= 0 else "tab:red" for v in vals] if len(ps) == 1 else None
        bars = ax.barh(y + (i - (len(ps) - 1) / 2) * h, vals, height=h, label=f"{rb['name']} − {ra['name']}",
                       color=colour)
        for bar, v in zip(bars, vals):
            ax.annotate(f"{v:+.1f}", (v, bar.get_y() + bar.get_height() / 2), xytext=(3 if v >= 0 else -3, 0),
                        textcoords="offset points", ha="left" if v >= 0 else "right", va="center", fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, keys)
    ax.invert_yaxis()
    ax.set_xlabel("gain (points)")
    ax.set_title("B − A" if len(ps) > 1 else f"{ps[0][1]['name']} − {ps[0][0]['name']}")
    if len(ps) > 1:
        ax.legend(fontsize=8)
    lo, hi = ax.get_xlim()
    pad = 0.15 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
