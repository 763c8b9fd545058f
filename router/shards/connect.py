"""How anything connects to a shard's Redis server, given the address in the shard map:
one place, for the router's async clients and the tools' sync ones alike.

A plain `redis://` address is one server. A `redis+sentinel://` address
(router.shardmap.SentinelService) names a Sentinel-managed primary: every new
connection asks the sentinels where the primary is now, so clients follow a failover
by themselves (a connection to the old primary fails, or answers READONLY once it is
a replica, and the next one goes to the new primary). When no sentinel answers,
connections go on to the last primary they were told of; /readyz says so
(ShardClients.sentinels_lost_for_s).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as async_sentinel
import redis.sentinel as sync_sentinel

from router.shardmap import sentinel_service

# How long a sentinel may take to say where the primary is. Short: a request that
# opens a connection waits for it, and a sentinel that does not answer is skipped.
SENTINEL_TIMEOUT_S = 0.5


class _AsyncFollowingPool(async_sentinel.SentinelConnectionPool):
    last_primary: tuple[str, int] | None = None

    async def get_master_address(self):
        try:
            address = await super().get_master_address()
        except async_sentinel.MasterNotFoundError:
            if self.last_primary is None or not await _no_sentinel_answers(self.sentinel_manager):
                raise  # the sentinels answer: the primary is down or being replaced
            return self.last_primary
        self.last_primary = address
        return address


async def _no_sentinel_answers(manager: async_sentinel.Sentinel) -> bool:
    answers = await asyncio.gather(*(sentinel.ping() for sentinel in manager.sentinels), return_exceptions=True)
    return all(isinstance(answer, BaseException) for answer in answers)


class _SyncFollowingPool(sync_sentinel.SentinelConnectionPool):
    last_primary: tuple[str, int] | None = None

    def get_master_address(self):
        try:
            address = super().get_master_address()
        except sync_sentinel.MasterNotFoundError:
            if self.last_primary is None or any(_answers(s) for s in self.sentinel_manager.sentinels):
                raise
            return self.last_primary
        self.last_primary = address
        return address


def _answers(sentinel: redis.Redis) -> bool:
    try:
        return bool(sentinel.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _sentinel_options() -> dict[str, Any]:
    return {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}


def sync_client(address: str, *, timeout_s: float, decode_responses: bool = False) -> redis.Redis:
    """A blocking client of the shard at `address`, for the operator's tools."""
    options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, "decode_responses": decode_responses}
    service = sentinel_service(address)
    if service is None:
        return redis.Redis.from_url(address, **options)
    manager = sync_sentinel.Sentinel(list(service.sentinels), sentinel_kwargs=_sentinel_options())
    return manager.master_for(service.service, connection_pool_class=_SyncFollowingPool, db=service.db, **options)


def async_client(address: str, **options: Any) -> aioredis.Redis:
    """An asyncio client of the shard at `address`; `options` as redis-py's."""
    service = sentinel_service(address)
    if service is None:
        return aioredis.Redis.from_url(address, **options)
    manager = async_sentinel.Sentinel(list(service.sentinels), sentinel_kwargs=_sentinel_options())
    return manager.master_for(service.service, connection_pool_class=_AsyncFollowingPool, db=service.db, **options)


async def sentinels_unreachable(client: aioredis.Redis) -> bool:
    """True for a Sentinel-managed shard's client none of whose sentinels answers."""
    pool = client.connection_pool
    if not isinstance(pool, async_sentinel.SentinelConnectionPool):
        return False
    return await _no_sentinel_answers(pool.sentinel_manager)
