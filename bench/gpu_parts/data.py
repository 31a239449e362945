"""The synthetic sets and their stores (oracle tracks) the other parts read, made once and timed:
the first size for the step and torchrun, both for CoTracker and the loader."""

from __future__ import annotations

from gpu_parts.common import Ctx


def run(ctx: Ctx) -> dict:
    """The synthetic sets and their stores the other parts read (made once, timed here)."""
    out: dict = {"status": "ok"}
    for size in ctx.needed_sizes:
        ctx.data(size)
    out.update({f"{k} s": v for k, v in ctx.data_s.items()})
    return out
