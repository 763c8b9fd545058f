"""The audit log's monthly partitions (`009_partitioned_audit_log.sql`): made ahead of
the months they hold, listed for operators, dropped past the retention.

Blocking calls on a psycopg2 connection, used by the routers' rotation and by
`shard-manager events`. Dropping a month drops its raw events only: players' states,
archived standings and every month still searched for resends stay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg2

PARTITION = re.compile(r"^score_events_(\d{4})_(\d{2})$")
MONTHS_AHEAD = 2
RESEND_MONTHS = 2
"""This month and the one before: where lb_apply_events looks for a resend. A retention
shorter than that would let a resend count twice, so it is refused."""


@dataclass(frozen=True)
class EventMonth:
    month: date
    name: str
    rows: int  # PostgreSQL's estimate (reltuples), exact after ANALYZE
    bytes: int


def _month(moment: date | datetime, shift: int = 0) -> date:
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    index = moment.year * 12 + moment.month - 1 + shift
    return date(index // 12, index % 12 + 1, 1)


def ensure_partitions(conn, now: datetime, ahead: int = MONTHS_AHEAD) -> list[str]:
    """The previous month's partition, this month's and the next `ahead` ones (the previous
    one too, so that a resend's lookup never has to search the default partition); returns
    every name."""
    with conn, conn.cursor() as cur:
        names = []
        for k in range(-1, ahead + 1):
            cur.execute("SELECT lb_event_partition(%s)", (_month(now, k),))
            names.append(cur.fetchone()[0])
    return names


def event_months(conn) -> list[EventMonth]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname, greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid)"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'score_events'::regclass ORDER BY c.relname"
        )
        rows = cur.fetchall()
    months = []
    for name, count, size in rows:
        if match := PARTITION.match(name):
            months.append(EventMonth(date(int(match[1]), int(match[2]), 1), name, count, size))
    return months


def retention_cutoff(now: datetime, keep_months: int) -> date:
    """The first month kept when keeping the last `keep_months` (this one included)."""
    if keep_months < RESEND_MONTHS:
        raise ValueError(
            f"keep at least {RESEND_MONTHS} months: this month's and the previous one's events are where"
            " resends are recognised"
        )
    return _month(now, 1 - keep_months)


def drop_months_before(conn, first_kept: date, now: datetime) -> list[str]:
    """Drop the partitions of months before `first_kept`; never one still searched for resends."""
    if first_kept > _month(now, 1 - RESEND_MONTHS):
        raise ValueError(f"{first_kept:%Y-%m} would drop events a resend is still looked up in")
    dropped = []
    for month in event_months(conn):
        if month.month < first_kept:
            with conn, conn.cursor() as cur:
                # Dropping a partition locks the whole log for an instant; writers queue
                # behind a lock that waits, so it waits briefly and the next rotation tries again.
                cur.execute("SET LOCAL lock_timeout = '2s'")
                cur.execute(f'DROP TABLE "{month.name}"')
            dropped.append(month.name)
    return dropped


def keep_event_months(dsn: str, keep_months: int) -> list[str]:
    """This month's partition and the next ones made; with a retention (`keep_months` > 0),
    the months before it dropped. Returns the names dropped. Months are PostgreSQL's
    (UTC), as lb_apply_events reckons them, whatever this host's clock says."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT now()")
            (now,) = cur.fetchone()
        ensure_partitions(conn, now)
        if not keep_months:
            return []
        return drop_months_before(conn, retention_cutoff(now, keep_months), now)
    finally:
        conn.close()
