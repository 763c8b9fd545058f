"""How anything connects to a shard's Redis server, given the address in the shard map:
one place, for the router's async clients and the tools' sync ones alike."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis


def sync_client(address: str, *, timeout_s: float, decode_responses: bool = False) -> redis.Redis:
    """A blocking client of the shard at `address` (a `redis://` URL), for the operator's tools."""
    return redis.Redis.from_url(
        address, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=decode_responses
    )


def async_client(address: str, **options: Any) -> aioredis.Redis:
    """An asyncio client of the shard at `address`; `options` as redis-py's."""
    return aioredis.Redis.from_url(address, **options)
