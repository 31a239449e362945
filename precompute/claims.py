"""Claims on a local store's chunks, so that several precompute processes started on one store (without
``--shard``) split its work instead of each tracking every clip.

A process works on a chunk only while it holds that chunk's claim: an operating-system lock
(:class:`filelock.FileLock`) on ``.<store name>.claims/chunk_<k>.lock`` beside the store. The lock is the
lease: the operating system drops it when its process ends, however it ends (a crash or ``kill -9``
included), so a dead process's chunk is taken over at once, and nothing has to expire. A process first
takes the free chunks, then waits for the chunks others hold and does whatever they left pending; so every
process ends with the store complete, and the store is the same as one process's. The process that completes
the store removes the claims folder.

Object storage (``s3://``) has no such lock: processes on a remote store claim nothing, and should be given
disjoint ``--shard I/N`` (two processes on a remote store without ``--shard`` both track every clip; the
store is still right, each chunk written whole by one of them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from mosic.store_schema import location
from mosic.store_schema.location import Location


class ChunkClaims:
    """The claims of one local store's chunks (see the module's docstring)."""

    def __init__(self, store: Path):
        self.folder = store.with_name(f".{store.name}.claims")

    @classmethod
    def of(cls, store: Location) -> "ChunkClaims | None":
        """The claims of ``store``; None for a remote store (nothing to claim with)."""
        return None if location.is_remote(store) else cls(Path(store))

    def _lock(self, start: int) -> FileLock:
        return FileLock(self.folder / f"chunk_{start:09d}.lock")

    def _acquire(self, start: int, timeout: float) -> FileLock | None:
        lock = self._lock(start)
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=timeout)
                return lock
            except FileNotFoundError:  # a process that completed the store removed the folder: again
                continue
            except Timeout:
                return None

    def take(self, start: int) -> FileLock | None:
        """The claim of the chunk that starts at clip ``start`` if no other process holds it (release it when
        done), else None."""
        return self._acquire(start, timeout=0)

    def wait(self, start: int) -> FileLock:
        """The claim of the chunk that starts at clip ``start``, once the process that holds it lets it go."""
        return self._acquire(start, timeout=-1)

    def remove(self) -> None:
        """Delete the claims folder once the store is complete (a process still waiting in it makes it again)."""
        shutil.rmtree(self.folder, ignore_errors=True)
