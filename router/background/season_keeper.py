"""Background rotation: archive closed board periods, drop their Redis keys after retention,
keep the audit log's monthly partitions made ahead and dropped past its retention.

Every router runs it; each part is idempotent and serialised in PostgreSQL, so
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
from router.store.audit_log import keep_event_months

log = logging.getLogger(__name__)


class SeasonKeeper:
    def __init__(
        self,
        dsn: str,
        shards: ShardClients,
        now: Callable[[], datetime],
        *,
        interval_s: float,
        retention_s: float,
        event_retention_months: int = 0,
    ) -> None:
        self.dsn = dsn
        self.event_retention_months = event_retention_months
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
        now = self.now()
        for name in await asyncio.to_thread(keep_event_months, self.dsn, self.event_retention_months):
            log.info("dropped the audit log's partition %s (LB_EVENT_RETENTION_MONTHS)", name)
        archived, dropped = await asyncio.to_thread(rotate, self.dsn, self.shards.shard_map, now, self.retention)
        for result in archived:
            if result.created:
                log.info("archived %s: %d players", result.board_period, result.players)
        for key in dropped:
            log.info("dropped the Redis keys of archived period %s", key)
