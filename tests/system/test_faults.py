"""Faults on real processes: a shard killed, PostgreSQL stopped. Nothing acknowledged is lost."""

from __future__ import annotations

import time

from tests.cluster import GAME_TOKEN
from tests.invariants import assert_exact, wait_outbox_empty

AUTH = {"X-Game-Service-Token": GAME_TOKEN}


def post(api, user, match, score):
    return api.post("/v1/scores", json={"user_id": user, "match_id": match, "score": score}, headers=AUTH)


def test_shard_down_refuses_writes_that_need_it_and_recovers(api, board):
    assert post(api, "low", "m0", 10).status_code == 200
    assert post(api, "top", "m0", 5000).status_code == 200
    time.sleep(1.5)  # past appendfsync everysec, so the AOF holds these
    board.shards[2].kill()
    try:
        # Needs s2 (its new shard): recorded in PostgreSQL, answered 503 naming the shard.
        reply = post(api, "low", "m1", 2000)
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "shard_unavailable"
        assert "s2" in reply.json()["error"]["message"]
        # Needs only s0: applied; its rank cannot be counted without s2.
        other = post(api, "calm", "m0", 20)
        assert other.status_code == 200
        assert other.json()["score"] == 20 and other.json()["rank"] is None
        # Reads need every shard's count.
        assert api.get("/v1/scores/calm").status_code == 503
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["shard:s2"].startswith("down")
    finally:
        board.shards[2].start()  # same port and AOF: comes back with its data
    wait_outbox_empty(board, timeout=15)
    assert post(api, "low", "m1", 2000).json()["duplicate"] is True
    assert_exact(board, api, {"low": 2010, "top": 5000, "calm": 20})
    assert api.get("/readyz").status_code == 200


def test_postgres_down_refuses_writes_and_keeps_reads(api, board):
    assert post(api, "alice", "m0", 150).status_code == 200
    assert post(api, "bob", "m0", 50).status_code == 200
    board.postgres.stop()
    try:
        # The first write may meet a pooled connection the shutdown broke: the router
        # cannot tell whether a statement on it ran, and says to resend.
        reply = post(api, "alice", "m1", 1000)
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "store_unavailable"
        assert (
            "resend the same match_id" in reply.json()["error"]["message"]
            or "nothing was recorded" in (reply.json()["error"]["message"])
        )
        # Once no connection is left, none can be opened: certainly nothing recorded.
        for _ in range(20):
            reply = post(api, "alice", "m1", 1000)
            if "nothing was recorded" in reply.json()["error"]["message"]:
                break
        assert reply.status_code == 503 and "nothing was recorded" in reply.json()["error"]["message"]
        batch = api.post("/v1/scores/batch", json={"events": [{"user_id": "x", "match_id": "m"}]}, headers=AUTH)
        assert batch.status_code == 503
        assert api.get("/v1/scores/alice").json()["rank"] == 1
        assert [e["user_id"] for e in api.get("/v1/leaderboard/top").json()["entries"]] == ["alice", "bob"]
        assert api.get("/readyz").json()["checks"]["postgres"].startswith("down")
    finally:
        board.postgres.start()
    # Nothing from the outage was recorded, and writes work again.
    assert board.sql("SELECT count(*) FROM score_events") == [(2,)]
    for _ in range(50):
        reply = post(api, "alice", "m1", 1000)
        if reply.status_code == 200:
            break
        time.sleep(0.1)
    assert reply.status_code == 200 and reply.json()["duplicate"] is False
    wait_outbox_empty(board, timeout=10)
    assert_exact(board, api, {"alice": 1150, "bob": 50})


def test_reads_and_writes_work_at_once_after_a_shard_restart(api, board):
    assert post(api, "ann", "m0", 5000).status_code == 200
    assert api.get("/v1/scores/ann").status_code == 200  # the router now holds pooled connections to s2
    time.sleep(1.2)
    board.shards[2].stop()
    board.shards[2].start()  # same port and AOF; the router's pooled connections are now dead
    assert api.get("/v1/scores/ann").json()["rank"] == 1
    assert post(api, "ann", "m1", 1).status_code == 200
