"""Migrations on a database that already holds data, as an upgrade meets it."""

from __future__ import annotations

import psycopg2

from router.store.migrate import available, functions, migrate
from tests.cluster import Cluster


def fresh_database(cluster: Cluster, name: str) -> str:
    admin = psycopg2.connect(cluster.dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    return cluster.dsn.rsplit("/", 1)[0] + "/" + name


def test_per_player_outbox_rows_become_one_row_that_names_them(cluster):
    dsn = fresh_database(cluster, "upgrade_006")
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, name, sql in available():
                if version < 6:
                    cur.execute(sql)
                    cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            # Two players whose Redis work a router of the previous version left unfinished.
            cur.execute(
                "INSERT INTO redis_outbox (month, user_id, version, first_version)"
                " VALUES ('2026-11-01', 'a', 3, 2), ('2026-11-01', 'b', 1, 1)"
            )
        assert migrate(dsn, with_functions=False, up_to=6) == ["006_outbox_per_group.sql"]
        with conn, conn.cursor() as cur:
            cur.execute("SELECT months, user_ids FROM redis_outbox")
            ((months, users),) = cur.fetchall()
            assert sorted(zip(users, (str(m) for m in months), strict=True)) == [
                ("a", "2026-11-01"),
                ("b", "2026-11-01"),
            ]
            # A router of the previous version, mid-upgrade, acknowledges the old way:
            # that deletes nothing, and the reconciler finishes the row.
            cur.execute("SELECT lb_ack_outbox('{2026-11-01}'::date[], '{a}'::text[], '{1}'::bigint[], '{3}'::bigint[])")
            assert cur.fetchone() == (0,)
            cur.execute("SELECT count(*) FROM redis_outbox")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


FUNCTION_SOURCES = (
    "SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prosrc FROM pg_proc p"
    " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.proname LIKE 'lb\\_%'"
    " ORDER BY 1, 2"
)


def _function_sources(dsn: str) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(FUNCTION_SOURCES)
            return cur.fetchall()
    finally:
        conn.close()


def test_each_function_file_holds_what_the_migrations_left_in_force(cluster):
    # The versioned migrations alone, then the function files on top: nothing changes.
    dsn = fresh_database(cluster, "functions_check")
    migrate(dsn, with_functions=False)
    by_migrations = _function_sources(dsn)
    applied = migrate(dsn)
    assert sorted(applied) == sorted(f"functions/{name}" for name, _ in functions())
    assert _function_sources(dsn) == by_migrations
    # Every function of ours has its file, and a file is only re-run when it changed.
    assert {name for name, _, _ in by_migrations} == {name.removesuffix(".sql") for name, _ in functions()}
    assert migrate(dsn) == []


def test_a_populated_database_of_the_single_board_release_becomes_board_global(cluster):
    """What migration 007 meets on an upgrade: months of events written by the previous
    release's own function, an archived month, unfinished Redis work and a move in flight."""
    dsn = fresh_database(cluster, "upgrade_007")
    assert migrate(dsn, up_to=6, with_functions=False)[-1] == "006_outbox_per_group.sql"
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO shard_layout (id, epoch, shards) VALUES (1, 3, %s)",
                (
                    '[{"id": "s0", "address": "redis://a", "min_score": 0},'
                    ' {"id": "s1", "address": "redis://b", "min_score": 100}]',
                ),
            )
            for month, user, match, value in (
                ("2026-10-01", "ann", "m1", 50),
                ("2026-11-01", "ann", "m2", 70),
                ("2026-11-01", "ann", "m3", 60),
                ("2026-11-01", "bob", "m1", 120),
            ):
                cur.execute(
                    "SELECT status FROM lb_apply_events(%s, %s, %s::date[], %s, %s::bigint[], %s::timestamptz[],"
                    " %s::int[])",
                    ([user], [match], [month], ["incr"], [value], [f"{month}T12:00:00Z"], [1]),
                )
                assert cur.fetchone() == ("applied",)
            cur.execute("INSERT INTO month_archives (month, players) VALUES ('2026-10-01', 1)")
            cur.execute("INSERT INTO archived_ranks (month, rank, user_id, score) VALUES ('2026-10-01', 1, 'ann', 50)")
            cur.execute(
                "UPDATE shard_layout SET move = %s",
                (
                    '{"lo": 100, "hi": 200, "source": "s1", "dest": "s0", "up": false,'
                    ' "cursors": {"2026-11-01": [120, 7]}}',
                ),
            )
            cur.execute("SELECT user_id, month, score, version, seq, shard FROM player_scores ORDER BY 1, 2")
            before = cur.fetchall()
            cur.execute("SELECT count(*) FROM redis_outbox")
            (outbox_rows,) = cur.fetchone()

        assert migrate(dsn)[0] == "007_boards.sql"

        with conn, conn.cursor() as cur:
            label = {"2026-10-01": "global:monthly:2026-10", "2026-11-01": "global:monthly:2026-11"}
            cur.execute("SELECT user_id, board_period, score, version, seq, shard FROM player_scores ORDER BY 1, 2")
            assert cur.fetchall() == [(u, label[str(m)], s, v, q, sh) for u, m, s, v, q, sh in before]
            cur.execute("SELECT board, user_id, match_id, board_periods, scores_after FROM score_events ORDER BY 2, 3")
            assert cur.fetchall() == [
                ("global", "ann", "m1", ["global:monthly:2026-10"], [50]),
                ("global", "ann", "m2", ["global:monthly:2026-11"], [70]),
                ("global", "ann", "m3", ["global:monthly:2026-11"], [130]),
                ("global", "bob", "m1", ["global:monthly:2026-11"], [120]),
            ]
            cur.execute("SELECT id, score_order, operator, windows FROM boards")
            assert cur.fetchall() == [("global", "desc", "incr", ["monthly"])]
            cur.execute("SELECT board_period, players FROM period_archives")
            assert cur.fetchall() == [("global:monthly:2026-10", 1)]
            cur.execute("SELECT board_period, rank, user_id, score FROM period_ranks")
            assert cur.fetchall() == [("global:monthly:2026-10", 1, "ann", 50)]
            cur.execute("SELECT count(*), bool_and(board_periods[1] LIKE 'global:monthly:%') FROM redis_outbox")
            assert cur.fetchone() == (outbox_rows, True)
            cur.execute("SELECT move->'cursors' FROM shard_layout")
            assert cur.fetchone() == ({"global:monthly:2026-11": [120, 7]},)
            # Idempotency survives the upgrade: an event recorded before it is a duplicate after it.
            cur.execute(
                "SELECT status, score FROM lb_apply_events('{global}', '{ann}', '{m2}', '{incr}', '{70}',"
                " '{2026-11-20T00:00:00Z}', '{1}', '{1}', '{global:monthly:2026-11}')"
            )
            assert cur.fetchone() == ("duplicate", 130)
    finally:
        conn.close()


def test_player_states_carry_only_the_indexes_something_reads(cluster):
    # Every index on player_scores is paid for by every write that changes a player's
    # state; each must have a reader: the primary key (the write path's lookups) and
    # the score order (rebalance steps, archives).
    dsn = fresh_database(cluster, "indexes_check")
    migrate(dsn)
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'player_scores' ORDER BY 1")
            assert [name for (name,) in cur.fetchall()] == ["player_scores_pkey", "player_scores_rank"]
    finally:
        conn.close()
