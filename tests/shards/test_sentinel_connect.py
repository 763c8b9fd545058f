"""Reaching a Sentinel-managed shard when its sentinels are gone or frozen, on real
redis-server and redis-server --sentinel processes: a new connection goes to the last
primary the sentinels named, promptly, for the router's async clients and the tools'
sync ones alike; /readyz's "no sentinel answers" check is as prompt."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from router.shards.connect import SENTINEL_TIMEOUT_S, async_client, sentinels_unreachable, sync_client
from shard_manager.local.binaries import require_redis_server
from shard_manager.local.processes import RedisServer, SentinelServer, free_port

SERVICE = "lb-connect"
# Asking every sentinel costs at most one SENTINEL_TIMEOUT_S (all at once) per attempt,
# and a connection makes up to three attempts: anything slower is a stall.
PROMPT_S = 4 * SENTINEL_TIMEOUT_S


@dataclass
class Sentinelled:
    primary: RedisServer
    sentinels: list[SentinelServer]

    @property
    def address(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SERVICE}"


@pytest.fixture
def sentinelled(tmp_path) -> Iterator[Sentinelled]:
    binary = require_redis_server()
    primary = RedisServer(binary, free_port(), tmp_path / "primary")
    sentinels = [
        SentinelServer(binary, free_port(), tmp_path / f"sentinel-{i}", {SERVICE: primary.port}) for i in range(3)
    ]
    started = []
    try:
        for server in [primary, *sentinels]:
            server.start()
            started.append(server)
        yield Sentinelled(primary, sentinels)
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                if server.proc is not None and server.proc.poll() is None:
                    os.kill(server.proc.pid, signal.SIGCONT)
                server.stop()


def _freeze(server: SentinelServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


async def _fresh_connection_ping(client) -> tuple[bool, float]:
    await client.connection_pool.disconnect()
    started = time.monotonic()
    answer = await client.ping()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("lose", [SentinelServer.kill, _freeze], ids=["killed", "frozen"])
def test_with_no_sentinel_answering_new_connections_go_promptly_to_the_last_primary(sentinelled, lose):
    async def run() -> None:
        client = async_client(sentinelled.address, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
        try:
            assert await client.set("before", "1")
            assert not await sentinels_unreachable(client)
            for sentinel in sentinelled.sentinels:
                lose(sentinel)

            started = time.monotonic()
            assert await sentinels_unreachable(client)
            assert time.monotonic() - started < PROMPT_S
            for _ in range(3):
                answer, took = await _fresh_connection_ping(client)
                assert answer is True and took < PROMPT_S, took
            assert await client.get("before") == "1"  # the same server, not merely some server
        finally:
            await client.aclose()

    sync = sync_client(sentinelled.address, timeout_s=5, decode_responses=True)
    assert sync.get("missing") is None  # learns where the primary is while the sentinels answer
    asyncio.run(run())
    sync.connection_pool.disconnect()
    started = time.monotonic()
    assert sync.set("from-tools", "1")
    assert time.monotonic() - started < PROMPT_S * 3  # the tools ask one sentinel after another
    sync.close()


def test_sentinels_that_answer_without_a_primary_are_believed_over_the_last_one(sentinelled):
    client = sync_client(sentinelled.address, timeout_s=2)
    assert client.ping()
    sentinelled.primary.kill()
    deadline = time.monotonic() + 20
    while True:  # down-after-milliseconds is 1 s: the sentinels soon call it down
        client.connection_pool.disconnect()
        try:
            client.ping()
        except redis.sentinel.MasterNotFoundError as error:
            assert SERVICE in str(error)
            break
        except redis.ConnectionError:
            pass  # still named as primary, and refusing: not yet marked down
        assert time.monotonic() < deadline, "the sentinels never said the primary is down"
        time.sleep(0.2)
