"""Monthly seasons: close a month into PostgreSQL, then drop its Redis keys after a retention.

The snapshot is taken from player_scores (the truth), ordered exactly like the live
board (score desc, then who reached it first), so an archived month answers as the
live one did. Every step is idempotent: re-running an archive or a drop finds the
work done and does nothing. Used by the router's background task and by
`shard-manager archive`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg2

from router.periods import month_label, month_start, previous_month
from router.shardmap import ShardMap
from router.shards.connect import sync_client
from router.shards.keys import generation_key, legacy_state_key, state_keys, zset_key

GRACE = timedelta(minutes=10)
"""How long after a month stops accepting events before it is archived automatically,
so events a router accepted just before the switch have committed."""


class ArchiveRefused(ValueError):
    pass


@dataclass(frozen=True)
class ArchiveResult:
    month: date
    players: int
    created: bool  # False: it was already archived


def unarchived_months(conn) -> list[date]:
    """Months that have players and no archive, oldest first."""
    with conn.cursor() as cur:
        # Loose index scan over the (month, user_id) primary key: one probe per month.
        cur.execute(
            """
            WITH RECURSIVE months(m) AS (
                SELECT min(month) FROM player_scores
                UNION ALL
                SELECT (SELECT min(month) FROM player_scores WHERE month > m) FROM months WHERE m IS NOT NULL
            )
            SELECT m FROM months WHERE m IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM month_archives a WHERE a.month = m) ORDER BY m
            """
        )
        months = [row[0] for row in cur.fetchall()]
    conn.commit()
    return months


def archive_month(dsn: str, month: date, now: datetime) -> ArchiveResult:
    """Snapshot the final board of a closed month; refuses a month that still takes events."""
    current = month_start(now)
    if month >= previous_month(current):
        raise ArchiveRefused(f"{month_label(month)} is still live (the current and previous month accept events)")
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            # Exclusive: waits for groups writing this month to commit, and any group
            # after us sees the month closed (see lb_apply_events).
            cur.execute("SELECT pg_advisory_xact_lock(lb_month_lock(%s))", (month,))
            cur.execute("SELECT players FROM month_archives WHERE month = %s", (month,))
            existing = cur.fetchone()
            if existing is not None:
                return ArchiveResult(month, existing[0], created=False)
            cur.execute("SELECT count(*) FROM player_scores WHERE month = %s", (month,))
            (players,) = cur.fetchone()
            cur.execute("INSERT INTO month_archives (month, players) VALUES (%s, %s)", (month, players))
            cur.execute(
                "INSERT INTO archived_ranks (month, rank, user_id, score)"
                " SELECT month, row_number() OVER (ORDER BY score DESC, seq ASC), user_id, score"
                " FROM player_scores WHERE month = %s",
                (month,),
            )
            return ArchiveResult(month, players, created=True)
    finally:
        conn.close()


def months_to_archive(dsn: str, now: datetime) -> list[date]:
    """Months with players that stopped taking events more than GRACE ago and are not archived."""
    cutoff = previous_month(month_start(now - GRACE))
    conn = psycopg2.connect(dsn)
    try:
        return [m for m in unarchived_months(conn) if m < cutoff]
    finally:
        conn.close()


def drop_redis_keys(dsn: str, shard_map: ShardMap, now: datetime, retention: timedelta) -> list[date]:
    """Delete the Redis keys of months archived more than `retention` ago; returns those months."""
    conn = psycopg2.connect(dsn)
    dropped = []
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT month FROM month_archives WHERE redis_dropped_at IS NULL AND closed_at <= %s ORDER BY month",
                (now - retention,),
            )
            due = [row[0] for row in cur.fetchall()]
        for month in due:
            label = month_label(month)
            keys = [zset_key(label), generation_key(label), legacy_state_key(label), *state_keys(label)]
            for shard in shard_map.shards:
                client = sync_client(shard.address, timeout_s=10)
                try:
                    for start in range(0, len(keys), 1000):
                        client.unlink(*keys[start : start + 1000])
                finally:
                    client.close()
            with conn, conn.cursor() as cur:
                cur.execute("UPDATE month_archives SET redis_dropped_at = now() WHERE month = %s", (month,))
            dropped.append(month)
    finally:
        conn.close()
    return dropped


def rotate(
    dsn: str, shard_map: ShardMap, now: datetime, retention: timedelta
) -> tuple[list[ArchiveResult], list[date]]:
    """Archive every month that is due, then drop Redis keys past their retention."""
    archived = [archive_month(dsn, month, now) for month in months_to_archive(dsn, now)]
    return archived, drop_redis_keys(dsn, shard_map, now, retention)
