"""Where and how a command runs as a Slurm job (``--slurm``, through submitit): the ``slurm:`` section of a
pipeline. The same job runs on this machine as processes with ``cluster: local`` (submitit's local executor)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SlurmSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster: Literal["slurm", "local"] = Field(
        "slurm", description="slurm: submit with sbatch; local: run the same job as processes on this machine "
        "(submitit's local executor; the command then waits for it)")
    nodes: int = Field(1, ge=1, description="training: nodes of the job")
    gpus_per_node: int = Field(1, ge=0, description="training: GPUs per node, one process each "
                               "(0: one process per node on CPUs)")
    cpus_per_task: int = Field(8, ge=1, description="CPU cores per process (DataLoader workers, decoding)")
    mem_gb: int | None = Field(None, ge=1, description="memory per node in GB; None: the partition's default")
    partition: str | None = Field(None, description="Slurm partition; None: the cluster's default")
    account: str | None = Field(None, description="Slurm account to charge; None: your default")
    qos: str | None = Field(None, description="Slurm quality of service; None: the default")
    time_min: int = Field(24 * 60, ge=1, description="time limit per job in minutes; a job that reaches it "
                          "checkpoints and requeues (training) or re-runs and continues (precompute shards)")
    max_requeues: int = Field(3, ge=0, description="how many times a job that reaches its time limit is requeued")
    array_parallelism: int = Field(256, ge=1, description="precompute: shards of the array running at once")
    folder: str | None = Field(None, description="the jobs' scripts and output; None: RUN/slurm for training, "
                               "STORES/slurm for precompute")
