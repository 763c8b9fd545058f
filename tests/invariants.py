"""Checks shared by the concurrency and fault tests: the cluster is exact once writes settle."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import redis

from router.shards.keys import state_key, user_of, zset_key
from router.shards.state import decode
from tests.cluster import Cluster

MONTH = datetime.now(UTC).strftime("%Y-%m")


def wait_outbox_empty(cluster: Cluster, timeout: float) -> float:
    """Seconds until every committed state is on the shards (the outbox drained)."""
    start = time.monotonic()
    while True:
        (count,) = cluster.sql("SELECT count(*) FROM redis_outbox")[0]
        if count == 0:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{count} outbox rows still unfinished after {timeout}s")
        time.sleep(0.05)


def assert_exact(
    cluster: Cluster, api: httpx.Client, expected_scores: dict[str, int] | None = None, shard_map=None
) -> None:
    """Every player on exactly one shard, in range, with PostgreSQL's score; reads exact.

    `shard_map` is the layout to check against (default: the cluster's initial map).
    """
    rows = cluster.sql(
        "SELECT user_id, score, seq FROM player_scores WHERE board_period = %s", (f"global:monthly:{MONTH}",)
    )
    pg = {user: (score, seq) for user, score, seq in rows}
    if expected_scores is not None:
        assert {u: s for u, (s, _) in pg.items()} == expected_scores

    shard_map = shard_map or cluster.shard_map
    clients = {s.id: redis.Redis.from_url(s.address, decode_responses=True) for s in shard_map.shards}
    holders: dict[str, list[tuple[str, int]]] = {}
    for shard in shard_map.shards:
        for member, score in clients[shard.id].zrange(zset_key(MONTH), 0, -1, withscores=True):
            holders.setdefault(user_of(member), []).append((shard.id, int(score)))
    assert set(holders) == set(pg), "players on the shards differ from PostgreSQL"
    for user, places in holders.items():
        assert len(places) == 1, f"{user} is on {len(places)} shards: {places}"
        shard_id, score = places[0]
        assert score == pg[user][0], f"{user}: shard has {score}, PostgreSQL {pg[user][0]}"
        assert shard_map.by_id(shard_id).range.contains(score), f"{user} ({score}) is on {shard_id}"
        entry = clients[shard_id].hget(state_key(MONTH, user), user)
        assert entry is not None and decode(entry).on_board

    order = sorted(pg, key=lambda u: (-pg[u][0], pg[u][1]))
    listed = []
    for offset in range(0, len(order), 100):
        page = api.get(f"/v1/leaderboard/top?limit=100&offset={offset}").json()
        assert page["total_players"] == len(order)
        listed += [(e["rank"], e["user_id"], e["score"]) for e in page["entries"]]
    assert listed == [(i + 1, u, pg[u][0]) for i, u in enumerate(order)]
    for rank, user in enumerate(order, start=1):
        body = api.get(f"/v1/scores/{user}").json()
        assert (body["rank"], body["score"]) == (rank, pg[user][0]), user
