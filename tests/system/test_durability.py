"""PostgreSQL is the truth: verify finds drift, rebuild restores the shards, drills lose nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime

from router.shards.keys import member, state_key, zset_key
from shard_manager.rebuild import rebuild_month
from shard_manager.verify import verify_month
from tests.cluster import Cluster
from tests.invariants import MONTH, assert_exact, wait_outbox_empty
from tests.load import AUTH, Ledger, run_load, seed


def first_day() -> date:
    now = datetime.now(UTC)
    return date(now.year, now.month, 1)


def manager(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LB_DATABASE_URL": cluster.dsn, "LB_SHARDS_FILE": str(cluster.shards_file)}
    return subprocess.run(
        [sys.executable, "-m", "shard_manager", *args], env=env, capture_output=True, text=True, timeout=300
    )


def fill(api, n: int = 60) -> None:
    events = [{"user_id": f"f{i:02d}", "match_id": "m", "score": (i * 37) % 1500} for i in range(n)]
    events += [{"user_id": "tie-a", "match_id": "m", "score": 500}, {"user_id": "tie-b", "match_id": "m", "score": 500}]
    assert api.post("/v1/scores/batch", json={"events": events}, headers=AUTH).json()["applied"] == n + 2


def snapshot(api) -> tuple[list, dict]:
    top = api.get("/v1/leaderboard/top?limit=100").json()["entries"]
    players = {e["user_id"]: api.get(f"/v1/scores/{e['user_id']}").json() for e in top}
    return top, players


def test_verify_passes_on_a_healthy_board_and_names_each_kind_of_drift(api, board):
    fill(api)
    wait_outbox_empty(board, timeout=10)
    assert verify_month(board.dsn, board.shard_map, first_day()).ok
    ok = manager(board, "verify", "--month", MONTH)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok" in ok.stdout

    s0, s1 = board.redis(0), board.redis(1)
    lost = next(m for m in s0.zrange(zset_key(MONTH), 0, -1))
    s0.zrem(zset_key(MONTH), lost)  # a player vanished from its shard
    stray_user = next(m for m in s1.zrange(zset_key(MONTH), 0, 0))[12:]
    seq = board.sql("SELECT seq FROM player_scores WHERE user_id = %s", (stray_user,))[0][0]
    s0.zadd(zset_key(MONTH), {member(seq, stray_user): 5})  # a stale copy on another shard
    s1.zadd(zset_key(MONTH), {member(1, "intruder"): 500})  # a player PostgreSQL never had

    result = manager(board, "verify", "--month", MONTH, "--recheck-after", "0")
    assert result.returncode == 1
    assert "missing: 1" in result.stdout and lost[12:] in result.stdout
    assert "on_several_shards: 1" in result.stdout and stray_user in result.stdout
    assert "unknown_player: 1" in result.stdout


def test_all_redis_data_lost_then_rebuild_gives_the_same_answers(api, board):
    fill(api)
    wait_outbox_empty(board, timeout=10)
    before = snapshot(api)
    for i in range(3):
        board.redis(i).flushall()
    # The routers' self-healing races the rest of this test: a read now either finds the
    # shards empty or is refused (503) while a shard that lost its data is being refilled.
    top = api.get("/v1/leaderboard/top")
    assert (top.status_code == 200 and top.json()["total_players"] == 0) or (
        top.status_code == 503 and top.json()["error"]["code"] == "shard_unavailable"
    ), top.text

    result = manager(board, "rebuild", "--month", MONTH)
    assert result.returncode == 0, result.stderr
    assert "rebuilt" in result.stdout and "62 players" in result.stdout
    assert snapshot(api) == before  # ranks, scores and tie order included
    assert verify_month(board.dsn, board.shard_map, first_day()).ok


def test_rebuild_repairs_drift(api, board):
    fill(api)
    wait_outbox_empty(board, timeout=10)
    board.redis(2).zadd(zset_key(MONTH), {member(1, "intruder"): 5000})
    board.redis(0).hset(state_key(MONTH, "f01"), "f01", "99:000000000000")
    report = rebuild_month(board.dsn, board.shard_map, first_day())
    assert report.players == 62
    assert verify_month(board.dsn, board.shard_map, first_day()).ok
    assert_exact(board, api)


def test_rebuild_while_routers_write_loses_nothing(board, router):
    ledger = Ledger()
    seed(board, router.url, ledger)
    rebuilt: list = []

    def rebuild_midway() -> None:
        time.sleep(1.5)
        rebuilt.append(rebuild_month(board.dsn, board.shard_map, first_day()))

    worker = threading.Thread(target=rebuild_midway)
    worker.start()
    asyncio.run(run_load([router.url], 4.0, ledger))
    worker.join()
    assert rebuilt and rebuilt[0].caught_up > 0
    wait_outbox_empty(board, timeout=10)
    with router.client() as api:
        assert_exact(board, api, dict(ledger.acked))
    assert verify_month(board.dsn, board.shard_map, first_day()).ok


def test_drill_shard_killed_under_load_every_acknowledged_event_survives(board, router):
    ledger = Ledger()
    seed(board, router.url, ledger)
    time.sleep(1.2)  # the seed is in the AOF (appendfsync everysec)
    outage: list[float] = []

    async def kill_and_restore(stop_at: float) -> None:
        await asyncio.sleep(2)
        board.shards[1].kill()
        outage.append(time.monotonic())
        await asyncio.sleep(2)
        await asyncio.to_thread(board.shards[1].start)  # back with its AOF
        outage.append(time.monotonic())

    asyncio.run(run_load([router.url], 7.0, ledger, on_tick=kill_and_restore))
    assert len(outage) == 2
    assert ledger.retries > 0, "no write met the outage; the drill proved nothing"
    wait_outbox_empty(board, timeout=15)
    recorded = set(board.sql("SELECT user_id, match_id FROM score_events"))
    assert set(ledger.acked_matches) <= recorded
    with router.client() as api:
        assert_exact(board, api, dict(ledger.acked))
    assert verify_month(board.dsn, board.shard_map, first_day()).ok


def test_verify_fails_when_a_shard_is_unreachable(board):
    board.shards[2].stop()
    try:
        result = manager(board, "verify", "--month", MONTH, "--recheck-after", "0")
        assert result.returncode == 2
        assert "cannot verify" in result.stderr and "Traceback" not in result.stderr
    finally:
        board.shards[2].start()
