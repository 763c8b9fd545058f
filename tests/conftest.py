"""Session fixtures: real redis-server and PostgreSQL processes on free ports in temp dirs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shard_manager.binaries import require_postgres, require_redis_server
from shard_manager.layout import ensure_layout
from shard_manager.migrations import migrate
from shard_manager.processes import PostgresServer, RedisServer, free_port
from tests.cluster import Cluster, RouterProcess, shard_map_for


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="lb-test-"))
    redis_binary = require_redis_server()
    shards = [RedisServer(redis_binary, free_port(), workdir / f"redis-{i}") for i in range(3)]
    postgres = PostgresServer(require_postgres(), free_port(), workdir / "postgres", durable=False)
    try:
        for server in shards:
            server.start()
        postgres.start()
        migrate(postgres.dsn())
        shard_map = shard_map_for(shards)
        ensure_layout(postgres.dsn(), shard_map)
        shards_file = workdir / "shards.yaml"
        made = Cluster(shards, postgres, shard_map, shards_file, workdir)
        made.write_shard_map(shard_map)
        yield made
    finally:
        for server in shards:
            server.stop()
        postgres.stop()


@pytest.fixture(scope="session")
def router(cluster: Cluster) -> Iterator[RouterProcess]:
    proc = cluster.router()
    yield proc
    proc.stop()


@pytest.fixture
def board(cluster: Cluster, router: RouterProcess) -> Iterator[Cluster]:
    """A clean board behind the shared router."""
    for server in cluster.shards:
        if not server.running:
            server.start()
    cluster.reset()
    yield cluster


@pytest.fixture
def api(board: Cluster, router: RouterProcess):
    with router.client() as client:
        yield client


@pytest.fixture
def free_tcp_port() -> int:
    return free_port()
