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
import redis.asyncio.retry as async_retry
import redis.asyncio.sentinel as async_sentinel
import redis.retry as sync_retry
import redis.sentinel as sync_sentinel
from redis.backoff import NoBackoff

from router.shardmap import sentinel_service

# How long a sentinel may take to say where the primary is. Short: a request that
# opens a connection waits for it, and a sentinel that does not answer is skipped.
SENTINEL_TIMEOUT_S = 0.5

_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


def _primary_in(manager: sync_sentinel.Sentinel | async_sentinel.Sentinel, service: str, masters: Any):
    state = masters.get(service) if isinstance(masters, dict) else None
    if not state or not manager.check_master_state(state, service):
        return None
    return state["ip"], state["port"]


class _AsyncFollowingSentinel(async_sentinel.Sentinel):
    """Asks every sentinel at once, so one that is frozen costs SENTINEL_TIMEOUT_S
    rather than that much per sentinel in turn; with none answering, the last
    primary one named."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_primary: dict[str, tuple[str, int]] = {}

    async def discover_master(self, service_name: str):
        answers = await asyncio.gather(
            *(sentinel.sentinel_masters() for sentinel in self.sentinels), return_exceptions=True
        )
        for masters in answers:
            address = _primary_in(self, service_name, masters)
            if address is not None:
                self.last_primary[service_name] = address
                return address
        if all(isinstance(answer, _UNREACHABLE) for answer in answers) and service_name in self.last_primary:
            return self.last_primary[service_name]
        # The sentinels answer: the primary is down or being replaced.
        raise async_sentinel.MasterNotFoundError(f"No primary found for {service_name!r}: {answers}")


class _SyncFollowingSentinel(sync_sentinel.Sentinel):
    """The tools' twin of _AsyncFollowingSentinel (one sentinel after another)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_primary: dict[str, tuple[str, int]] = {}

    def discover_master(self, service_name: str):
        answers: list[Any] = []
        for sentinel in self.sentinels:
            try:
                answers.append(sentinel.sentinel_masters())
            except _UNREACHABLE as error:
                answers.append(error)
                continue
            address = _primary_in(self, service_name, answers[-1])
            if address is not None:
                self.last_primary[service_name] = address
                return address
        if all(isinstance(answer, _UNREACHABLE) for answer in answers) and service_name in self.last_primary:
            return self.last_primary[service_name]
        raise sync_sentinel.MasterNotFoundError(f"No primary found for {service_name!r}: {answers}")


def _sentinel_options(retry: Any) -> dict[str, Any]:
    # No retries: redis-py's default retries a refused connection ten times with
    # backoff, seconds per dead sentinel, and the other sentinels are the retry.
    return {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S, "retry": retry}


def sync_client(address: str, *, timeout_s: float, decode_responses: bool = False) -> redis.Redis:
    """A blocking client of the shard at `address`, for the operator's tools."""
    options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, "decode_responses": decode_responses}
    service = sentinel_service(address)
    if service is None:
        return redis.Redis.from_url(address, **options)
    manager = _SyncFollowingSentinel(
        list(service.sentinels), sentinel_kwargs=_sentinel_options(sync_retry.Retry(NoBackoff(), 0))
    )
    return manager.master_for(service.service, db=service.db, **options)


def async_client(address: str, **options: Any) -> aioredis.Redis:
    """An asyncio client of the shard at `address`; `options` as redis-py's."""
    service = sentinel_service(address)
    if service is None:
        return aioredis.Redis.from_url(address, **options)
    manager = _AsyncFollowingSentinel(
        list(service.sentinels), sentinel_kwargs=_sentinel_options(async_retry.Retry(NoBackoff(), 0))
    )
    return manager.master_for(service.service, db=service.db, **options)


async def sentinels_unreachable(client: aioredis.Redis) -> bool:
    """True for a Sentinel-managed shard's client none of whose sentinels answers."""
    pool = client.connection_pool
    if not isinstance(pool, async_sentinel.SentinelConnectionPool):
        return False
    answers = await asyncio.gather(*(s.ping() for s in pool.sentinel_manager.sentinels), return_exceptions=True)
    return all(isinstance(answer, BaseException) for answer in answers)
