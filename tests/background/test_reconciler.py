"""Committed writes whose Redis part never happened are finished by the reconciler."""

from __future__ import annotations

from router.shards.state import encode
from tests.cluster import GAME_TOKEN, Cluster, commit_directly
from tests.invariants import MONTH, assert_exact, wait_outbox_empty

AUTH = {"X-Game-Service-Token": GAME_TOKEN}


def commit_like_a_router_that_then_died(cluster: Cluster, events: list[tuple[str, str, int]]) -> None:
    commit_directly(cluster, f"{MONTH}-01", events)


def test_orphaned_commits_reach_the_shards_within_the_bound(api, board):
    api.post("/v1/scores", json={"user_id": "mover", "match_id": "m0", "score": 50}, headers=AUTH)
    api.post("/v1/scores", json={"user_id": "stayer", "match_id": "m0", "score": 500}, headers=AUTH)
    wait_outbox_empty(board, timeout=5)
    # mover crosses 0 -> 1 -> 2 in PostgreSQL only; newcomer exists only in PostgreSQL.
    commit_like_a_router_that_then_died(board, [("mover", "m1", 100), ("mover", "m2", 900), ("newcomer", "m1", 5)])
    assert api.get("/v1/scores/newcomer").status_code == 404  # not on the shards yet
    # The group left one outbox row naming its players, not a row per player.
    assert board.sql("SELECT user_ids FROM redis_outbox") == [(["mover", "mover", "newcomer"],)]
    # Test routers reconcile every 0.2 s once a change is 0.5 s old: well inside 10 s.
    wait_outbox_empty(board, timeout=10)
    assert_exact(board, api, {"mover": 1050, "stayer": 500, "newcomer": 5})


def test_a_stale_copy_on_another_shard_is_removed(api, board):
    api.post("/v1/scores", json={"user_id": "ghost", "match_id": "m0", "score": 50}, headers=AUTH)
    wait_outbox_empty(board, timeout=5)
    # As if an add reached s1 but the removal from s0 never ran: committed in
    # PostgreSQL, on two shards in Redis.
    commit_like_a_router_that_then_died(board, [("ghost", "m1", 100)])
    (version, seq) = board.sql("SELECT version, seq FROM player_scores WHERE user_id='ghost'")[0]
    from router.shards.keys import member, state_key, tie_prefix, zset_key

    board.redis(1).zadd(zset_key(MONTH), {member(seq, "ghost"): 150})
    board.redis(1).hset(state_key(MONTH, "ghost"), "ghost", encode(version, tie_prefix(seq)))
    wait_outbox_empty(board, timeout=10)
    assert_exact(board, api, {"ghost": 150})


def test_routers_acknowledge_their_own_writes_without_the_reconciler(board):
    lone = board.router(extra_env={"LB_RECONCILE_INTERVAL_S": "3600"})
    try:
        with lone.client() as api:
            for i in range(30):
                api.post("/v1/scores", json={"user_id": f"n{i}", "match_id": "m", "score": i * 40}, headers=AUTH)
            wait_outbox_empty(board, timeout=5)
            assert_exact(board, api)
    finally:
        lone.stop()


def test_outbox_rows_of_archived_months_are_acknowledged_without_touching_the_shards(api, board):
    # Archived months are read from PostgreSQL's archive, and their Redis keys are
    # dropped after a while: the reconciler must not put players back there.
    board.sql(
        "INSERT INTO player_scores (board_period, user_id, score, version, seq, shard, epoch)"
        " VALUES ('global:monthly:2020-01', 'veteran', 500, 1, nextval('score_seq'), 's1', 1)"
    )
    board.sql("INSERT INTO period_archives (board_period, players) VALUES ('global:monthly:2020-01', 1)")
    board.sql("INSERT INTO redis_outbox (board_periods, user_ids) VALUES ('{global:monthly:2020-01}', '{veteran}')")
    wait_outbox_empty(board, timeout=10)
    for index in range(3):
        assert board.redis(index).keys("*2020-01*") == []
