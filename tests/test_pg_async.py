"""The event-loop PostgreSQL pool the group commits run on, against the real server."""

from __future__ import annotations

import asyncio
import time

import psycopg2.errors
import pytest

from router.errors import StoreUnavailable
from router.pg_async import AsyncConnectionPool
from shard_manager.processes import free_port
from tests.cluster import Cluster


def with_pool(dsn: str, scenario, size: int = 2, statement_timeout_ms: int = 5000):
    async def main():
        pool = AsyncConnectionPool(dsn, size, statement_timeout_ms)
        try:
            return await scenario(pool)
        finally:
            pool.close()

    return asyncio.run(main())


async def backend(pool: AsyncConnectionPool) -> int:
    ((pid,),) = await pool.fetch_all("SELECT pg_backend_pid()", ())
    return pid


def test_a_connection_is_kept_and_reused(cluster: Cluster):
    async def twice(pool):
        return [await backend(pool), await backend(pool)]

    first, second = with_pool(cluster.dsn, twice)
    assert first == second


def test_a_server_error_is_raised_and_the_connection_kept(cluster: Cluster):
    async def error_then_query(pool):
        before = await backend(pool)
        with pytest.raises(psycopg2.errors.DivisionByZero):
            await pool.fetch_all("SELECT 1 / %s", (0,))
        return before, await backend(pool)

    before, after = with_pool(cluster.dsn, error_then_query)
    assert before == after


def test_a_serialization_failure_reaches_the_caller_as_itself_to_be_retried(cluster: Cluster):
    # Not turned into "unavailable": the group commit runs such a group again.
    async def conflict(pool):
        before = await backend(pool)
        with pytest.raises(psycopg2.errors.SerializationFailure):
            await pool.fetch_all("SELECT lb_retry('a concurrent writer won')", ())
        return before, await backend(pool)

    before, after = with_pool(cluster.dsn, conflict)
    assert before == after


def test_a_statement_over_the_timeout_is_cancelled_by_the_server(cluster: Cluster):
    async def slow(pool):
        with pytest.raises(psycopg2.errors.QueryCanceled):
            await pool.fetch_all("SELECT pg_sleep(2)", ())
        return await pool.fetch_all("SELECT 1", ())

    assert with_pool(cluster.dsn, slow, statement_timeout_ms=200) == [(1,)]


def test_a_call_cancelled_midway_does_not_hand_its_connection_on(cluster: Cluster):
    async def cancel_then_query(pool):
        before = await backend(pool)
        call = asyncio.create_task(pool.fetch_all("SELECT pg_sleep(1)", ()))
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The next call must not read the cancelled statement's answer off that socket.
        return before, await backend(pool)

    before, after = with_pool(cluster.dsn, cancel_then_query)
    assert before != after


def test_no_more_than_size_connections_at_once(cluster: Cluster):
    async def three_at_once(pool):
        started = time.monotonic()
        pids = await asyncio.gather(*(pool.fetch_all("SELECT pg_backend_pid(), pg_sleep(0.3)", ()) for _ in range(3)))
        return {rows[0][0] for rows in pids}, time.monotonic() - started

    pids, took = with_pool(cluster.dsn, three_at_once, size=2)
    assert len(pids) == 2
    assert took >= 0.55  # the third waited for a free connection


def test_an_unreachable_server_is_store_unavailable(cluster: Cluster):
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/leaderboard"

    async def call(pool):
        with pytest.raises(StoreUnavailable):
            await pool.fetch_all("SELECT 1", ())

    with_pool(dsn, call)
