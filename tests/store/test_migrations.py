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
