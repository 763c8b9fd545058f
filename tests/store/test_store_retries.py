"""How group commits retry conflicts: the retry policy itself, and (against the real
PostgreSQL) that a commit leaves no garbage in reference cycles behind.

Garbage in cycles waits for the garbage collector, whose passes stop the event loop
and every request on it: in a loadtest, where players' writes come in groups of a
few, tenacity's per-call copies of its retry controller (ten objects in a cycle per
commit) were most of what the young-generation passes (20-25 ms) collected.
"""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime

import pytest

from router.boards import LEGACY
from router.errors import StoreUnavailable
from router.events import ScoreEvent
from router.store.postgres import Store, _Retryable, with_conflict_retries
from tests.cluster import Cluster

COMMITS = 200


def test_group_commits_leave_no_garbage_in_cycles(board: Cluster) -> None:
    async def commit_many(store: Store, phase: str) -> None:
        now = datetime.now(UTC)
        for n in range(COMMITS):
            periods = LEGACY.board_periods(now)
            await store.apply_events([ScoreEvent("global", f"gc{n % 7}", f"gc-{phase}{n}", "incr", 1, now, periods)])

    async def garbage_in_cycles(store: Store) -> int:
        # All in one event loop, as in the router: its worker threads stay alive, and
        # anything a commit left in their thread-local state is still there.
        await commit_many(store, "warm")  # connections, plans, worker threads
        gc.collect()
        gc.disable()
        try:
            await commit_many(store, "counted")
            return gc.collect()
        finally:
            gc.enable()

    store = Store(board.dsn, pool_size=2, statement_timeout_ms=5000)
    try:
        in_cycles = asyncio.run(garbage_in_cycles(store))
    finally:
        store.close()
    assert in_cycles < COMMITS, f"{in_cycles} objects in cycles after {COMMITS} commits"


def test_conflicts_are_retried_until_the_statement_succeeds() -> None:
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise _Retryable()
        return "committed"

    assert with_conflict_retries(flaky) == "committed"
    assert len(attempts) == 3


def test_a_conflict_that_persists_is_raised_after_eight_attempts() -> None:
    attempts = []

    def always() -> None:
        attempts.append(1)
        raise _Retryable()

    with pytest.raises(_Retryable):
        with_conflict_retries(always)
    assert len(attempts) == 8


def test_other_errors_are_not_retried() -> None:
    attempts = []

    def down() -> None:
        attempts.append(1)
        raise StoreUnavailable("connection refused")

    with pytest.raises(StoreUnavailable):
        with_conflict_retries(down)
    assert len(attempts) == 1
