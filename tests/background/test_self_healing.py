"""Self-healing, one step at a time: a ShardHealer in this process over real shards
and PostgreSQL, so each case is set up exactly (a lost AOF tail, a lost removal, a
repair a dead router left half done) and checked directly, with no timing. The
cluster is this module's own, with no router whose healer could step in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from router.background.self_healing import LOST_DATA, ShardHealer
from router.boards import LEGACY
from router.periods import board_period, month_start
from router.shards.client import ShardClients
from router.shards.keys import (
    REPAIR_LEASE_KEY,
    REPAIR_PROGRESS_KEY,
    SHARD_MARKER_KEY,
    member,
    state_key,
    tie_prefix,
    zset_key,
)
from router.shards.protocol import player_state
from router.shards.state import encode
from router.store.postgres import Store
from shard_manager.verify import verify_month
from tests.cluster import Cluster, commit_directly, running_cluster

MONTH = month_start(datetime.now(UTC))
KEY = board_period("global", "monthly", MONTH)


@pytest.fixture(scope="module")
def quiet_cluster() -> Iterator[Cluster]:
    with running_cluster("lb-healing-") as made:
        yield made


@pytest.fixture
def board(quiet_cluster: Cluster) -> Cluster:
    quiet_cluster.reset()
    return quiet_cluster


def healing(cluster: Cluster, scenario, chunk: int = 100):
    async def main():
        store = Store(cluster.dsn, pool_size=2, statement_timeout_ms=5000, deadline_s=10)
        shards = ShardClients(cluster.shard_map, read_deadline_s=2, write_deadline_s=5)
        healer = ShardHealer(
            store, shards, lambda: datetime.now(UTC), LEGACY.live_board_periods, interval_s=1, chunk=chunk
        )
        try:
            return await scenario(healer, shards)
        finally:
            await healer.stop()
            await shards.close()
            store.close()

    return asyncio.run(main())


def checked_players(shard_id: str) -> float:
    return REGISTRY.get_sample_value("lb_shard_repair_players_total", {"shard": shard_id}) or 0.0


def forget_outbox(cluster: Cluster) -> None:
    """As if every group had been acknowledged: what a shard that took a write and then
    lost it to its AOF's last second leaves behind (the reconciler never looks again)."""
    cluster.sql("DELETE FROM redis_outbox")


def test_a_restarted_shard_gets_back_the_writes_its_aof_lost(board: Cluster):
    commit_directly(board, MONTH, [(f"u{i:03d}", "m1", 150 + i) for i in range(300)])
    forget_outbox(board)
    s1 = board.redis(1)
    s1.hset(SHARD_MARKER_KEY, mapping={"run_id": "an-earlier-run", "shard": "s1"})
    assert not verify_month(board.dsn, board.shard_map, MONTH, recheck_after_s=0).ok

    async def scenario(healer: ShardHealer, shards: ShardClients):
        await healer.check_once()
        assert "s1" not in shards.unready  # a restart is repaired while it serves
        await healer.wait_repairs()
        return healer.status["s1"]

    assert healing(board, scenario) == "checked"
    assert s1.hget(SHARD_MARKER_KEY, "run_id") == s1.info("server")["run_id"]
    assert not s1.exists(REPAIR_LEASE_KEY) and not s1.exists(REPAIR_PROGRESS_KEY)
    assert verify_month(board.dsn, board.shard_map, MONTH, recheck_after_s=0).ok


def test_a_lost_removal_is_tombstoned(board: Cluster):
    # PostgreSQL has "mover" on s2 (version 2); s1 still holds its version 1, whose
    # removal was lost, and s2 never got the add.
    commit_directly(board, MONTH, [("mover", "m1", 150)])
    ((seq1,),) = board.sql("SELECT seq FROM player_scores WHERE user_id = 'mover'")
    commit_directly(board, MONTH, [("mover", "m2", 1850)])
    forget_outbox(board)
    s1 = board.redis(1)
    s1.zadd(zset_key(KEY), {member(seq1, "mover"): 150})
    s1.hset(state_key(KEY, "mover"), "mover", encode(1, tie_prefix(seq1)))
    s1.hset(SHARD_MARKER_KEY, "run_id", "an-earlier-run")
    board.redis(2).hset(SHARD_MARKER_KEY, "run_id", "an-earlier-run")

    async def scenario(healer: ShardHealer, shards: ShardClients):
        await healer.check_once()
        await healer.wait_repairs()

    healing(board, scenario)
    assert s1.zcard(zset_key(KEY)) == 0
    assert verify_month(board.dsn, board.shard_map, MONTH, recheck_after_s=0).ok


def test_an_emptied_shard_refuses_reads_until_refilled(board: Cluster):
    commit_directly(board, MONTH, [(f"e{i:03d}", "m1", 500) for i in range(250)])
    forget_outbox(board)
    board.redis(1).flushall()  # no marker left: the data is gone

    async def scenario(healer: ShardHealer, shards: ShardClients):
        await healer.check_once()
        refused_while_repairing = shards.unready.get("s1")
        await healer.wait_repairs()
        return refused_while_repairing, dict(shards.unready), await shards.size("s1", KEY)

    refused, unready_after, size = healing(board, scenario)
    assert refused == LOST_DATA
    assert unready_after == {}
    assert size == 250
    assert verify_month(board.dsn, board.shard_map, MONTH, recheck_after_s=0).ok


def test_a_repair_another_router_left_half_done_resumes_where_it_stopped(board: Cluster):
    users = [f"r{i:04d}" for i in range(1000)]
    commit_directly(board, MONTH, [(u, "m1", 500) for u in users])
    forget_outbox(board)
    s1 = board.redis(1)
    run_id = s1.info("server")["run_id"]
    s1.flushall()

    async def scenario(healer: ShardHealer, shards: ShardClients):
        # A router restored the first 600 players (in user order), then died; its lease expired.
        first = await healer.store.players_on_shard(KEY, "s1", "", 600)
        await shards.apply("s1", KEY, [(player_state(r.user_id, r.version, r.score, r.seq), True) for r in first])
        s1.hset(
            REPAIR_PROGRESS_KEY,
            mapping={"run_id": run_id, "lost": "1", "phase": "adds", "period": KEY, "after": first[-1].user_id},
        )
        before = checked_players("s1")
        await healer.check_once()
        await healer.wait_repairs()
        return checked_players("s1") - before

    # The other 400 restored, then the 1,000 members scanned for strays: not all 1,000 restored again.
    assert healing(board, scenario, chunk=100) == 400 + 1000
    assert s1.zcard(zset_key(KEY)) == 1000
    assert s1.hget(SHARD_MARKER_KEY, "run_id") == run_id
    assert verify_month(board.dsn, board.shard_map, MONTH, recheck_after_s=0).ok


def test_only_the_lease_holder_repairs(board: Cluster):
    s1 = board.redis(1)
    s1.hset(SHARD_MARKER_KEY, "run_id", "an-earlier-run")
    s1.set(REPAIR_LEASE_KEY, "another-router", px=10_000)

    async def scenario(healer: ShardHealer, shards: ShardClients):
        await healer.check_once()
        return healer.status["s1"], dict(healer._repairs)

    status, repairs = healing(board, scenario)
    assert status.startswith("being repaired by another router") and "s1" not in repairs
    assert s1.hget(SHARD_MARKER_KEY, "run_id") == "an-earlier-run"


def test_a_hidden_players_lost_tombstone_and_an_erased_players_lost_purge_are_repaired(board: Cluster):
    import psycopg2

    from router.shards.state import decode
    from router.store import players

    commit_directly(board, MONTH, [("cheat", "m1", 150), ("gone", "m1", 160), ("fair", "m1", 170)])
    forget_outbox(board)
    seqs = dict(board.sql("SELECT user_id, seq FROM player_scores"))
    conn = psycopg2.connect(board.dsn)
    try:
        hidden = players.hide(conn, "cheat", "global", "aimbot", "test")
        players.erase(conn, "gone", "request", "test")
    finally:
        conn.close()
    # The shard took both players' states but lost what the actions sent it (an AOF tail).
    s1 = board.redis(1)
    for user in ("cheat", "gone"):
        s1.zadd(zset_key(KEY), {member(seqs[user], user): 150})
        s1.hset(state_key(KEY, user), user, encode(1, tie_prefix(seqs[user])))
    s1.hset(SHARD_MARKER_KEY, "run_id", "an-earlier-run")

    async def scenario(healer: ShardHealer, shards: ShardClients):
        await healer.check_once()
        await healer.wait_repairs()

    healing(board, scenario)
    assert [name[12:] for name in s1.zrange(zset_key(KEY), 0, -1)] == ["fair"]
    tombstone = decode(s1.hget(state_key(KEY, "cheat"), "cheat"))
    assert tombstone is not None and not tombstone.on_board and tombstone.version == hidden.cleanup.entries[0][2]
    assert s1.hget(state_key(KEY, "gone"), "gone") is None  # no trace, not even a tombstone
    assert verify_month(board.dsn, board.shard_map, MONTH, recheck_after_s=0).ok
