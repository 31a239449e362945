"""``mosic-train --slurm``: a training run as one Slurm job through submitit (nodes x GPUs per node
processes, one per GPU), and its preemption: the job checkpoints and requeues itself, and the requeued job
resumes from the run's latest checkpoint (resume is bit-exact, so the result equals an uninterrupted run).

The job's callable, :class:`TrainJob`, reads the distributed environment from submitit's ``JobEnvironment``
into torchrun's variables and calls the same :func:`mosic.train.train.train`. Every start of the job (the
first, a requeue after preemption or the time limit, a requeue by Slurm itself) continues the run folder
when it holds a checkpoint; the submission refuses a folder that already holds a run unless ``--resume``.

Stopping goes through :mod:`mosic.stopping`: while the loop handles stop signals, submitit's preemption
signal is passed to it as a SIGTERM (the loop saves at the end of its step), and the job requeues once the
loop has stopped; otherwise submitit requeues at once and the job continues from the last saved checkpoint.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from mosic import MosicError
from mosic.config import PipelineConfig, TrainSettings
from mosic.slurm import export_job_environment, import_submitit, make_executor
from mosic.stopping import StopFlag
from mosic.train.checkpoint import latest_checkpoint

import_submitit()  # this module is imported only for --slurm: one line when submitit is missing
from submitit.helpers import Checkpointable  # noqa: E402


class PreemptionRelay:
    """The job's handler of submitit's preemption signal: while the training loop handles stop signals
    (a :class:`mosic.stopping.StopFlag` holds SIGTERM), the signal becomes the loop's stop and the requeue
    waits until the loop has saved; otherwise submitit's own handler checkpoints and requeues at once."""

    def __init__(self, requeue):
        self.requeue = requeue  # submitit's handler: calls checkpoint(), requeues, exits
        self.pending = False

    def __call__(self, signum: int, frame) -> None:
        loop = signal.getsignal(signal.SIGTERM)
        if isinstance(getattr(loop, "__self__", None), StopFlag) and not self.pending:
            self.pending = True
            loop(signal.SIGTERM, frame)
        else:
            self.requeue(signum, frame)

    def requeue_now(self) -> None:
        self.requeue(preemption_signal(), None)


def preemption_signal() -> int:
    from submitit import JobEnvironment

    return JobEnvironment._usr_sig()


class TrainJob(Checkpointable):
    """One training run as a submitit job (the same callable on every task; submitit resubmits it as it is
    on preemption: see :meth:`checkpoint`)."""

    def __init__(self, cfg: PipelineConfig, ts: TrainSettings, out: Path):
        self.cfg, self.ts, self.out = cfg, ts, Path(out)

    def __call__(self) -> dict:
        from mosic.train.train import TrainingStopped, train

        export_job_environment()
        relay = PreemptionRelay(signal.getsignal(preemption_signal()))
        signal.signal(preemption_signal(), relay)
        resume = latest_checkpoint(self.out).exists()  # a requeued job continues its run
        try:
            res = train(self.cfg, self.ts, self.out, resume=resume, progress=False)
        except (TrainingStopped, KeyboardInterrupt, SystemExit):  # the loop's stop: a checkpoint at the step reached
            if relay.pending:
                relay.requeue_now()
            raise
        if relay.pending:
            relay.requeue_now()
        return res

    def checkpoint(self, *args: Any, **kwargs: Any):
        """The same job again: it resumes from the run's latest checkpoint (see :meth:`__call__`)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TrainJob(self.cfg, self.ts, self.out))


def submit_training(cfg: PipelineConfig, ts: TrainSettings, out: Path, resume: bool = False):
    """Submit the run to ``cfg.slurm``'s cluster: ``nodes`` x ``gpus_per_node`` processes, one per GPU (with
    ``train.device=cpu`` the same number of processes on CPUs). Returns the submitit job; its output is in ``RUN/slurm/<job id>/`` unless ``slurm.folder``."""
    s = cfg.slurm
    out = Path(out)
    if latest_checkpoint(out).exists() and not resume:
        raise MosicError(f"{out} already holds a run (checkpoints/latest.pt): pass --resume to continue it, "
                         "or choose another --out")
    if resume and not latest_checkpoint(out).exists():
        raise MosicError(f"--resume: no checkpoint at {latest_checkpoint(out)}")
    if s.cluster == "local" and s.nodes > 1:
        raise MosicError("slurm.cluster=local runs on this machine: use slurm.nodes=1 (more processes: "
                         "slurm.gpus_per_node)")
    tasks = max(1, s.gpus_per_node)  # with train.device=cpu: processes per node, no GPUs asked for
    folder = Path(s.folder) if s.folder else out / "slurm"
    ex = make_executor(s, folder, f"mosic-train-{out.name}", tasks_per_node=tasks, nodes=s.nodes,
                       gpus_per_node=0 if ts.device == "cpu" else s.gpus_per_node)
    return ex.submit(TrainJob(cfg, ts, out))
