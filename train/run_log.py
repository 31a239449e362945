"""Where a run's rows go, and how they are read back: ``log.jsonl`` (every row, the record every reader uses,
through :func:`read_log`), TensorBoard
(``train.tensorboard``, ``RUN/tb/``) and Weights & Biases (``train.wandb.project``, ``RUN/wandb/``), the same
scalars in both. Rank 0 only; the other ranks write nothing.

Weights & Biases: the run's resolved settings are its config, and its run id is kept in ``RUN/wandb_id`` so a
resumed run logs under the same wandb run. ``WANDB_MODE=offline`` (wandb's own variable) logs without a
network and ``wandb sync RUN/wandb/offline-run-*`` uploads later; a missing package is one line.

A resumed run goes on from its last checkpoint: :func:`cut_log` first drops the rows written after that
checkpoint's step (the steps about to be taken again), so ``log.jsonl`` holds each step once; :func:`read_log`
also keeps only the last row per (kind, step), for logs written before that rule. ``loss.png`` (the
training loss) and ``validation.png`` are redrawn from the log this way.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from mosic import MosicError
from mosic.config import PipelineConfig

log = logging.getLogger("mosic.train")

WANDB_ID_FILE = "wandb_id"
LOG_FILE = "log.jsonl"


def read_log(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The rows of a run's ``log.jsonl`` (a run folder or the file), one per (kind, step): the last one
    written, as a resumed run may have repeated steps; by step. ``kind``: only the rows of that kind
    (``"train"``: the loss rows, which carry no kind; ``"validation"``). A damaged line is skipped."""
    path = Path(path)
    path = path / LOG_FILE if path.is_dir() else path
    rows: dict[tuple[str, int], dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
                key = (r.get("kind", "train"), int(r["step"]))
            except (ValueError, KeyError, TypeError):
                continue
            if kind is None or key[0] == kind:
                rows.pop(key, None)  # re-inserted: the order is the order of the last writes
                rows[key] = r
    return sorted(rows.values(), key=lambda r: int(r["step"]))


def cut_log(path: Path, step: int) -> int:
    """Drop the rows of ``log.jsonl`` (a run folder or the file) after ``step``, the step a resumed run goes
    on from (rewritten atomically). Returns how many rows were dropped."""
    path = Path(path)
    path = path / LOG_FILE if path.is_dir() else path
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            late = int(json.loads(line)["step"]) > step
        except (ValueError, KeyError, TypeError):
            late = False
        if late:
            dropped += 1
        else:
            keep.append(line + "\n")
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(keep))
        tmp.replace(path)
    return dropped


@functools.cache
def _warn_no_plot() -> None:
    """Once per process: training goes on without matplotlib, the loss in log.jsonl only."""
    log.warning("matplotlib is not installed: no loss.png (the loss is in log.jsonl); pip install matplotlib")


def plot_loss(run: Path, png: Path | None = None) -> Path | None:
    """Draw the training loss of the run in folder ``run`` (its ``log.jsonl``, read by :func:`read_log`) into
    ``png`` (default ``run/loss.png``); None when there is no loss row yet, or no matplotlib (GPU node images
    often lack it: the loss is in log.jsonl all the same, and a warning says so once)."""
    rows = [r for r in read_log(run, "train") if "loss" in r]
    if not rows:
        return None
    try:
        import matplotlib
    except ImportError:
        _warn_no_plot()
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="." if len(rows) < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss (global batch)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = Path(png) if png is not None else Path(run) / "loss.png"
    tmp = png.with_name(f".{png.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png)
    return png


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The figures of a row as TensorBoard and wandb show them: a training row's float values by name, a
    validation row's ``val_X`` as ``val/X``."""
    if row.get("kind") == "validation":
        return {f"val/{k[4:]}": float(v) for k, v in row.items() if k.startswith("val_")}
    return {k: v for k, v in row.items() if isinstance(v, float)}


class RunLog:
    """The run's log sinks, opened for the run and closed with ``closing`` on every exit path."""

    def __init__(self, closing: ExitStack, out: Path, cfg: PipelineConfig, main: bool):
        ts = cfg.train
        self.file = closing.enter_context(open(out / LOG_FILE, "a")) if main else None
        self.tb = _tensorboard(closing, out) if ts.tensorboard and main else None
        self.wandb = _wandb(closing, out, cfg) if ts.wandb.project is not None and main else None

    def write(self, row: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        figures = scalars(row)
        if self.tb is not None:
            for k, v in figures.items():
                self.tb.add_scalar(k, v, row["step"])
        if self.wandb is not None:
            self.wandb.log({**figures, "epoch": row.get("epoch")}, step=int(row["step"]))


def _tensorboard(closing: ExitStack, out: Path):
    """A TensorBoard writer in ``out/tb``, closed with ``closing``; None without TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed; logging to log.jsonl only")
        return None
    tb = SummaryWriter(out / "tb")
    closing.callback(tb.close)
    return tb


def _wandb(closing: ExitStack, out: Path, cfg: PipelineConfig):
    """A wandb run for ``out`` (the same one again when the run resumes), finished with ``closing``."""
    try:
        import wandb
    except ImportError:
        raise MosicError("train.wandb.project is set but wandb is not installed: pip install wandb (or "
                         "pip install 'mosic[wandb]'), or leave train.wandb.project null") from None
    ws = cfg.train.wandb
    id_file = out / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    run = wandb.init(project=ws.project, entity=ws.entity, name=ws.name or out.name, dir=str(out), id=run_id,
                     resume="allow", config=cfg.model_dump(mode="json", by_alias=True))
    closing.callback(run.finish)
    return run
