"""Players' states live in small hashes (buckets) that Redis keeps packed, never in one
big hash per month; a board in the old one-hash layout is refused, and a rebuild
turns it into buckets."""

from __future__ import annotations

from datetime import date

import pytest

from router.shards.keys import legacy_state_key, state_key, state_keys, tie_prefix, zset_key
from router.shards.state import encode
from shard_manager.rebuild import rebuild_month
from shard_manager.verify import verify_month
from tests.cluster import GAME_TOKEN
from tests.invariants import MONTH, assert_exact, wait_outbox_empty

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
PACKED = {"ziplist", "listpack"}  # Redis 6 and Redis 7 names of the compact encoding


def _post_batch(api, events: list[dict]) -> None:
    reply = api.post("/v1/scores/batch", json={"events": events}, headers=AUTH)
    assert reply.status_code == 200, reply.text


def _buckets_in_use(board) -> dict[int, list[str]]:
    return {i: [key for key in state_keys(MONTH) if board.redis(i).exists(key)] for i in range(3)}


def test_states_and_tombstones_land_in_packed_buckets(api, board):
    players = [f"b{i}" for i in range(400)]
    _post_batch(api, [{"user_id": user, "match_id": "m1", "score": 50} for user in players])
    # Half of them climb to the next shard: a state there, a tombstone left on s0.
    _post_batch(api, [{"user_id": user, "match_id": "m2", "score": 100} for user in players[:200]])
    wait_outbox_empty(board, timeout=5)

    for user in players[:200]:
        assert board.redis(1).hget(state_key(MONTH, user), user).count(":") == 1  # on s1
        assert ":" not in board.redis(0).hget(state_key(MONTH, user), user)  # tombstone on s0
    for user in players[200:]:
        assert board.redis(0).hget(state_key(MONTH, user), user).count(":") == 1
    in_use = _buckets_in_use(board)
    assert len(in_use[0]) > 100 and len(in_use[1]) > 50  # spread, not piled into a few
    for i, keys in in_use.items():
        assert {board.redis(i).object("encoding", key) for key in keys} <= PACKED
        assert not board.redis(i).exists(legacy_state_key(MONTH))
    # Each hash holds only the players the bucket function sends to it.
    for key in in_use[0]:
        assert all(state_key(MONTH, user) == key for user in board.redis(0).hkeys(key))
    assert_exact(board, api)


def test_rebuild_turns_a_board_in_the_old_layout_into_buckets(api, board):
    _post_batch(api, [{"user_id": f"r{i}", "match_id": "m1", "score": i * 5} for i in range(300)])
    wait_outbox_empty(board, timeout=5)
    # As a router before the buckets left it: every state in one hash per month. And a
    # bucket entry for nobody PostgreSQL knows, which the rebuild must not keep.
    (version, seq) = board.sql("SELECT version, seq FROM player_scores WHERE user_id = 'r1'")[0]
    board.redis(0).hset(legacy_state_key(MONTH), "r1", encode(version, tie_prefix(seq)))
    board.redis(0).hset(state_key(MONTH, "nobody"), "nobody", "7")

    month = date.fromisoformat(f"{MONTH}-01")
    before = verify_month(board.dsn, board.shard_map, month, recheck_after_s=0)
    assert before.problems["old_layout"] == 1 and f"rebuild --month {MONTH}" in before.render()

    report = rebuild_month(board.dsn, board.shard_map, month)

    assert report.players == 300
    assert not board.redis(0).exists(legacy_state_key(MONTH))
    assert board.redis(0).hget(state_key(MONTH, "nobody"), "nobody") is None
    assert all(len(board.redis(i).keys(f"{zset_key(MONTH)}*")) == 1 for i in range(3))  # no side keys left
    assert all(not board.redis(i).keys("*:rebuild") for i in range(3))
    assert verify_month(board.dsn, board.shard_map, month, recheck_after_s=0).ok
    assert_exact(board, api)


def test_a_router_refuses_to_start_on_a_board_in_the_old_layout(board):
    board.redis(2).hset(legacy_state_key(MONTH), "old", "3:ffffffffff00")
    with pytest.raises(RuntimeError) as refused:
        board.router().stop()
    assert f"rebuild --month {MONTH}" in str(refused.value)
    assert legacy_state_key(MONTH) in str(refused.value)

    rebuild_month(board.dsn, board.shard_map, date.fromisoformat(f"{MONTH}-01"))
    board.router().stop()  # starts now
