"""A bounded job queue: transcriptions run on worker threads, never on the event loop.

At most ``workers`` jobs run at once and at most ``capacity`` more wait (a place is
taken before the upload is read, so this also bounds uploads in progress); a job
beyond that is refused at once (the service answers 429) instead of piling up
requests whose clients will time out anyway.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

Result = TypeVar("Result")


class QueueFull(Exception):
    """Every worker is busy and the waiting room is full."""


class JobQueue:
    def __init__(self, workers: int = 1, capacity: int = 8) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.workers = workers
        self.capacity = capacity
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whispersg-job")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._running = 0
        self.completed = 0
        self.rejected = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"workers": self.workers, "running": self._running, "waiting": self._admitted - self._running,
                    "capacity": self.capacity, "completed": self.completed, "rejected": self.rejected}

    def admit(self) -> "Admission":
        """Take a place for a job about to be sent (before its upload is read); raise QueueFull when there is none."""
        with self._lock:
            if self._admitted >= self.workers + self.capacity:
                self.rejected += 1
                raise QueueFull
            self._admitted += 1
        return Admission(self)

    async def run(self, job: Callable[[], Result]) -> Result:
        """Run ``job`` on a worker thread; raise QueueFull when there is no room for it."""
        return await self.admit().run(job)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    async def _run_admitted(self, job: Callable[[], Result]) -> Result:
        def tracked() -> Result:
            with self._lock:
                self._running += 1
            try:
                return job()
            finally:
                with self._lock:
                    self._running -= 1
                    self._admitted -= 1
                    self.completed += 1

        future = self._executor.submit(tracked)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The client went away; a job that never started must give its place back.
            if future.cancel():
                self._release()
            raise

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Admission:
    """A place in the queue, taken before the job exists: ``run`` it once, or ``release`` it."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue, self._held = queue, True

    async def run(self, job: Callable[[], Result]) -> Result:
        self._held = False
        return await self._queue._run_admitted(job)

    def release(self) -> None:
        """Give the place back if no job took it (the request failed before its job was queued)."""
        if self._held:
            self._held = False
            self._queue._release()
