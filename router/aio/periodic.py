"""A background loop that calls one coroutine every so often, for the life of a router."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from router.errors import LeaderboardError

log = logging.getLogger(__name__)


class Periodic:
    """Runs `job` every `interval_s`; an expected outage (a LeaderboardError) is a
    warning, anything else is logged with its traceback, and the loop goes on."""

    def __init__(self, name: str, job: Callable[[], Awaitable[object]], interval_s: float, *, first_now: bool) -> None:
        self.name = name
        self.job = job
        self.interval_s = interval_s
        self.first_now = first_now
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        if not self.first_now:
            await asyncio.sleep(self.interval_s)
        while True:
            try:
                await self.job()
            except LeaderboardError as exc:
                log.warning("%s: %s", self.name, exc)
            except Exception:
                log.exception("%s failed; retrying in %.1f s", self.name, self.interval_s)
            await asyncio.sleep(self.interval_s)
