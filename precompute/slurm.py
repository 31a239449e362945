"""``mosic-precompute --slurm --shards N``: the shards of a store as one Slurm job array through submitit,
array task i running ``--shard i/N`` (the same :func:`mosic.precompute.runner.precompute`); whichever shard
finishes last marks the store complete.

A shard is a :class:`ShardJob`, a ``submitit.helpers.Checkpointable``: a shard that is preempted or reaches
its time limit is requeued as it is, and the re-run continues (finished clips are on disk and skipped)."""

from __future__ import annotations

from pathlib import Path

from mosic import MosicError
from mosic.config import PipelineConfig
from mosic.slurm import import_submitit, make_executor

import_submitit()  # this module is imported only for --slurm: one line when submitit is missing
from submitit.helpers import Checkpointable  # noqa: E402


class ShardJob(Checkpointable):
    """Shard ``shard`` = (i, N) of the store; requeued as it is on preemption (the default ``checkpoint``)."""

    def __init__(self, cfg: PipelineConfig, store: str | None, retry_failed: bool, shard: tuple[int, int]):
        self.cfg, self.store, self.retry_failed, self.shard = cfg, store, retry_failed, shard

    def __call__(self):
        from mosic.precompute.runner import precompute

        return precompute(self.cfg, store=self.store, retry_failed=self.retry_failed, progress=False,
                          shard=self.shard)


def jobs_folder(cfg: PipelineConfig) -> Path:
    """Where the array's job scripts and output go: ``slurm.folder``, else ``STORES/slurm``."""
    if cfg.slurm.folder:
        return Path(cfg.slurm.folder)
    if "://" in cfg.stores:
        raise MosicError(f"stores is a URL ({cfg.stores}): name a local folder for the jobs' output with "
                         "--set slurm.folder=DIR")
    return Path(cfg.stores) / "slurm"


def submit_shards(cfg: PipelineConfig, shards: int, store: str | None = None, retry_failed: bool = True) -> list:
    """Submit ``shards`` array tasks (one process each, on one GPU unless the tracker runs on the CPU).
    Returns the submitit jobs, task i first."""
    if shards < 1:
        raise MosicError(f"--shards {shards}: need at least 1")
    gpus = 0 if cfg.tracker.device == "cpu" else 1
    ex = make_executor(cfg.slurm, jobs_folder(cfg), f"mosic-precompute-{cfg.name}", tasks_per_node=1,
                       gpus_per_node=gpus)
    with ex.batch():
        jobs = [ex.submit(ShardJob(cfg, store, retry_failed, (i, shards))) for i in range(shards)]
    return jobs
