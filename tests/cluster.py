"""Test helpers that run the real thing: router processes over real servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg2
import psycopg2.errors
import redis

from router.shardmap import ShardMap, dump_shard_map
from router.shards.keys import SHARD_MARKER_KEY
from router.store.layout import ensure_layout
from router.store.migrate import migrate
from shard_manager.local.binaries import require_postgres, require_redis_server
from shard_manager.local.launcher import wait_listening, wait_ready
from shard_manager.local.processes import PostgresServer, RedisServer, free_port

GAME_TOKEN = "test-game-token"
ADMIN_TOKEN = "test-admin-token"
BOUNDS = (0, 100, 1000)


def shard_map_for(servers: list[RedisServer], bounds: tuple[int, ...] = BOUNDS, epoch: int = 1) -> ShardMap:
    from router.shardmap import shard_map_from_dict

    shards = []
    for i, (server, start) in enumerate(zip(servers, bounds, strict=True)):
        end = bounds[i + 1] if i + 1 < len(bounds) else None
        shards.append({"id": f"s{i}", "address": server.url, "min_score": start, "max_score": end})
    return shard_map_from_dict({"epoch": epoch, "shards": shards})


@dataclass
class RouterProcess:
    """One router (`router.serve`) on its own port, as the launcher starts it."""

    shards_file: Path
    database_url: str
    log_path: Path
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RouterProcess:
        env = {
            **os.environ,
            "LB_SHARDS_FILE": str(self.shards_file),
            "LB_DATABASE_URL": self.database_url,
            "LB_GAME_TOKENS": f"{GAME_TOKEN},rotated-{GAME_TOKEN}",
            "LB_ADMIN_TOKEN": ADMIN_TOKEN,
            "LB_RECONCILE_INTERVAL_S": "0.2",
            "LB_RECONCILE_SETTLE_S": "0.5",
            "LB_ENV": "dev",  # the test tokens are short on purpose
            **self.extra_env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "router.serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--log-level",
                "warning",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=Path(__file__).resolve().parent.parent,
        )
        log.close()
        try:
            wait_ready(self.url + "/healthz", timeout=60, alive=lambda: self.proc.poll() is None)
            wait_listening(self.port, self.workers, timeout=60, alive=lambda: self.proc.poll() is None)
        except Exception:
            raise RuntimeError(f"router failed to start:\n{self.log_path.read_text()[-3000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30), **kwargs)


@dataclass
class Cluster:
    """Real shards + real PostgreSQL, shared by a test session."""

    shards: list[RedisServer]
    postgres: PostgresServer
    shard_map: ShardMap
    shards_file: Path
    workdir: Path

    @property
    def dsn(self) -> str:
        return self.postgres.dsn()

    def write_shard_map(self, shard_map: ShardMap, path: Path | None = None) -> Path:
        path = path or self.shards_file
        path.write_text(dump_shard_map(shard_map))
        return path

    def router(self, **kwargs) -> RouterProcess:
        log = self.workdir / f"router-{time.monotonic_ns()}.log"
        return RouterProcess(kwargs.pop("shards_file", self.shards_file), self.dsn, log, **kwargs).start()

    def redis(self, index: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.shards[index].port, decode_responses=True)

    def reset(self) -> None:
        """An empty board: PostgreSQL first, so no reconciler can re-apply old rows to Redis."""
        conn = psycopg2.connect(self.dsn)
        try:
            # TRUNCATE locks its tables one by one while the routers' own statements
            # (reconciler, group commits) lock some of them in other orders: now and
            # then PostgreSQL breaks a deadlock by cancelling the TRUNCATE. Run it again.
            for attempt in range(5):
                try:
                    with conn, conn.cursor() as cur:
                        cur.execute(
                            "TRUNCATE score_events, player_scores, redis_outbox, period_ranks, period_archives,"
                            " admin_audit, hidden_players, hidden_scores, removed_scores, erased_players,"
                            " redis_cleanup, player_periods"
                        )
                        cur.execute("DELETE FROM boards WHERE id <> 'global'")
                        cur.execute(
                            "UPDATE boards SET score_order = 'desc', operator = 'incr', windows = '{monthly}',"
                            " closed_at = NULL, split = NULL, updated_at = clock_timestamp() WHERE id = 'global'"
                        )
                    break
                except psycopg2.errors.DeadlockDetected:
                    if attempt == 4:
                        raise
        finally:
            conn.close()
        for i, server in enumerate(self.shards):
            if server.running:
                self.empty_shard(i)

    def empty_shard(self, index: int) -> None:
        """FLUSHALL, and in the same step the marker self-healing leaves on a shard it has
        checked: PostgreSQL was emptied too, so there is nothing to restore, and a router
        must not see a moment when the shard looks like it lost its data."""
        client = self.redis(index)
        run_id = client.info("server")["run_id"]
        pipe = client.pipeline(transaction=True)
        pipe.flushall()
        pipe.hset(SHARD_MARKER_KEY, mapping={"run_id": run_id, "shard": f"s{index}"})
        pipe.execute()

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        conn = psycopg2.connect(self.dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


@contextlib.contextmanager
def running_cluster(prefix: str, redis_servers: int = 3) -> Iterator[Cluster]:
    """Real redis-servers and PostgreSQL on free ports in a temp dir; the first three
    servers form the initial layout, any more wait as spares for rebalancing."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    redis_binary = require_redis_server()
    servers = [RedisServer(redis_binary, free_port(), workdir / f"redis-{i}") for i in range(redis_servers)]
    postgres = PostgresServer(require_postgres(), free_port(), workdir / "postgres", durable=False)
    try:
        for server in servers:
            server.start()
        postgres.start()
        migrate(postgres.dsn())
        initial = shard_map_for(servers[:3])
        ensure_layout(postgres.dsn(), initial)
        cluster = Cluster(servers, postgres, initial, workdir / "shards.yaml", workdir)
        cluster.write_shard_map(initial)
        yield cluster
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
        # A PostgreSQL data directory per run: kept, they filled /tmp by gigabytes.
        shutil.rmtree(workdir, ignore_errors=True)


def commit_directly(cluster: Cluster, month, events: list[tuple[str, str, int]], occurred_at=None) -> list[tuple]:
    """Run the exact transaction a router runs for a group, and never touch Redis.

    What a router leaves behind when it dies right after its commit; also how tests
    put history into months that no longer accept events through the API.
    """
    from datetime import UTC, date, datetime

    from router.periods import board_period

    if isinstance(month, str):
        month = date.fromisoformat(month)
    moment = occurred_at or datetime.now(UTC)
    n = len(events)
    return cluster.sql(
        "SELECT status, detail FROM lb_apply_events(%s, %s, %s, %s, %s::bigint[], %s::timestamptz[], %s::int[],"
        " %s::int[], %s::text[])",
        (
            ["global"] * n,
            [u for u, _, _ in events],
            [m for _, m, _ in events],
            ["incr"] * n,
            [v for _, _, v in events],
            [moment] * n,
            list(range(1, n + 1)),
            list(range(1, n + 1)),
            [board_period("global", "monthly", month)] * n,
        ),
    )
