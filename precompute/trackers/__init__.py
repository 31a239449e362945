"""Point trackers behind one interface: ``cotracker3``, ``lk`` and ``oracle``."""

from precompute.trackers.base import (  # noqa: F401
    TRACKERS,
    Tracker,
    TrackResult,
    create_tracker,
    grid_queries,
)
