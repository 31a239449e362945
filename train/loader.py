"""The training loader: a DataLoader over a :class:`~mosic.train.dataset.ClipDataset` whose sampler
carries the epoch with every index, resumes mid-epoch, and shards over DDP ranks; and the check
that its workers' batches fit in shared memory.

```python
loader = make_loader(ds, batch_size=64, num_workers=4, shuffle=True, seed=0, drop_last=True,
                     distributed=False)
for epoch in range(epochs):
    loader.set_epoch(epoch)            # reaches the sampler, the dataset and (through the indices) the workers
    for batch in loader:               # frames uint8 [B,T,3,S,S], tracks [B,T,N,2], visibility [B,T,N], index, video_id
        frames = normalize_frames(batch["frames"].to(device), mean, std)   # float32, on the device
```

Batches come in pinned memory when ``pin_memory`` (an asynchronous host-to-device copy). The
epoch travels with every index: the sampler yields ``(epoch, i)`` pairs, because
``dataset.set_epoch`` in the main process never reaches the copies held by persistent workers.
The order of an epoch is a pure function of (seed, epoch), so it is the same for any number of
workers and after a resume.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from mosic import MosicError
from mosic.stopping import SIGNALS
from mosic.train.dataset import ClipDataset, check_epoch, collate_clips

log = logging.getLogger("mosic.train")


def _seed_from(*ints: int) -> int:
    """A 63-bit torch seed from non-negative integers (no collisions like seed + epoch has)."""
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(1, dtype=np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """Yields ``(epoch, i)`` pairs so the epoch reaches persistent workers with every index.
    Order: a permutation from a torch.Generator seeded by (seed, epoch) — the same in every run and
    for any number of workers — or, when distributed, this rank's share from a DistributedSampler."""

    def __init__(
        self,
        dataset: ClipDataset,
        shuffle: bool = True,
        seed: int = 0,
        distributed: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ):
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.skip = 0  # samples of this epoch already consumed (a run resumed mid-epoch)
        self.inner = (
            DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                               seed=self.seed, drop_last=drop_last)
            if distributed else None
        )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = check_epoch(epoch)
        self.skip = int(skip)
        if self.inner is not None:
            self.inner.set_epoch(self.epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def order(self) -> list[int]:
        if self.inner is not None:
            return [int(i) for i in self.inner]
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(n))
        # the permutation DistributedSampler draws (seed + epoch), so that K processes with batch
        # b see, step by step, the same global batches as one process with batch K * b
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return torch.randperm(n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        e = self.epoch  # fixed when the epoch's iterator is made, whatever happens later
        return iter([(e, i) for i in self.order()[self.skip:]])

    def __len__(self) -> int:
        return (len(self.inner) if self.inner is not None else len(self.dataset)) - self.skip


class ClipLoader(DataLoader):
    """A DataLoader with ``set_epoch`` (forwarded to its :class:`EpochSampler`)."""

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Start epoch ``epoch``, leaving out its first ``skip_batches`` batches (for a resume)."""
        self.sampler.set_epoch(epoch, skip_batches * self.batch_size)


def batch_bytes(dataset, batch_size: int) -> int:
    """Bytes of one batch's frames (uint8 [B, T, 3, S, S]) as the workers hand it over."""
    try:
        T = int(dataset.reader.spec.clips.length)
        return batch_size * T * 3 * int(dataset.out_size) ** 2
    except AttributeError:  # another dataset
        return 0


def shared_memory_check(need: int, path: str = "/dev/shm") -> str:
    """Workers hand batches over through shared memory (/dev/shm): when it holds less than twice
    ``need`` bytes free (a container's default is 64 MB), switch torch to the file-system sharing
    strategy, which does not use it, and say so. Returns the strategy in use."""
    import shutil

    import torch.multiprocessing as tmp

    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = 0
    if free < 2 * need and tmp.get_sharing_strategy() != "file_system":
        log.warning("%s has %.0f MB free, the loader's workers may hold %.0f MB of batches at once: sharing "
                    "tensors through files instead (or give the container more, e.g. docker --shm-size 8g)",
                    path, free / 1e6, need / 1e6)
        tmp.set_sharing_strategy("file_system")
    return tmp.get_sharing_strategy()


def ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: Ctrl-C (sent to the whole foreground process group) and SIGTERM (sent to every
    process of a Slurm job) are the training process's to handle; the workers go on serving batches until it
    stops them (:func:`mosic.stopping.stop_signals`)."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def make_loader(
    dataset: ClipDataset,
    batch_size: int,
    num_workers: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
    distributed: bool = False,
    *,
    num_replicas: int | None = None,
    rank: int | None = None,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    timeout: float = 0,
) -> ClipLoader:
    """A loader over ``dataset``; call ``loader.set_epoch(e)`` before each epoch. ``distributed``
    shards with a DistributedSampler (ranks from torch.distributed unless ``num_replicas``/``rank``
    are given); workers persist between epochs when ``num_workers > 0``. ``pin_memory``: batches
    come in page-locked memory (an asynchronous copy to a GPU); ``timeout``: seconds a worker's batch
    may take before the loader raises (0: forever). With workers, the batches they hold at once must
    fit in /dev/shm, else tensors are shared through files (:func:`shared_memory_check`)."""
    if batch_size < 1:
        raise MosicError(f"batch_size must be at least 1, got {batch_size}")
    sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed, distributed=distributed,
                           num_replicas=num_replicas, rank=rank, drop_last=drop_last)
    g = torch.Generator()
    g.manual_seed(_seed_from(seed, 0, 1))  # only seeds the workers' base_seed; crops do not use it
    kw: dict[str, Any] = {}
    if num_workers > 0:
        # no cv2.setNumThreads in workers: in a forked child it deadlocks once the parent's cv2
        # pool has gone idle (it destroys a condition variable the parent's threads waited on)
        kw["persistent_workers"] = True
        kw["worker_init_fn"] = ignore_stop_signals
        kw["timeout"] = float(timeout)
        if prefetch_factor is not None:
            kw["prefetch_factor"] = prefetch_factor
        shared_memory_check(batch_bytes(dataset, batch_size) * num_workers * (prefetch_factor or 2))
    return ClipLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        collate_fn=collate_clips, drop_last=drop_last, pin_memory=pin_memory, generator=g, **kw,
    )
