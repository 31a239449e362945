"""Slurm jobs through submitit, shared by ``mosic-precompute --slurm`` and ``mosic-train --slurm``: the
executor of a ``slurm:`` section, and the distributed environment of a job's process read from submitit's
``JobEnvironment`` into the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), so that the same code runs under torchrun and under Slurm.

Preemption and time limits follow submitit's protocol: the job's callable is a
``submitit.helpers.Checkpointable``; on the signal submitit calls its ``checkpoint()``, writes the returned
submission and requeues the job, which then continues from what was saved."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mosic import MosicError
from mosic.config.slurm import SlurmSettings

INSTALL_HINT = "pip install 'mosic[slurm]'"


def import_submitit():
    """submitit, or one line that says how to install it."""
    try:
        import submitit
    except ImportError:
        raise MosicError(f"--slurm needs submitit: {INSTALL_HINT}") from None
    return submitit


def make_executor(s: SlurmSettings, folder: Path, name: str, tasks_per_node: int, nodes: int = 1,
                  gpus_per_node: int = 0) -> Any:
    """A submitit executor for ``s.cluster`` writing its job scripts and output to ``folder``."""
    submitit = import_submitit()
    if s.cluster == "slurm" and shutil.which("sbatch") is None:
        raise MosicError("--slurm: no sbatch on this machine; submit from a Slurm login node, or run the same job "
                         "here as processes with --set slurm.cluster=local")
    folder.mkdir(parents=True, exist_ok=True)
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=s.cluster, slurm_max_num_timeout=s.max_requeues)
    params: dict[str, Any] = {"name": name, "timeout_min": s.time_min, "tasks_per_node": tasks_per_node,
                              "cpus_per_task": s.cpus_per_task, "gpus_per_node": gpus_per_node}
    if s.cluster == "slurm":
        params.update(nodes=nodes, slurm_partition=s.partition, slurm_account=s.account, slurm_qos=s.qos,
                      mem_gb=s.mem_gb, slurm_array_parallelism=s.array_parallelism)
        params = {k: v for k, v in params.items() if v is not None}
    ex.update_parameters(**params)
    return ex


def export_job_environment() -> None:
    """Inside a submitit job: the torchrun variables of this process from submitit's ``JobEnvironment``
    (rank, world size, local rank, the first node as master; ``MASTER_PORT`` is kept when set, else one
    derived from the job id, the same on every node)."""
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def job_ids(jobs: list) -> str:
    """The ids of submitted jobs, for a message (an array's shared id once)."""
    ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
    return ", ".join(ids)
