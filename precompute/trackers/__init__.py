"""Point trackers behind one interface: ``cotracker3``, ``lk`` and ``oracle``."""

from mosic.precompute.trackers.base import (  # noqa: F401
    TRACKERS,
    Tracker,
    TrackResult,
    create_tracker,
)

# The built-in trackers register themselves on import (one-way: they import base, never the reverse).
from mosic.precompute.trackers import cotracker, lk, oracle  # noqa: E402, F401
