"""Natural batching (router.aio.coalesce): pure asyncio, no servers needed."""

from __future__ import annotations

import asyncio

import pytest

from router.aio.coalesce import Coalescer


def test_calls_arriving_during_a_round_trip_share_the_next_one():
    calls: list[list[int]] = []
    release = asyncio.Event()

    async def run(key: str, items):
        calls.append(list(items))
        if len(calls) == 1:
            await release.wait()  # the first call is on the wire while more arrive
        return [f"{key}:{item * 10}" for item in items]

    async def scenario():
        batcher: Coalescer[str, int, str] = Coalescer(run)
        first = asyncio.create_task(batcher.submit("a", 1))
        await asyncio.sleep(0)
        later = [asyncio.create_task(batcher.submit("a", n)) for n in (2, 3, 4)]
        other_key = asyncio.create_task(batcher.submit("b", 5))
        await asyncio.sleep(0.01)
        release.set()
        return await first, await asyncio.gather(*later), await other_key

    first, later, other = asyncio.run(scenario())
    assert first == "a:10" and later == ["a:20", "a:30", "a:40"] and other == "b:50"
    # Items 2-4 came after call [1] was sent: they were not answered by it, and they
    # went together in one call rather than three.
    assert sorted(calls) == [[1], [2, 3, 4], [5]]


def test_a_failed_call_fails_every_item_in_it_and_the_next_call_runs():
    attempts = 0

    async def run(key, items):
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("down")
        return list(items)

    async def scenario():
        batcher: Coalescer[None, int, int] = Coalescer(run)
        failing = await asyncio.gather(batcher.submit(None, 1), batcher.submit(None, 2), return_exceptions=True)
        return failing, await batcher.submit(None, 3)

    failing, after = asyncio.run(scenario())
    assert [type(e) for e in failing] == [ConnectionError, ConnectionError]
    assert after == 3


def test_a_cancelled_caller_does_not_break_the_batch():
    async def run(key, items):
        await asyncio.sleep(0.01)
        return list(items)

    async def scenario():
        batcher: Coalescer[None, int, int] = Coalescer(run)
        gone = asyncio.create_task(batcher.submit(None, 1))
        stays = asyncio.create_task(batcher.submit(None, 2))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        result = await stays
        await batcher.drain()
        return result

    assert asyncio.run(scenario()) == 2
