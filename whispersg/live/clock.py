"""Session time for the live loop, injected: wall time since the source started (scaled for a replay),
or stream time for a lockstep replay, which waits for the loop so that only stream time means anything."""

from __future__ import annotations

import time
from typing import Callable, Optional, Protocol

from whispersg.capture import LiveSource


class Clock(Protocol):
    def now(self, stream_seconds: float) -> float:
        """Session seconds, given how many seconds of the stream the loop has taken."""

    def cost(self, wall_seconds: float) -> float:
        """The stream seconds that ``wall_seconds`` of computing stand for (0 where the stream waits for it)."""


class WallClock:
    """Wall time since ``started_at()`` (``time.monotonic``), times ``speed``; an unpaced replay (speed 0)
    reads wall time, and its computing costs no stream time."""

    def __init__(self, started_at: Callable[[], Optional[float]], speed: float = 1.0) -> None:
        self.started_at = started_at
        self.speed = speed

    def now(self, stream_seconds: float) -> float:
        started = self.started_at() or time.monotonic()
        return (time.monotonic() - started) * (self.speed or 1.0)

    def cost(self, wall_seconds: float) -> float:
        return wall_seconds * self.speed


class StreamClock:
    """Stream time, for a lockstep replay (the producer waits for the loop; unpaced, its computing takes no
    stream time)."""

    def __init__(self, speed: float = 0.0) -> None:
        self.speed = speed

    def now(self, stream_seconds: float) -> float:
        return stream_seconds

    def cost(self, wall_seconds: float) -> float:
        return wall_seconds * self.speed


def source_clock(source: LiveSource) -> Clock:
    """The clock a source's session runs on."""
    if source.lockstep:
        return StreamClock(source.speed)
    return WallClock(lambda: source.started_at, source.speed)
