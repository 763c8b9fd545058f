"""The rate limiter against a counter store that hangs: a real redis-server, frozen with
SIGSTOP. Writes must not wait on it: they are let through, at once once its breaker is open."""

from __future__ import annotations

import asyncio
import signal
import time

from router.core.rate_limits import RateLimiter
from shard_manager.local.binaries import require_redis_server
from shard_manager.local.processes import RedisServer, free_port


def test_a_frozen_counter_store_lets_writes_through_without_stalling_them(tmp_path):
    server = RedisServer(require_redis_server(), free_port(), tmp_path / "counters", appendonly=False)
    server.start()

    async def main():
        limiter = RateLimiter(server.url, token_per_s=1, player_per_hour=0, deadline_s=0.2)
        try:
            first = await limiter.admit([("token", "ann")])
            second = await limiter.admit([("token", "bob")])
            assert first == [None] and second is not None and second[0] is not None  # 1 per second: counted
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

    try:
        asyncio.run(main())
    finally:
        server.stop()
