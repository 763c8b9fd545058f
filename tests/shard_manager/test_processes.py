"""The launcher's PostgreSQL starts wherever the project is checked out."""

from __future__ import annotations

from pathlib import Path

import psycopg2

from shard_manager.local.binaries import require_postgres
from shard_manager.local.processes import PostgresServer, free_port


def _answers(server: PostgresServer) -> bool:
    conn = psycopg2.connect(server.dsn(), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    finally:
        conn.close()


def test_starts_in_a_directory_too_deep_for_its_unix_socket(tmp_path: Path) -> None:
    # A checkout a few folders deep: <project>/.data/postgres/pgdata/.s.PGSQL.<port>
    # passes the 107 bytes a socket's path may hold, which PostgreSQL refuses to start on.
    deep = tmp_path / ("checkout-of-the-leaderboard-cluster-" * 3) / ".data" / "postgres"
    server = PostgresServer(require_postgres(), free_port(), deep, durable=False)
    assert len(str(server.pgdata / f".s.PGSQL.{server.port}")) > 107
    try:
        server.start()
        assert _answers(server)
        assert not list(server.pgdata.glob(".s.PGSQL.*"))  # over TCP only
    finally:
        server.stop()


def test_keeps_its_unix_socket_where_the_path_fits(tmp_path: Path) -> None:
    server = PostgresServer(require_postgres(), free_port(), tmp_path / "pg", durable=False)
    try:
        server.start()
        assert _answers(server)
        assert (server.pgdata / f".s.PGSQL.{server.port}").is_socket()
    finally:
        server.stop()
