"""Two boards of opposite orders, each split over three shards by its own ranges, under
two routers and many clients, with players pushed across shard boundaries both ways
and one board's boundary moved online meanwhile: afterwards every standing is exact
and the shards hold exactly what PostgreSQL does."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from router.boards import MAX_SCORE, Board
from router.store.layout import read_layout
from shard_manager.rebalance import Rebalancer
from shard_manager.verify import verify_period
from tests.cluster import ADMIN_TOKEN, GAME_TOKEN, Cluster, running_cluster
from tests.invariants import wait_outbox_empty

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
BOARDS = {
    # desc: incr deltas carry players over 100 and 1000 both ways
    "kills": Board("kills", "desc", "incr", ("all", "daily")),
    # asc, set: stored scores are 2^53-1 - score, so times just under 2^53-1 land low
    "laps": Board("laps", "asc", "set", ("all",)),
}
PLAYERS = [f"c{i}" for i in range(40)]
M = MAX_SCORE
RANGES = {
    "kills": [
        {"shard": "s0", "min_score": 0, "max_score": 100},
        {"shard": "s1", "min_score": 100, "max_score": 1000},
        {"shard": "s2", "min_score": 1000, "max_score": None},
    ],
    # stored [0, 100) on s0, [100, 1000) on s1, [1000, inf) on s2, written as the board shows times
    "laps": [
        {"shard": "s2", "min_score": 0, "max_score": M - 999},
        {"shard": "s1", "min_score": M - 999, "max_score": M - 99},
        {"shard": "s0", "min_score": M - 99, "max_score": None},
    ],
}


@pytest.fixture(scope="module")
def split_cluster() -> Iterator[Cluster]:
    """A cluster of its own: the test moves a boundary of its layout."""
    with running_cluster("lb-boards-conc-") as cluster:
        yield cluster


def _event(board: str, rng: random.Random, n: int, client_id: int) -> dict:
    user = rng.choice(PLAYERS)
    # kills: deltas that carry players over 100 and 1000 both ways; laps: times whose
    # stored score (2^53-1 - time) lies anywhere in 0..1500, across all three shards.
    kills = rng.choice([1, -1, 60, -60, 500, -500, 950, -950])
    score = kills if board == "kills" else MAX_SCORE - rng.randint(0, 1500)
    return {"user_id": user, "match_id": f"w{client_id}-{n}", "score": score}


async def _writer(urls: list[str], client_id: int, until: float, acked: list, seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=10) as client:
        n = 0
        while time.monotonic() < until:
            board = rng.choice(sorted(BOARDS))
            body = _event(board, rng, n, client_id)
            n += 1
            for _ in range(20):  # resend the same match_id on an unknown outcome, as clients must
                try:
                    reply = await client.post(f"{rng.choice(urls)}/v1/boards/{board}/scores", json=body, headers=AUTH)
                except httpx.TransportError:
                    continue
                if reply.status_code < 500:
                    break
            if reply.status_code == 200:
                acked.append((board, body["user_id"], body["match_id"]))
            else:
                assert reply.status_code == 422 and reply.json()["error"]["field"] == "score", reply.text


def _pg_standings(cluster: Cluster) -> dict[str, list[tuple[str, int]]]:
    rows = cluster.sql(
        "SELECT board_period, user_id, score FROM player_scores WHERE board_period LIKE 'kills:%%'"
        " OR board_period LIKE 'laps:%%' ORDER BY board_period, score DESC, seq"
    )
    out: dict[str, list[tuple[str, int]]] = {}
    for key, user, stored in rows:
        out.setdefault(key, []).append((user, BOARDS[key.split(":")[0]].shown(stored)))
    return out


def test_two_boards_two_routers_a_boundary_move_stay_exact(split_cluster: Cluster):
    cluster = split_cluster
    cluster.reset()
    routers = [cluster.router(extra_env={"LB_LAYOUT_POLL_S": "0.2"}) for _ in range(2)]
    try:
        with routers[0].client() as admin:
            for board in BOARDS.values():
                config = {
                    "order": board.order,
                    "operator": board.operator,
                    "windows": list(board.windows),
                    "ranges": RANGES[board.id],
                }
                reply = admin.put(f"/v1/admin/boards/{board.id}", json=config, headers={"X-Admin-Token": ADMIN_TOKEN})
                assert reply.status_code == 200, reply.text
            # A player in the moved range on each board that no writer touches, so the move
            # has someone to move (and someone to leave) whatever the load's random walk
            # leaves there: kills at 150, laps at a stored 150.
            for board, score in (("kills", 150), ("laps", M - 150)):
                reply = admin.post(
                    f"/v1/boards/{board}/scores",
                    json={"user_id": f"still-{board}", "match_id": "seed", "score": score},
                    headers=AUTH,
                )
                assert reply.status_code == 200, reply.text
        before = read_layout(cluster.dsn)
        assert before is not None
        # Board kills' s0/s1 boundary moves from 100 up to 300: its players in [100, 300)
        # go from s1 down to s0. Laps, whose stored scores fill the same range, stay put.
        target = before.shard_map.over_split((("s0", 0), ("s1", 300), ("s2", 1000)))
        moved: list = []

        def move_midway() -> None:
            time.sleep(1.5)
            rebalancer = Rebalancer(cluster.dsn, step_players=5, settle_s=1.0)
            try:
                moved.append(rebalancer.apply(target, board="kills"))
            finally:
                rebalancer.close()

        mover = threading.Thread(target=move_midway)
        mover.start()
        acked: list = []
        until = time.monotonic() + 6
        urls = [r.url for r in routers]

        async def load() -> None:
            await asyncio.gather(*(_writer(urls, i, until, acked, seed=i) for i in range(12)))

        asyncio.run(load())
        mover.join(timeout=120)
        assert moved, "the boundary move did not finish"
        assert len(acked) > 300, f"too little load to mean anything: {len(acked)}"

        wait_outbox_empty(cluster, timeout=15)
        layout = read_layout(cluster.dsn)
        assert layout is not None and layout.move is None and layout.shard_map.same_layout(before.shard_map)
        recorded = set(cluster.sql("SELECT board, user_id, match_id FROM score_events"))
        assert set(acked) <= recorded, "an acknowledged event is missing from PostgreSQL"
        standings = _pg_standings(cluster)
        today = datetime.now(UTC)
        assert set(standings) == {"kills:all:all", f"kills:daily:{today.date().isoformat()}", "laps:all:all"}
        # Kills' players in [100, 300) are on s0 now, laps' (stored) ones still on s1.
        in_moved_range = dict(
            cluster.sql(
                "SELECT split_part(board_period, ':', 1) || ' ' || shard, count(*) FROM player_scores"
                " WHERE score >= 100 AND score < 300 GROUP BY 1"
            )
        )
        assert in_moved_range.get("kills s0", 0) > 0 and in_moved_range.get("laps s1", 0) > 0, in_moved_range
        assert "kills s1" not in in_moved_range and "laps s0" not in in_moved_range, in_moved_range
        changed = dict(
            cluster.sql(
                "SELECT split_part(board_period, ':', 1), count(*) FROM player_scores WHERE version > 2 GROUP BY 1"
            )
        )
        assert changed.get("kills", 0) > 10 and changed.get("laps", 0) > 10, changed
        splits = {"kills": target.split(), "laps": ((("s0", 0), ("s1", 100), ("s2", 1000)))}
        for key, expected in standings.items():
            placement = layout.shard_map.over_split(splits[key.split(":")[0]])
            report = verify_period(cluster.dsn, placement, key, recheck_after_s=0)
            assert report.ok, report.render()
            board, window, period = key.split(":")
            for router in routers:
                with router.client() as api:
                    page = api.get(f"/v1/boards/{board}/top?limit=100&window={window}&period={period}").json()
                    assert page["total_players"] == len(expected)
                    assert [(e["user_id"], e["score"]) for e in page["entries"]] == expected, key
                    assert [e["rank"] for e in page["entries"]] == list(range(1, len(expected) + 1))
    finally:
        for router in routers:
            router.stop()
