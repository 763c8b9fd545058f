"""Schema migrations: versioned ones (migrations/NNN_*.sql) applied in order, each
exactly once, then the SQL functions' present definitions (functions/*.sql).

A function's history is in the migrations that changed it; its present body is in
one file of functions/, which is what a reader opens and what is in force: after the
versioned migrations, every function file whose text changed since it was last
applied is run again (each is CREATE OR REPLACE). A change of a function's signature
still needs a versioned migration to DROP the old one first.

Safe to run from several processes at once: a transaction-level advisory lock
makes the second runner wait and then find nothing left to do.
"""

from __future__ import annotations

import hashlib
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


def functions() -> list[tuple[str, str]]:
    """(file name, SQL) of every function's present definition, by name."""
    files = resources.files("router.store") / "functions"
    return sorted((entry.name, entry.read_text()) for entry in files.iterdir() if entry.name.endswith(".sql"))


def migrate(dsn: str, *, with_functions: bool = True, up_to: int | None = None) -> list[str]:
    """Apply every migration not yet applied, then every function file that changed;
    return the names applied now. `with_functions=False` stops after the versioned
    migrations (to compare what they alone define with the function files); `up_to`
    stops after that version (to build a database as an older release left it)."""
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
                if version in done or (up_to is not None and version > up_to):
                    continue
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied_now.append(name)
            if with_functions:
                applied_now += _apply_functions(cur)
    finally:
        conn.close()
    return applied_now


def _apply_functions(cur) -> list[str]:
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_functions ("
        " name text PRIMARY KEY, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    cur.execute("SELECT name, sha256 FROM schema_functions")
    applied = dict(cur.fetchall())
    changed = []
    for name, sql in functions():
        digest = hashlib.sha256(sql.encode()).hexdigest()
        if applied.get(name) == digest:
            continue
        cur.execute(sql)
        cur.execute(
            "INSERT INTO schema_functions (name, sha256) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, applied_at = now()",
            (name, digest),
        )
        changed.append(f"functions/{name}")
    return changed
