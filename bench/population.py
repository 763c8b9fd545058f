"""Boards for benchmarks, written straight into PostgreSQL in the shape routers leave."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg2


def add_players(dsn: str, first: int, last: int, prefix: str = "r") -> None:
    """Players <prefix><first>..<prefix><last> (first >= 1: seq must be positive), scores
    spread over [0, 2000), placed by the layout in force, last changed an hour ago (so a
    rebuild's catch-up of recent changes has nothing to do)."""
    month = datetime.now(UTC).date().replace(day=1)
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SELECT setval('score_seq', greatest(%s, (SELECT last_value FROM score_seq)))", (last + 1,))
        cur.execute(
            """
            WITH layout AS (
                SELECT array_agg((s->>'min_score')::bigint ORDER BY o) AS bounds,
                       array_agg(s->>'id' ORDER BY o) AS ids
                  FROM shard_layout, jsonb_array_elements(shards) WITH ORDINALITY AS e(s, o)
            )
            INSERT INTO player_scores (month, user_id, score, version, seq, shard, epoch, updated_at)
            SELECT %(month)s, %(prefix)s || g, sc, 1, g, lb_layout_shard(%(month)s, sc, g, bounds, ids, NULL), 1,
                   now() - interval '1 hour'
              FROM layout, generate_series(%(first)s, %(last)s) AS g,
                   LATERAL (SELECT (hashint4(g) & 2147483647) %% 2000 AS sc) s
            """,
            {"month": month, "first": first, "last": last, "prefix": prefix},
        )
    conn.close()
