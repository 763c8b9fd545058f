"""Commands packed by hiredis are byte for byte what redis-py's asyncio connection sends."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from router.shards.redis_packing import packed_by_hiredis

COMMANDS = [
    ("EVALSHA", "a" * 40, 2, "lb:2026-11:z", "lb:2026-11:v", "p1", 17, 1, 345, "0000ffffabcd"),
    ("HMGET", "lb:2026-11:v", "ünïcode", "spaces in a name", ""),
    ("ZREVRANGE", "lb:2026-11:z", 0, -1, "WITHSCORES"),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT SETNAME", b"bytes\r\nwith a line break"),
    ("SET", "x", 1.5),
    ("EVALSHA", "b" * 40, 0, *(f"user-{n}" for n in range(3000))),  # past redis-py's 6 KB chunks
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_same_bytes_as_redis_py(command):
    plain = aioredis.Redis().connection_pool.make_connection()
    packed = packed_by_hiredis(aioredis.Redis()).connection_pool.make_connection()
    assert b"".join(packed.pack_command(*command)) == b"".join(plain.pack_command(*command))


def test_the_url_still_chooses_the_kind_of_connection():
    client = packed_by_hiredis(aioredis.Redis.from_url("unix:///tmp/lb-nowhere.sock"))
    assert isinstance(client.connection_pool.make_connection(), aioredis.UnixDomainSocketConnection)
    asyncio.run(client.aclose())
