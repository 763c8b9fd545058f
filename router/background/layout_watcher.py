"""Keeps this router on the layout and the boards in force: a rebalance or an admin changes them,
routers follow without restart."""

from __future__ import annotations

import asyncio
import logging

from router.aio.periodic import Periodic
from router.core.board_registry import BoardRegistry
from router.metrics import LAYOUT_EPOCH
from router.shards.client import ShardClients
from router.store.postgres import Store

log = logging.getLogger(__name__)


class LayoutWatcher:
    def __init__(self, store: Store, shards: ShardClients, boards: BoardRegistry, *, interval_s: float) -> None:
        self.store = store
        self.shards = shards
        self.boards = boards
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._loop = Periodic("layout watcher", self._follow, interval_s, first_now=False)

    def start(self) -> None:
        LAYOUT_EPOCH.set(self.shards.shard_map.epoch)
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _follow(self) -> None:
        await self.refresh()
        if await self.boards.refresh_if_changed():
            log.info("boards: %d configured", len(self.boards.boards))

    async def refresh(self) -> bool:
        """Load the layout if its epoch moved on; True when this router switched."""
        async with self._lock:
            epoch = await self.store.layout_epoch()
            if epoch is None or epoch == self.shards.shard_map.epoch:
                return False
            layout = await self.store.layout()
            if layout is None:
                return False
            await self.shards.update(layout.shard_map)
            LAYOUT_EPOCH.set(layout.epoch)
            log.info(
                "shard layout epoch %d: %s",
                layout.epoch,
                ", ".join(f"{s.id} {s.range}" for s in layout.shard_map.shards),
            )
            return True
