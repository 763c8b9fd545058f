"""lb_apply_events against a real PostgreSQL: what concurrent groups do to each other.

The router's group commit relies on these: two routers bringing the same new player
at once must both land, a resend racing its original must count once, and groups
crossing each other's new players must not deadlock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import psycopg2
import pytest

from router.boards import LEGACY
from router.events import GroupCommit
from router.store.postgres import Store, array_literal
from tests.cluster import Cluster

CALL = (
    "SELECT idx, status, score, version FROM lb_apply_events(%s::text[], %s::text[], %s::text[],"
    " %s::text[], %s::bigint[], %s::timestamptz[], %s::int[], %s::int[], %s::text[])"
)


def group_args(events: list[tuple[str, str, int]]) -> tuple[str, ...]:
    now = datetime.now(UTC)
    columns = (
        ["global"] * len(events),
        [u for u, _, _ in events],
        [m for _, m, _ in events],
        ["incr"] * len(events),
        [v for _, _, v in events],
        [now] * len(events),
        list(range(1, len(events) + 1)),
        list(range(1, len(events) + 1)),  # one window: one row per event
        [LEGACY.board_periods(now)[0]] * len(events),
    )
    return tuple(array_literal(c) for c in columns)


def run_in_thread(dsn: str, events: list[tuple[str, str, int]]) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def work() -> None:
        conn = psycopg2.connect(dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(CALL, group_args(events))
                outcome["rows"] = sorted(cur.fetchall())
        except psycopg2.Error as exc:
            outcome["error"] = exc
        finally:
            conn.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, outcome


def wait_until_blocked(cluster: Cluster, timeout: float = 10.0) -> None:
    """Until some backend waits for a lock another transaction holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = cluster.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting[0][0]:
            return
        time.sleep(0.02)
    pytest.fail("the second group never waited for the first")


def second_group_while_first_is_open(board: Cluster, first_events, second_events) -> dict:
    """Run the first group without committing, start the second, let it block, then commit the first."""
    first = psycopg2.connect(board.dsn)
    try:
        with first.cursor() as cur:
            cur.execute(CALL, group_args(first_events))
        second, outcome = run_in_thread(board.dsn, second_events)
        wait_until_blocked(board)
        first.commit()
    finally:
        first.close()
    second.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    return outcome


def test_a_new_player_created_by_a_concurrent_group_is_updated_not_inserted_twice(board):
    outcome = second_group_while_first_is_open(board, [("fresh", "a1", 5)], [("fresh", "b1", 7), ("other", "b1", 1)])
    # Both events count: the second group's event applied on top of the first's row.
    assert outcome["rows"] == [(1, "applied", 12, 2), (2, "applied", 1, 1)]
    assert board.sql("SELECT score, version FROM player_scores WHERE user_id = 'fresh'") == [(12, 2)]
    assert board.sql("SELECT count(*) FROM score_events WHERE user_id = 'fresh'") == [(2,)]


def test_a_resend_racing_its_original_counts_once(board):
    board.sql(CALL, group_args([("known", "m0", 1)]))
    outcome = second_group_while_first_is_open(board, [("known", "m1", 5)], [("known", "m1", 5)])
    # The resend waited for the original's player lock, so it sees the commit.
    assert outcome["rows"] == [(1, "duplicate", 6, 2)]
    assert board.sql("SELECT score FROM player_scores WHERE user_id = 'known'") == [(6,)]
    assert board.sql("SELECT count(*) FROM score_events WHERE user_id = 'known'") == [(2,)]


def test_one_group_applies_a_players_events_in_arrival_order(board):
    events = [("p", "m1", 3), ("q", "m1", 1), ("p", "m2", 4), ("p", "m1", 3), ("p", "m3", -2)]
    rows = board.sql(CALL, group_args(events))
    assert sorted(rows) == [
        (1, "applied", 3, 1),
        (2, "applied", 1, 1),
        (3, "applied", 7, 2),
        (4, "duplicate", 7, 2),
        (5, "applied", 5, 3),
    ]


def test_groups_bringing_the_same_new_players_in_opposite_orders_do_not_deadlock(board):
    # Each group first creates players the other one also brings, in the opposite
    # order of arrival: with locks taken as rows are met, one of them would wait for
    # the other's insert while holding what the other needs.
    forward = [(f"n{i:02d}", "f", 1) for i in range(40)]
    backward = [(f"n{i:02d}", "b", 2) for i in reversed(range(40))]
    threads = [run_in_thread(board.dsn, group) for group in (forward, backward) * 3]
    for thread, _ in threads:
        thread.join(timeout=60)
    errors = [outcome.get("error") for _, outcome in threads if "error" in outcome]
    assert errors == []
    totals = board.sql("SELECT count(*), sum(score) FROM player_scores WHERE user_id LIKE %s", ("n%",))
    assert totals == [(40, 40 * 3)]


@pytest.mark.parametrize(
    ("column", "cast"),
    [
        (['a"b', "c\\d", "", "NULL", "x,y", "{braces}", " spaced ", "ünï"], "text[]"),
        (["player_42", "m-2026-11/#7", "a:b.c"], "text[]"),
        ([0, -5, 9007199254740991], "bigint[]"),
        (
            [datetime(2026, 11, 27, 12, 0, 1, 250000, tzinfo=UTC)] * 2 + [datetime(2026, 1, 1, tzinfo=UTC)],
            "timestamptz[]",
        ),
        ([datetime.now(UTC).date()] * 3, "date[]"),
        ([], "text[]"),
    ],
)
def test_array_literals_reach_postgresql_unchanged(cluster: Cluster, column, cast):
    (back,) = cluster.sql(f"SELECT %s::{cast}", (array_literal(column),))[0]
    assert back == column


def test_an_empty_group_commits_nothing_and_leaves_no_outbox_row(cluster: Cluster):
    store = Store(cluster.dsn, pool_size=2, statement_timeout_ms=5000)
    try:
        assert asyncio.run(store.apply_events([])) == GroupCommit([], None)
    finally:
        store.close()
    assert cluster.sql("SELECT count(*) FROM redis_outbox WHERE cardinality(user_ids) = 0") == [(0,)]
