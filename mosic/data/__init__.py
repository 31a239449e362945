"""Frame sources: one interface over YouTube-VOS, DAVIS, plain video files and the synthetic set."""

from mosic.data.base import (  # noqa: F401
    SOURCES,
    ClipRef,
    FrameSource,
    VideoInfo,
    create_source,
    plan_clips,
)
