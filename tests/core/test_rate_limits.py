"""The rate limiter against a real redis-server: its counting within one call, and a
counter store that hangs (frozen with SIGSTOP), which writes must not wait on: they are
let through, at once once its breaker is open."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import redis

from router.core.rate_limits import RateLimiter
from shard_manager.local.binaries import require_redis_server
from shard_manager.local.processes import RedisServer, free_port


@pytest.fixture
def counter_store(tmp_path):
    server = RedisServer(require_redis_server(), free_port(), tmp_path / "counters", appendonly=False)
    server.start()
    yield server
    server.stop()


async def within_one_second(calls):
    """What `calls(attempt)` returns, from an attempt whose calls all fell within one
    second of the clock (a token's count is per second). Each attempt must use tokens
    and players of its own: an earlier attempt's counts stay."""
    for attempt in range(5):
        at = int(time.time())
        results = await calls(attempt)
        if int(time.time()) == at:
            return results
    raise AssertionError("could not make the calls within one second")


def test_a_frozen_counter_store_lets_writes_through_without_stalling_them(counter_store):
    server = counter_store

    async def main():
        limiter = RateLimiter(server.url, token_per_s=1, player_per_hour=0, deadline_s=0.2)

        async def two_calls(attempt):
            token = f"token{attempt}"
            return await limiter.admit([(token, "ann")]), await limiter.admit([(token, "bob")])

        try:
            first, second = await within_one_second(two_calls)
            assert first == [None] and second[0] is not None  # 1 per second: counted
            server.proc.send_signal(signal.SIGSTOP)
            timings = []
            for user in ("cid", "dan", "eve", "fay"):
                started = time.monotonic()
                assert await limiter.admit([("token", user)]) == [None]  # let through, not refused
                timings.append(time.monotonic() - started)
            # Each waits at most the deadline; once two have missed it, the rest do not wait at all.
            assert max(timings) < 0.2 + 0.3
            assert timings[-1] < 0.05
        finally:
            server.proc.send_signal(signal.SIGCONT)
            await limiter.close()

    asyncio.run(main())


def test_one_call_gives_each_request_the_verdict_counting_them_one_by_one_would(counter_store):
    server = counter_store
    # A call counts each token's requests with one INCRBY; the j-th request of a token in
    # the call must still be judged by the count before the call plus j, and a player's
    # events by their running count, in request order.

    async def main():
        limiter = RateLimiter(server.url, token_per_s=3, player_per_hour=2, deadline_s=1.0)

        async def two_calls(attempt):
            a, b, ann, bob, cid, dan = (f"{name}{attempt}" for name in ("a", "b", "ann", "bob", "cid", "dan"))
            first = await limiter.admit([(a, ann), (b, bob)])
            return first, await limiter.admit([(a, ann), (b, cid), (a, ann), (a, dan), (b, bob), (b, bob)])

        try:
            first, mixed = await within_one_second(two_calls)
            assert first == [None, None]
            kinds = [None if r is None else ("token" if "token" in str(r) else "player") for r in mixed]
            # Token a had 1 request before this call: its 2nd and 3rd pass, its 4th (dan) is
            # over. Token b likewise: its 4th (bob's last) is over, and a request refused for
            # its token is not counted against its player. ann's 3rd event of the hour is
            # over the player limit though its token is not.
            assert kinds == [None, None, "player", "token", None, "token"]
            # Every counters hash goes with its hour.
            store = redis.Redis.from_url(server.url)
            keys = list(store.scan_iter("rl:p:*"))
            assert keys and all(0 < store.ttl(key) <= 3601 for key in keys)
            store.close()
        finally:
            await limiter.close()

    asyncio.run(main())
