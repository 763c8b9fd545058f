"""Migrations on a database that already holds data, as an upgrade meets it."""

from __future__ import annotations

import psycopg2

from router.store.migrate import available, migrate
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
        assert migrate(dsn) == ["006_outbox_per_group.sql"]
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
