"""A Sentinel-managed shard under a steady write load, on real processes: its primary
SIGKILLed, a replica promoted by three sentinels with no operator, the old primary
back as a replica, and the sentinels all gone while routers keep serving."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from router.boards import LEGACY
from router.periods import month_start
from router.shardmap import ShardMap, dump_shard_map, shard_map_from_dict
from router.store.layout import ensure_layout
from router.store.migrate import migrate
from shard_manager.local.binaries import require_postgres, require_redis_server
from shard_manager.local.processes import PostgresServer, RedisServer, SentinelServer, free_port
from shard_manager.rebalance import Progress, Rebalancer
from shard_manager.verify import verify_month
from tests.cluster import Cluster
from tests.drills import ROUTER_ENV, DrillLoad, now

SERVICE = "lb-s2"


@dataclass
class HaCluster:
    cluster: Cluster
    primary: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]

    @property
    def address(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SERVICE}"


@pytest.fixture(scope="module")
def ha() -> Iterator[HaCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="lb-failover-"))
    binary = require_redis_server()
    plain = [RedisServer(binary, free_port(), workdir / f"redis-{i}") for i in range(2)]
    primary = RedisServer(binary, free_port(), workdir / "s2-a")
    replica = RedisServer(binary, free_port(), workdir / "s2-b", replica_of=primary.port)
    sentinels = [
        SentinelServer(binary, free_port(), workdir / f"sentinel-{i}", {SERVICE: primary.port}) for i in range(3)
    ]
    postgres = PostgresServer(require_postgres(), free_port(), workdir / "postgres", durable=False)
    started = []
    try:
        for server in [*plain, primary, replica, *sentinels, postgres]:
            server.start()
            started.append(server)
        migrate(postgres.dsn())
        made = HaCluster(None, primary, replica, sentinels)  # type: ignore[arg-type]
        shard_map: ShardMap = shard_map_from_dict(
            {
                "epoch": 1,
                "shards": [
                    {"id": "s0", "address": plain[0].url, "min_score": 0, "max_score": 100},
                    {"id": "s1", "address": plain[1].url, "min_score": 100, "max_score": 1000},
                    {"id": "s2", "address": made.address, "min_score": 1000, "max_score": None},
                ],
            }
        )
        ensure_layout(postgres.dsn(), shard_map)
        (workdir / "shards.yaml").write_text(dump_shard_map(shard_map))
        made.cluster = Cluster(plain, postgres, shard_map, workdir / "shards.yaml", workdir)
        _wait(lambda: _replicas_known(sentinels[0]) >= 1, 20, "the sentinels to find the replica")
        yield made
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait(condition, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(redis.RedisError, OSError):
            if condition():
                return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _replicas_known(sentinel: SentinelServer) -> int:
    client = redis.Redis(port=sentinel.port, socket_timeout=1)
    try:
        return len(client.sentinel_slaves(SERVICE))
    finally:
        client.close()


def _role(server: RedisServer) -> str:
    client = redis.Redis(port=server.port, socket_timeout=1, decode_responses=True)
    try:
        return client.info("replication")["role"]
    finally:
        client.close()


def test_a_killed_primary_is_replaced_without_an_operator_and_nothing_acknowledged_is_lost(ha: HaCluster):
    cluster = ha.cluster
    routers = [cluster.router(extra_env=ROUTER_ENV) for _ in range(2)]
    try:
        load = DrillLoad([r.url for r in routers])
        load.seed()
        killed_at: list[float] = []

        async def kill_primary(started: float) -> None:
            await asyncio.sleep(3 - (time.monotonic() - started))
            killed_at.append(time.monotonic())
            ha.primary.kill()

        asyncio.run(load.run(12, kill_primary))
        assert not load.unanswered()
        kill = killed_at[0]
        # s2's writes come back by themselves; the others never stop.
        back = min(when for shard, when in load.acks if shard == 2 and when > kill + 0.5)
        print(f"s2 writes answered again {back - kill:.1f} s after its primary was killed")
        assert back - kill < 15
        load.assert_kept_rate({0, 1}, (kill - 2.5, kill), (kill, kill + 3))
        assert _role(ha.replica) == "master"

        # Every acknowledged write is there, and the promoted replica holds what PostgreSQL
        # holds (self-healing repairs what asynchronous replication lost).
        _wait(lambda: cluster.sql("SELECT count(*) FROM redis_outbox") == [(0,)], 30, "the outbox to drain")
        rows = dict(
            cluster.sql(
                "SELECT user_id, score FROM player_scores WHERE board_period = %s", (LEGACY.board_periods(now())[0],)
            )
        )
        assert rows == dict(load.acked)
        _wait(
            lambda: verify_month(cluster.dsn, cluster.shard_map, month_start(now()), recheck_after_s=0).ok, 30, "verify"
        )

        # The old primary, restarted, rejoins as a replica of the new one.
        ha.primary.start()
        _wait(lambda: _role(ha.primary) == "slave", 30, "the old primary to rejoin as a replica")

        # All sentinels gone: the routers keep writing to the primary they know, and say so.
        for sentinel in ha.sentinels:
            sentinel.kill()
        reply = httpx.post(
            routers[0].url + "/v1/scores",
            json={"user_id": load.players(2)[0], "match_id": "after-sentinels", "score": 1},
            headers={"X-Game-Service-Token": "test-game-token"},
        )
        assert reply.status_code == 200, reply.text
        ready = httpx.get(routers[0].url + "/readyz").json()
        assert "no sentinel answers" in ready["checks"]["shard:s2"], ready
    finally:
        for router in routers:
            router.stop()
        for sentinel in ha.sentinels:
            if not sentinel.running:
                sentinel.start()


def _current_primary(ha: HaCluster) -> RedisServer:
    client = redis.Redis(port=ha.sentinels[0].port, socket_timeout=1, decode_responses=True)
    try:
        _, port = client.sentinel_get_master_addr_by_name(SERVICE)
    finally:
        client.close()
    (server,) = [s for s in (ha.primary, ha.replica) if s.port == int(port)]
    return server


def test_a_failover_in_the_middle_of_a_re_split_is_ridden_out(ha: HaCluster):
    cluster = ha.cluster
    for sentinel in ha.sentinels:
        if not sentinel.running:
            sentinel.start()
    _wait(lambda: _replicas_known(ha.sentinels[0]) >= 1, 30, "the sentinels to know a replica again")
    router = cluster.router(extra_env=ROUTER_ENV)
    try:
        # 1,500 players in [500, 1000), on s1: moving the s1/s2 boundary down to 500
        # carries them all onto the Sentinel-managed s2.
        events = [{"user_id": f"m{i:04d}", "match_id": "seed", "score": 500 + i % 500} for i in range(1500)]
        with httpx.Client(base_url=router.url, timeout=60) as client:
            for start in range(0, len(events), 500):
                reply = client.post(
                    "/v1/scores/batch",
                    json={"events": events[start : start + 500]},
                    headers={"X-Game-Service-Token": "test-game-token"},
                )
                assert reply.status_code == 200, reply.text
        target = shard_map_from_dict(
            {
                "epoch": 2,
                "shards": [
                    {"id": "s0", "address": cluster.shard_map.shards[0].address, "min_score": 0, "max_score": 100},
                    {"id": "s1", "address": cluster.shard_map.shards[1].address, "min_score": 100, "max_score": 500},
                    {"id": "s2", "address": ha.address, "min_score": 500, "max_score": None},
                ],
            }
        )
        moved: list[int] = []
        victim = _current_primary(ha)

        def on_moved(_step, done: int, _total: int) -> None:
            moved.append(done)
            if len(moved) == 3:
                victim.kill()  # a few chunks in

        rebalancer = Rebalancer(cluster.dsn, step_players=50, settle_s=0.5)
        try:
            rebalancer.apply(target, Progress(on_moved=on_moved))
        finally:
            rebalancer.close()
        assert not victim.running and max(moved) >= 1500
        _wait(lambda: cluster.sql("SELECT count(*) FROM redis_outbox") == [(0,)], 30, "the outbox to drain")
        month = month_start(now())
        _wait(
            lambda: verify_month(cluster.dsn, target, month, recheck_after_s=0).ok, 30, "verify clean on the new layout"
        )
        victim.start()
    finally:
        router.stop()
