"""Versioned schema migrations, applied in order, each exactly once.

Safe to run from several processes at once: a transaction-level advisory lock
makes the second runner wait and then find nothing left to do.
"""

from __future__ import annotations

import re
from importlib import resources

import psycopg2

_MIGRATION_LOCK = 0x6C62_6D69  # arbitrary constant shared by every runner
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str, str]]:
    files = resources.files("router.store") / "migrations"
    found = []
    for entry in files.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def migrate(dsn: str) -> list[str]:
    """Apply every migration not yet applied; return the names applied now."""
    conn = psycopg2.connect(dsn)
    applied_now = []
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, name, sql in available():
                if version in done:
                    continue
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied_now.append(name)
    finally:
        conn.close()
    return applied_now
