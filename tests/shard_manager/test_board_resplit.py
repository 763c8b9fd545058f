"""Score ranges per board, re-split online: `shard-manager apply --board` moves one
board's players to the ranges its entry in the shard map file names, while games keep
writing to it and to other boards; the other boards' players stay where they are."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest
import yaml

from router.boards import Board
from router.shardmap import shard_map_from_dict
from router.shards.keys import zset_key
from router.store.boards import load_boards
from router.store.layout import read_layout
from shard_manager.rebalance import Rebalancer, RebalanceRefused
from tests.cluster import ADMIN_TOKEN, GAME_TOKEN, Cluster, running_cluster
from tests.invariants import wait_outbox_empty

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
RACE = Board("race", "asc", "set", ("all", "daily"))  # set: times go up and down
# Lap times: the fastest (lowest) on the last shard of the layout, as an asc board must.
RACE_BEFORE = [
    {"shard": "s2", "min_score": 0, "max_score": 200},
    {"shard": "s1", "min_score": 200, "max_score": 1000},
    {"shard": "s0", "min_score": 1000, "max_score": None},
]
STILL = (50, 150, 700, 1200)  # lap times: stays on s2, s2 -> s1, s1 -> s0, stays on s0
RACE_AFTER = [
    {"shard": "s2", "min_score": 0, "max_score": 100},
    {"shard": "s1", "min_score": 100, "max_score": 400},
    {"shard": "s0", "min_score": 400, "max_score": None},
]


@pytest.fixture(scope="module")
def ranges_cluster() -> Iterator[Cluster]:
    """A cluster of its own (with a spare server): these tests change splits and the layout."""
    with running_cluster("lb-board-ranges-", redis_servers=4) as cluster:
        yield cluster


def manager(cluster: Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "LB_DATABASE_URL": cluster.dsn, "LB_SHARDS_FILE": str(cluster.shards_file)}
    return subprocess.run(
        [sys.executable, "-m", "shard_manager", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def file_with_boards(cluster: Cluster, name: str, boards: list[dict]) -> Path:
    """The cluster's shard map file with a `boards:` section, as an operator edits it."""
    raw = yaml.safe_load(cluster.shards_file.read_text())
    raw["boards"] = boards
    path = cluster.workdir / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def race_entry(ranges: list[dict]) -> dict:
    return {"id": "race", "order": "asc", "operator": "set", "windows": ["all", "daily"], "ranges": ranges}


def create(api: httpx.Client, board: str, **config) -> dict:
    answer = api.put(f"/v1/admin/boards/{board}", json=config, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _writer(urls: list[str], client_id: int, until: float, acked: list) -> None:
    rng = random.Random(client_id)
    async with httpx.AsyncClient(timeout=10) as client:
        n = 0
        while time.monotonic() < until:
            n += 1
            if rng.random() < 0.7:
                # race: lap times all over 0..1500, so players cross every boundary, old and new
                path, body = "/v1/boards/race/scores", {"score": rng.randint(0, 1500)}
                user, board = f"r{rng.randrange(60)}", "race"
            else:
                path, body = "/v1/scores", {"score": rng.choice([1, 40, 300])}
                user, board = f"g{rng.randrange(30)}", "global"
            body |= {"user_id": user, "match_id": f"w{client_id}-{n}"}
            for _ in range(20):  # an unknown outcome: resend the same match_id, as clients must
                try:
                    reply = await client.post(f"{rng.choice(urls)}{path}", json=body, headers=AUTH)
                except httpx.TransportError:
                    continue
                if reply.status_code < 500:
                    break
            assert reply.status_code == 200, reply.text
            acked.append((board, user, body["match_id"]))


def _shards_of(cluster: Cluster, like: str) -> dict[str, tuple[str, int]]:
    rows = cluster.sql("SELECT user_id, shard, version FROM player_scores WHERE board_period LIKE %s", (like,))
    return {user: (shard, version) for user, shard, version in rows}


def test_one_board_is_re_split_online_under_load_and_the_others_stay_put(ranges_cluster: Cluster):
    cluster = ranges_cluster
    cluster.reset()
    routers = [cluster.router(extra_env={"LB_LAYOUT_POLL_S": "0.2"}) for _ in range(2)]
    try:
        with routers[0].client() as api:
            assert (
                create(api, "race", order="asc", operator="set", windows=["all", "daily"], ranges=RACE_BEFORE)["ranges"]
                == RACE_BEFORE
            )
            # A bystander board on one shard, which no move may touch.
            create(api, "quiet", windows=["all"], ranges=[{"shard": "s1", "min_score": 0, "max_score": None}])
            spread = [{"user_id": f"r{i}", "match_id": "seed", "score": i * 25} for i in range(60)]
            # Players nobody writes to again: the move alone decides where they end up.
            spread += [{"user_id": f"still{t}", "match_id": "seed", "score": t} for t in STILL]
            batch = api.post("/v1/boards/race/scores/batch", json={"events": spread}, headers=AUTH)
            assert batch.status_code == 200, batch.text
            quiet = [{"user_id": f"q{i}", "match_id": "seed", "score": i * 40} for i in range(30)]
            assert api.post("/v1/boards/quiet/scores/batch", json={"events": quiet}, headers=AUTH).status_code == 200
        wait_outbox_empty(cluster, timeout=15)
        quiet_before = _shards_of(cluster, "quiet:%")
        path = file_with_boards(cluster, "race.yaml", [race_entry(RACE_AFTER)])

        plan = manager(cluster, "plan", str(path), "--board", "race")
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.count("move scores") == 2 and "Nothing was changed" in plan.stdout, plan.stdout

        acked: list = []
        until = time.monotonic() + 7

        async def load_and_apply() -> subprocess.CompletedProcess:
            async def apply_midway() -> subprocess.CompletedProcess:
                await asyncio.sleep(1.5)
                args = ("apply", str(path), "--board", "race", "--step-players", "5")
                return await asyncio.to_thread(manager, cluster, *args)

            writers = [_writer([r.url for r in routers], i, until, acked) for i in range(10)]
            *_, applied = await asyncio.gather(*writers, apply_midway())
            return applied

        applied = asyncio.run(load_and_apply())
        assert applied.returncode == 0, applied.stderr
        assert len(acked) > 300, f"too little load to mean anything: {len(acked)}"
        wait_outbox_empty(cluster, timeout=15)

        layout = read_layout(cluster.dsn)
        assert layout is not None and layout.move is None and layout.target is None
        conn = psycopg2.connect(cluster.dsn)
        try:
            boards = load_boards(conn)[1]
        finally:
            conn.close()
        assert boards["race"].ranges(layout.placement(boards["race"])) == [
            (r["shard"], r["min_score"], r["max_score"]) for r in RACE_AFTER
        ]
        assert boards["global"].split is None  # the original board follows the layout's split
        # Every race player is where its new ranges say; a time in [100, 200) moved from s2
        # to s1 and one in [400, 1000) from s1 to s0 (both kinds exist after the load).
        expected_shard = {"s2": range(0, 100), "s1": range(100, 400), "s0": range(400, 2000)}
        rows = cluster.sql("SELECT user_id, score, shard FROM player_scores WHERE board_period = 'race:all:all'")
        for user, stored, shard in rows:
            assert RACE.shown(stored) in expected_shard[shard], (user, RACE.shown(stored), shard)
        # The players nobody wrote to: those in a range that changed shard were moved once
        # (version 2, on the new shard), the others not at all.
        still = cluster.sql(
            "SELECT user_id, shard, version FROM player_scores WHERE board_period = 'race:all:all'"
            " AND user_id LIKE 'still%%' ORDER BY 1"
        )
        assert still == sorted(
            [("still50", "s2", 1), ("still150", "s1", 2), ("still700", "s0", 2), ("still1200", "s0", 1)]
        ), still
        # Nobody of the bystander board was moved (a move bumps the version).
        assert _shards_of(cluster, "quiet:%") == quiet_before
        recorded = set(cluster.sql("SELECT board, user_id, match_id FROM score_events"))
        assert set(acked) <= recorded, "an acknowledged event is missing from PostgreSQL"

        # Exact standings through both routers, and the shards hold what PostgreSQL does.
        verify = manager(cluster, "verify", "--recheck-after", "0")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "race:all:all" in verify.stdout and "quiet:all:all" in verify.stdout
        for key in ("race:all:all", "quiet:all:all"):
            board, window, period = key.split(":")
            # Stored scores: higher is better on every board.
            rows = cluster.sql(
                "SELECT user_id FROM player_scores WHERE board_period = %s ORDER BY score DESC, seq", (key,)
            )
            expected = [user for (user,) in rows]
            for router in routers:
                with router.client() as api:
                    page = api.get(f"/v1/boards/{board}/top", params={"limit": 100, "window": window}).json()
                    assert [e["user_id"] for e in page["entries"]] == expected, key
                    assert [e["rank"] for e in page["entries"]] == list(range(1, len(expected) + 1))
                    me = api.get(f"/v1/boards/{board}/scores/{expected[-1]}", params={"window": window}).json()
                    assert me["rank"] == len(expected) == me["total_players"]

        status = manager(cluster, "status", "--board", "race")
        assert status.returncode == 0, status.stderr
        assert "[0, 100)" in status.stdout and "[400, inf)" in status.stdout, status.stdout
        again = manager(cluster, "plan", str(path), "--board", "race")
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    finally:
        for router in routers:
            router.stop()


def test_a_shard_a_board_is_on_leaves_the_layout_only_after_the_board_moves_off(ranges_cluster: Cluster):
    cluster = ranges_cluster
    cluster.reset()
    spare = cluster.shards[3]
    before = read_layout(cluster.dsn)
    assert before is not None
    entries = [
        {"id": s.id, "address": s.address, "min_score": s.range.start, "max_score": s.range.end}
        for s in before.shard_map.shards
    ]
    # The spare server joins the top of the layout (its own range far above every score).
    top = {**entries[-1], "max_score": 10**15}
    spare_entry = {"id": "s3", "address": spare.url, "min_score": 10**15, "max_score": None}
    with_spare = shard_map_from_dict({"epoch": 1, "shards": [*entries[:-1], top, spare_entry]})
    without_spare = shard_map_from_dict({"epoch": 1, "shards": entries})
    rebalancer = Rebalancer(cluster.dsn, settle_s=0.5)
    router = cluster.router(extra_env={"LB_LAYOUT_POLL_S": "0.2"})
    try:
        if "s3" not in before.shard_map.ids:
            rebalancer.apply(with_spare)
        time.sleep(1)  # the router follows the layout
        with router.client() as api:
            create(api, "small", windows=["all"], ranges=[{"shard": "s3", "min_score": 0, "max_score": None}])
            events = [{"user_id": f"p{i}", "match_id": "m", "score": i} for i in range(20)]
            assert api.post("/v1/boards/small/scores/batch", json={"events": events}, headers=AUTH).status_code == 200
        wait_outbox_empty(cluster, timeout=15)
        assert cluster.redis(3).zcard(zset_key("small:all:all")) == 20

        with pytest.raises(RebalanceRefused, match="board small still has a range on s3"):
            rebalancer.apply(without_spare)
        assert read_layout(cluster.dsn).shard_map.ids == with_spare.ids  # nothing changed

        layout = read_layout(cluster.dsn)
        onto_s2 = layout.shard_map.over_split((("s2", 0),))
        rebalancer.apply(onto_s2, board="small")
        rebalancer.apply(without_spare)
        layout = read_layout(cluster.dsn)
        assert "s3" not in layout.shard_map.ids
        wait_outbox_empty(cluster, timeout=15)
        assert {shard for shard, _ in _shards_of(cluster, "small:%").values()} == {"s2"}
        assert cluster.redis(2).zcard(zset_key("small:all:all")) == 20
        assert cluster.redis(3).zcard(zset_key("small:all:all")) == 0
        time.sleep(1)
        with router.client() as api:
            page = api.get("/v1/boards/small/top", params={"limit": 50}).json()
        assert [e["user_id"] for e in page["entries"]] == [f"p{i}" for i in range(19, -1, -1)]
    finally:
        router.stop()
        rebalancer.close()


def test_apply_board_creates_a_board_the_file_names_on_its_ranges(ranges_cluster: Cluster):
    cluster = ranges_cluster
    cluster.reset()
    ranges = [{"shard": "s0", "min_score": 0, "max_score": 500}, {"shard": "s1", "min_score": 500, "max_score": None}]
    path = file_with_boards(cluster, "fresh.yaml", [{"id": "fresh", "windows": ["all"], "ranges": ranges}])
    plan = manager(cluster, "plan", str(path), "--board", "fresh")
    assert plan.returncode == 0 and "does not exist yet" in plan.stdout, plan.stdout + plan.stderr
    assert cluster.sql("SELECT count(*) FROM boards WHERE id = 'fresh'") == [(0,)]  # a dry run
    applied = manager(cluster, "apply", str(path), "--board", "fresh")
    assert applied.returncode == 0 and "created board fresh" in applied.stdout, applied.stdout + applied.stderr
    router = cluster.router()
    try:
        with router.client() as api:
            assert api.get("/v1/boards/fresh").json()["ranges"] == ranges
    finally:
        router.stop()
