"""Seasons: close a board period into PostgreSQL, then drop its Redis keys after a retention.

A period of a resetting window (monthly, weekly, daily) takes events while it is the
current or the previous one; once it is older (plus GRACE) it is archived, and so is
every period of a board that is closed. The snapshot is taken from player_scores
(the truth), ordered exactly like the live board (stored score desc, then who
reached it first), with scores as the board shows them, so an archived period
answers as the live one did. Every step is idempotent: re-running an archive or a
drop finds the work done and does nothing. Used by the router's background task and
by `shard-manager archive`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg2

from router.boards import MAX_SCORE
from router.periods import live_periods, parse_period, period_start, previous_period, split_board_period
from router.shardmap import ShardMap
from router.shards.connect import sync_client
from router.shards.keys import generation_key, legacy_state_key, metadata_key, state_keys, zset_key

GRACE = timedelta(minutes=10)
"""How long after a period stops accepting events before it is archived automatically,
so events a router accepted just before the switch have committed."""


class ArchiveRefused(ValueError):
    pass


@dataclass(frozen=True)
class ArchiveResult:
    board_period: str
    players: int
    created: bool  # False: it was already archived


def unarchived_periods(conn) -> list[str]:
    """Board periods that have players and no archive, in key order."""
    with conn.cursor() as cur:
        # Loose index scan over the (board_period, user_id) primary key: one probe per period.
        cur.execute(
            """
            WITH RECURSIVE periods(p) AS (
                SELECT min(board_period) FROM player_scores
                UNION ALL
                SELECT (SELECT min(board_period) FROM player_scores WHERE board_period > p)
                  FROM periods WHERE p IS NOT NULL
            )
            SELECT p FROM periods WHERE p IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM period_archives a WHERE a.board_period = p) ORDER BY p
            """
        )
        periods = [row[0] for row in cur.fetchall()]
    conn.commit()
    return periods


def unarchived_periods_of(dsn: str, board: str) -> list[str]:
    """A board's periods that have players and no archive."""
    conn = psycopg2.connect(dsn)
    try:
        return [key for key in unarchived_periods(conn) if key.split(":", 1)[0] == board]
    finally:
        conn.close()


def is_live(board_period: str, now: datetime) -> bool:
    _, window, label = split_board_period(board_period)
    return parse_period(window, label) in live_periods(window, now)


def archive_period(dsn: str, board_period: str, now: datetime, *, closing: bool = False) -> ArchiveResult:
    """Snapshot the final standings of a board period; refuses one that still takes events,
    unless `closing` (its board is closed, so it takes none)."""
    if not closing and is_live(board_period, now):
        raise ArchiveRefused(f"{board_period} is still live (the current and previous period accept events)")
    board = split_board_period(board_period)[0]
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            # Exclusive: waits for groups writing this period to commit, and any group
            # after us sees the period closed (see lb_apply_events).
            cur.execute("SELECT pg_advisory_xact_lock(lb_period_lock(%s))", (board_period,))
            cur.execute("SELECT players FROM period_archives WHERE board_period = %s", (board_period,))
            existing = cur.fetchone()
            if existing is not None:
                return ArchiveResult(board_period, existing[0], created=False)
            cur.execute("SELECT score_order = 'asc' FROM boards WHERE id = %s", (board,))
            found = cur.fetchone()
            if found is None:
                raise ArchiveRefused(f"there is no board {board}")
            flip = bool(found[0])
            cur.execute("SELECT count(*) FROM player_scores WHERE board_period = %s", (board_period,))
            (players,) = cur.fetchone()
            cur.execute("INSERT INTO period_archives (board_period, players) VALUES (%s, %s)", (board_period, players))
            cur.execute(
                "INSERT INTO period_ranks (board_period, rank, user_id, score, metadata)"
                " SELECT board_period, row_number() OVER (ORDER BY score DESC, seq ASC), user_id,"
                "        CASE WHEN %s THEN %s - score ELSE score END, metadata"
                " FROM player_scores WHERE board_period = %s",
                (flip, MAX_SCORE, board_period),
            )
            return ArchiveResult(board_period, players, created=True)
    finally:
        conn.close()


def _closed_boards(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM boards WHERE closed_at IS NOT NULL")
        closed = {row[0] for row in cur.fetchall()}
    conn.commit()
    return closed


def periods_to_archive(dsn: str, now: datetime) -> list[tuple[str, bool]]:
    """(board period, of a closed board?) for each unarchived period with players that
    stopped taking events more than GRACE ago, or whose board is closed."""
    conn = psycopg2.connect(dsn)
    try:
        closed = _closed_boards(conn)
        due = []
        for key in unarchived_periods(conn):
            board, window, label = split_board_period(key)
            if board in closed:
                due.append((key, True))
            elif window != "all":
                cutoff = previous_period(window, period_start(window, now - GRACE))
                if parse_period(window, label) < cutoff:
                    due.append((key, False))
        return due
    finally:
        conn.close()


def drop_redis_keys(dsn: str, shard_map: ShardMap, now: datetime, retention: timedelta) -> list[str]:
    """Delete the Redis keys of board periods archived more than `retention` ago; returns those periods."""
    conn = psycopg2.connect(dsn)
    dropped = []
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT board_period FROM period_archives WHERE redis_dropped_at IS NULL AND closed_at <= %s"
                " ORDER BY board_period",
                (now - retention,),
            )
            due = [row[0] for row in cur.fetchall()]
        for key in due:
            keys = [zset_key(key), generation_key(key), metadata_key(key), legacy_state_key(key), *state_keys(key)]
            for shard in shard_map.shards:
                client = sync_client(shard.address, timeout_s=10)
                try:
                    for start in range(0, len(keys), 1000):
                        client.unlink(*keys[start : start + 1000])
                finally:
                    client.close()
            with conn, conn.cursor() as cur:
                cur.execute("UPDATE period_archives SET redis_dropped_at = now() WHERE board_period = %s", (key,))
            dropped.append(key)
    finally:
        conn.close()
    return dropped


def rotate(dsn: str, shard_map: ShardMap, now: datetime, retention: timedelta) -> tuple[list[ArchiveResult], list[str]]:
    """Archive every board period that is due, then drop Redis keys past their retention."""
    archived = [archive_period(dsn, key, now, closing=closing) for key, closing in periods_to_archive(dsn, now)]
    return archived, drop_redis_keys(dsn, shard_map, now, retention)


def archive_month(dsn: str, month, now: datetime) -> ArchiveResult:
    """`archive_period` for a month (a `date`) of the original board."""
    from router.periods import board_period

    return archive_period(dsn, board_period("global", "monthly", month), now)
