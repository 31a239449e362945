"""Frame sources: one interface over YouTube-VOS, DAVIS, plain video files and the synthetic set."""

from mosic.data.base import (  # noqa: F401
    SOURCES,
    ClipRef,
    FrameSource,
    VideoInfo,
    create_source,
    plan_clips,
)

# The built-in sources register themselves on import (one-way: they import base, never the reverse).
from mosic.data import sources, synthetic, video_files  # noqa: E402, F401
