"""Background rotation: archive closed board periods, drop their Redis keys after retention.

Every router runs it; archiving is idempotent and serialised in PostgreSQL, so
several routers doing it at once only find the work done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from router.aio.periodic import Periodic
from router.background.seasons import rotate
from router.shards.client import ShardClients

log = logging.getLogger(__name__)


class SeasonKeeper:
    def __init__(
        self, dsn: str, shards: ShardClients, now: Callable[[], datetime], *, interval_s: float, retention_s: float
    ) -> None:
        self.dsn = dsn
        self.shards = shards  # read at each run: a rebalance may have added shards since start
        self.now = now
        self.interval_s = interval_s
        self.retention = timedelta(seconds=retention_s)
        self._loop = Periodic("season rotation", self.run_once, interval_s, first_now=True)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self) -> None:
        archived, dropped = await asyncio.to_thread(rotate, self.dsn, self.shards.shard_map, self.now(), self.retention)
        for result in archived:
            if result.created:
                log.info("archived %s: %d players", result.board_period, result.players)
        for key in dropped:
            log.info("dropped the Redis keys of archived period %s", key)
