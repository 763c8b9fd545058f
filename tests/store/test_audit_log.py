"""The audit log, partitioned by month of arrival: each event in its month, resends
recognised across a month's end, old months dropped under a retention while players'
states and archives stay. Real PostgreSQL throughout."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

import psycopg2
import pytest

from router.settings import Settings
from router.store.audit_log import drop_months_before, event_months, keep_event_months, retention_cutoff
from router.store.migrate import migrate
from tests.cluster import Cluster, commit_directly
from tests.store.test_migrations import fresh_database


def _month(shift: int) -> date:
    """The first day of the month `shift` months from PostgreSQL's (= this host's) now."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + shift
    return date(index // 12, index % 12 + 1, 1)


def _resend(cluster: Cluster, user: str, match: str, value: int) -> str:
    month = datetime.now(UTC).date().replace(day=1)
    return commit_directly(cluster, month, [(user, match, value)])[0][0]


def _age(cluster: Cluster, user: str, match: str, months: int) -> None:
    """Make an event look recorded `months` ago (moving it to that month's partition)."""
    cluster.sql("SELECT lb_event_partition(%s)", (_month(-months),))
    cluster.sql(
        "UPDATE score_events SET recorded_month = %s, recorded_at = %s::timestamptz + interval '12 hours'"
        " WHERE user_id = %s AND match_id = %s",
        (_month(-months), _month(-months), user, match),
    )


def _partition_of(cluster: Cluster, user: str, match: str) -> str:
    rows = cluster.sql(
        "SELECT tableoid::regclass::text FROM score_events WHERE user_id = %s AND match_id = %s", (user, match)
    )
    return rows[0][0]


def test_each_event_goes_to_its_months_partition_and_a_resend_is_known_for_two_months(board: Cluster):
    assert _resend(board, "ann", "m1", 5) == "applied"
    assert _partition_of(board, "ann", "m1") == f"score_events_{_month(0):%Y_%m}"
    assert _resend(board, "ann", "m1", 5) == "duplicate"
    # Recorded last month: still recognised (this month's and the previous partition are searched).
    _age(board, "ann", "m1", 1)
    assert _partition_of(board, "ann", "m1") == f"score_events_{_month(-1):%Y_%m}"
    assert _resend(board, "ann", "m1", 5) == "duplicate"
    assert _resend(board, "ann", "m1", 6) == "conflict"
    # Two months back it is outside the search, and the same match_id counts anew: the
    # documented window, which keeps every lookup to two partitions however old the log.
    _age(board, "ann", "m1", 2)
    assert _resend(board, "ann", "m1", 5) == "applied"
    assert board.sql("SELECT score FROM player_scores WHERE user_id = 'ann'") == [(10,)]


def test_retention_drops_whole_old_months_and_nothing_else(board: Cluster):
    for k in range(5):
        assert _resend(board, f"p{k}", "m", 10 + k) == "applied"
        if k:
            _age(board, f"p{k}", "m", k)  # p1 last month ... p4 four months ago
    states_before = board.sql("SELECT user_id, score, version FROM player_scores ORDER BY 1")
    dropped = keep_event_months(board.dsn, 2)
    assert sorted(dropped) == [f"score_events_{_month(-k):%Y_%m}" for k in (4, 3, 2)]
    assert sorted(u for (u,) in board.sql("SELECT user_id FROM score_events")) == ["p0", "p1"]
    months = [m.month for m in event_months(psycopg2.connect(board.dsn))]
    assert months == [_month(k) for k in (-1, 0, 1, 2)]  # and made ahead: this month and two more
    assert board.sql("SELECT user_id, score, version FROM player_scores ORDER BY 1") == states_before
    assert _resend(board, "p1", "m", 11) == "duplicate"  # the previous month is kept for resends
    assert keep_event_months(board.dsn, 2) == []  # nothing more to do


def test_a_retention_that_would_drop_the_months_resends_are_looked_up_in_is_refused(board: Cluster):
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="at least 2 months"):
        retention_cutoff(now, 1)
    conn = psycopg2.connect(board.dsn)
    try:
        with pytest.raises(ValueError, match="resend"):
            drop_months_before(conn, _month(0), now)
    finally:
        conn.close()
    with pytest.raises(ValueError, match="LB_EVENT_RETENTION_MONTHS|event_retention_months|at least 2"):
        Settings(event_retention_months=1)


def test_migration_009_moves_every_event_into_its_months_partition(cluster: Cluster):
    dsn = fresh_database(cluster, "upgrade_009")
    assert migrate(dsn, up_to=8, with_functions=False)[-1] == "008_board_ranges.sql"
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO shard_layout (id, epoch, shards) VALUES (1, 1, %s)",
                ('[{"id": "s0", "address": "redis://a", "min_score": 0}]',),
            )
            periods = [f"global:monthly:{datetime.now(UTC):%Y-%m}"]
            for user in ("a", "b", "c"):
                cur.execute(
                    "SELECT status FROM lb_apply_events('{global}', %s, '{m}', '{incr}', '{3}', %s::timestamptz[],"
                    " '{1}', '{1}', %s)",
                    ([user], [datetime.now(UTC)], periods),
                )
                assert cur.fetchone() == ("applied",)
            # As if b arrived last month and c in March 2025.
            cur.execute("UPDATE score_events SET recorded_at = recorded_at - interval '1 month' WHERE user_id = 'b'")
            cur.execute("UPDATE score_events SET recorded_at = '2025-03-15T10:00:00Z' WHERE user_id = 'c'")
        assert migrate(dsn)[0] == "009_partitioned_audit_log.sql"
        with conn, conn.cursor() as cur:
            cur.execute("SELECT user_id, tableoid::regclass::text FROM score_events ORDER BY 1")
            assert cur.fetchall() == [
                ("a", f"score_events_{_month(0):%Y_%m}"),
                ("b", f"score_events_{_month(-1):%Y_%m}"),
                ("c", "score_events_2025_03"),
            ]
            cur.execute(
                "SELECT status FROM lb_apply_events('{global}', '{b}', '{m}', '{incr}', '{3}', %s::timestamptz[],"
                " '{1}', '{1}', %s)",
                ([datetime.now(UTC)], periods),
            )
            assert cur.fetchone() == ("duplicate",)
        assert [m.month for m in event_months(conn)][-3:] == [_month(k) for k in (0, 1, 2)]
    finally:
        conn.close()


def test_routers_drop_the_months_past_lb_event_retention_months_by_themselves(board: Cluster):
    assert _resend(board, "old", "m", 1) == "applied"
    _age(board, "old", "m", 3)
    old = f"score_events_{_month(-3):%Y_%m}"
    router = board.router(extra_env={"LB_EVENT_RETENTION_MONTHS": "2"})
    try:
        deadline = time.monotonic() + 15
        while board.sql("SELECT to_regclass(%s)", (old,)) != [(None,)]:
            assert time.monotonic() < deadline, f"{old} was not dropped by the router's rotation"
            time.sleep(0.2)
        assert board.sql("SELECT score FROM player_scores WHERE user_id = 'old'") == [(1,)]
    finally:
        router.stop()
