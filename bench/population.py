"""Boards for benchmarks, written straight into PostgreSQL in the shape routers leave."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg2

from router.boards import LEGACY


def add_players(dsn: str, first: int, last: int, prefix: str = "r") -> None:
    """Players <prefix><first>..<prefix><last> of the original board's current month,
    scores spread over [0, 2000), placed by the layout in force, last changed an hour
    ago (so a rebuild's catch-up of recent changes has nothing to do), each listed in
    player_periods as lb_apply_events lists a new state (hiding and erasing find them
    there). Their tie-breaks come from score_seq, as a router's do, so a board that
    routers have written to already gets no repeated ones."""
    key = LEGACY.board_periods(datetime.now(UTC))[0]
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute(
            """
            WITH added AS (
                INSERT INTO player_scores (board_period, user_id, score, version, seq, shard, epoch, updated_at)
                SELECT %(key)s, %(prefix)s || g, sc, 1, seq, lb_layout_shard(%(key)s, sc, seq, shards, NULL), 1,
                       now() - interval '1 hour'
                  FROM shard_layout, generate_series(%(first)s, %(last)s) AS g,
                       LATERAL (SELECT (hashint4(g) & 2147483647) %% 2000 AS sc, nextval('score_seq') AS seq) s
                RETURNING user_id, board_period
            )
            INSERT INTO player_periods (user_id, board_period) SELECT user_id, board_period FROM added
            """,
            {"key": key, "first": first, "last": last, "prefix": prefix},
        )
    conn.close()
