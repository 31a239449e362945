"""Stopping a long job where it is safe: Ctrl-C (SIGINT) and SIGTERM (what Slurm and most schedulers send
before they kill a job, and what they send a preempted job) handled alike, in every long command.

``with stop_signals() as stop:`` installs the handlers for the block (main thread only; elsewhere it does
nothing) and restores the previous ones after it:

- ``stop_signals(at_once=True)``: a signal raises :class:`StopRequested` (a ``KeyboardInterrupt``) where
  the program is, as Ctrl-C does; jobs that keep their work in whole units (a store chunk, a protocol's
  figures) catch it, say what is kept and how to go on;
- ``stop_signals(at_once=False)``: a signal only sets ``stop.requested``; the loop reads it at its safe
  points (a training step's end), saves, and stops. A second signal raises at once, for the impatient.

``stop.exit_code`` is the shell's convention, 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """A stop signal arrived (``signame``: SIGINT or SIGTERM)."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame


class StopFlag:
    """What :func:`stop_signals` yields: whether a stop was asked for, by which signal, and the exit code."""

    def __init__(self, at_once: bool):
        self.at_once = at_once
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signame(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def handle(self, signum: int, frame) -> None:
        again = self.signum is not None
        self.signum = signum
        if self.at_once or again:
            raise StopRequested(signal.Signals(signum).name)


@contextmanager
def stop_signals(at_once: bool = True, signals: tuple[int, ...] = SIGNALS) -> Iterator[StopFlag]:
    """Handle ``signals`` as a stop for the duration of the block (see the module's docstring)."""
    flag = StopFlag(at_once)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, flag.handle)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
