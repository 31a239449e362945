"""The process group of a training run: one process, or every process torchrun launched (on one node
or several) or a Slurm job started (:mod:`mosic.train.slurm`, which sets the same variables), and the
global batch split over them.

Every process reads its place from torchrun's variables: ``RANK`` (0 .. ``WORLD_SIZE`` - 1 over all
nodes) orders the processes, ``LOCAL_RANK`` (0 .. processes on this node - 1) picks this node's GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mosic import MosicError
from mosic.devices import resolve_device


@dataclass
class Dist:
    enabled: bool = False
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun(env=os.environ) -> bool:
    """torchrun (and torch.distributed.launch) set RANK, WORLD_SIZE and MASTER_ADDR for every process."""
    return all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def local_rank(env=os.environ, gpus: int = 0) -> int:
    """This process's index on its node (``LOCAL_RANK``, 0 when absent, as for one process per node),
    checked against the node's ``gpus`` when the run uses them."""
    local = int(env.get("LOCAL_RANK", 0))
    if gpus and local >= gpus:
        raise MosicError(f"LOCAL_RANK is {local} but this node shows {gpus} GPU(s): start at most {gpus} "
                         "processes per node (torchrun --nproc_per_node, slurm.gpus_per_node)")
    return local


def setup_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    """A process group whenever torchrun launched the process, one process included (so that
    ``torchrun --nproc_per_node 1`` runs the same NCCL, DDP and all-reduce paths as K processes)."""
    if launched_by_torchrun():
        cuda = torch.cuda.is_available() and device_pref != "cpu"
        local = local_rank(os.environ, torch.cuda.device_count() if cuda else 0)
        if cuda:
            torch.cuda.set_device(local)
            dist.init_process_group(backend="nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group(backend="gloo")
        d = Dist(True, dist.get_rank(), dist.get_world_size(), local, dist.get_backend())
        return d, torch.device("cuda", local) if cuda else torch.device("cpu")
    return Dist(), resolve_device(device_pref, flag="train.device")


def per_process_batch(global_batch: int, world: int) -> int:
    """Clips per process: the global batch split evenly over the processes."""
    if global_batch % world:
        raise MosicError(f"batch_size {global_batch} is the global batch (clips per optimiser step over all "
                         f"processes) and must split evenly over {world} processes: use a multiple of {world}")
    return global_batch // world
