"""Admin actions on players, end to end: the transaction in PostgreSQL
(router/store/players.py), then the shards' side at once.

The shards' side is versioned tombstones (hide, remove), purges (erase) or restored
states (unhide), so doing it twice changes nothing: the reconciler repeats what an
action recorded after its settle time, which also catches an older apply that was
still in flight when the action committed. A shard that fails here makes the answer
a 503 that says the action is recorded and the shards catch up when it is back.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable

from router.core.shard_writes import put_committed
from router.core.user_cache import UserShardCache
from router.errors import ActionOwedToShards, ShardUnavailable
from router.shards.client import ShardClients
from router.shards.protocol import tombstone
from router.store.players import ActionResult, Cleanup
from router.store.postgres import Store


async def clean_shards(shards: ShardClients, cache: UserShardCache, cleanup: Cleanup) -> list[str]:
    """Every shard of the map gets the cleanup's tombstones (or purges); returns the
    shards that failed (empty: done)."""
    by_period: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for board_period, user_id, version in cleanup.entries:
        by_period[board_period].append((user_id, version))
        cache.forget(board_period, user_id)
    calls = []
    for board_period, players in by_period.items():
        for shard_id in shards.shard_map.ids:
            if cleanup.purge:
                calls.append((shard_id, shards.purge(shard_id, board_period, [u for u, _ in players])))
            else:
                calls.append((shard_id, shards.apply(shard_id, board_period, [tombstone(u, v) for u, v in players])))
    results = await asyncio.gather(*(call for _, call in calls), return_exceptions=True)
    failed = set()
    for (shard_id, _), result in zip(calls, results, strict=True):
        if isinstance(result, ShardUnavailable):
            failed.add(shard_id)
        elif isinstance(result, BaseException):
            raise result
    return sorted(failed)


class PlayerAdmin:
    def __init__(
        self,
        store: Store,
        shards: ShardClients,
        cache: UserShardCache,
        forget_counters: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.shards = shards
        self.cache = cache
        # The rate limiter's counters of a player name them too; an erasure drops them.
        self.forget_counters = forget_counters

    async def _finish(self, result: ActionResult) -> ActionResult:
        failed: list[str] = []
        if result.cleanup is not None and result.cleanup.entries:
            # Its row in redis_cleanup stays even when this succeeds: the reconciler's
            # pass after the settle time removes a copy an older apply brings back.
            failed = await clean_shards(self.shards, self.cache, result.cleanup)
        if result.restored:
            _, not_restored = await put_committed(self.shards, self.cache, result.restored)
            failed += sorted(not_restored)
            if not failed and result.outbox_id is not None:
                await self.store.ack_outbox([result.outbox_id])
        if failed:
            raise ActionOwedToShards(failed[0], "the action is recorded; the shards catch up when it is back")
        return result

    async def hide(self, user_id: str, board: str | None, reason: str, who: str) -> ActionResult:
        return await self._finish(await self.store.hide_player(user_id, board, reason, who))

    async def unhide(self, user_id: str, board: str | None, reason: str, who: str) -> ActionResult:
        return await self._finish(await self.store.unhide_player(user_id, board, reason, who))

    async def remove(self, user_id: str, board_period: str, reason: str, who: str) -> ActionResult:
        return await self._finish(await self.store.remove_entry(user_id, board_period, reason, who))

    async def erase(self, user_id: str, reason: str, who: str) -> ActionResult:
        result = await self.store.erase_player(user_id, reason, who)
        if self.forget_counters is not None:
            await self.forget_counters(user_id)
        return await self._finish(result)
