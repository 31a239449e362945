"""Where a run's rows go: ``log.jsonl`` (every row, the record every reader uses), TensorBoard
(``train.tensorboard``, ``RUN/tb/``) and Weights & Biases (``train.wandb.project``, ``RUN/wandb/``), the same
scalars in both. Rank 0 only; the other ranks write nothing.

Weights & Biases: the run's resolved settings are its config, and its run id is kept in ``RUN/wandb_id`` so a
resumed run logs under the same wandb run. ``WANDB_MODE=offline`` (wandb's own variable) logs without a
network and ``wandb sync RUN/wandb/offline-run-*`` uploads later; a missing package is one line.
"""

from __future__ import annotations

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
        self.file = closing.enter_context(open(out / "log.jsonl", "a")) if main else None
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
