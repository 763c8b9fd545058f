"""Background monthly rotation: archive closed months, drop their Redis keys after retention.

Every router runs it; archiving is idempotent and serialised in PostgreSQL, so
several routers doing it at once only find the work done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from shard_manager.seasons import label, rotate
from shard_manager.shardmap import ShardMap

log = logging.getLogger(__name__)


class SeasonKeeper:
    def __init__(
        self, dsn: str, shard_map: ShardMap, now: Callable[[], datetime], *, interval_s: float, retention_s: float
    ) -> None:
        self.dsn = dsn
        self.shard_map = shard_map
        self.now = now
        self.interval_s = interval_s
        self.retention = timedelta(seconds=retention_s)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self) -> None:
        archived, dropped = await asyncio.to_thread(rotate, self.dsn, self.shard_map, self.now(), self.retention)
        for result in archived:
            if result.created:
                log.info("archived %s: %d players", label(result.month), result.players)
        for month in dropped:
            log.info("dropped the Redis keys of archived month %s", label(month))

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("monthly rotation failed; retrying in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)
