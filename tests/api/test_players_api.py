"""Admin actions on players through the API, against a real router, real shards and real
PostgreSQL: hide and unhide, remove an entry, erase, the audit, and who may call them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg2
import pytest

from router.background.seasons import archive_period
from router.core.rate_limits import player_counter_field
from router.periods import period_label, period_start
from router.store.players import user_hash
from tests.cluster import ADMIN_TOKEN, GAME_TOKEN, Cluster

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
WHY = {"reason": "aimbot reported in match 1234"}


def create(api, board, **config):
    answer = api.put(f"/v1/admin/boards/{board}", json=config, headers=ADMIN)
    assert answer.status_code == 200, answer.text


def post(api, board, user, match, score):
    return api.post(
        f"/v1/boards/{board}/scores", json={"user_id": user, "match_id": match, "score": score}, headers=AUTH
    )


def standings(api, board, **query):
    answer = api.get(f"/v1/boards/{board}/top", params={"limit": 100, **query})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    return page["total_players"], [(e["rank"], e["user_id"], e["score"]) for e in page["entries"]]


def wait_cleaned(cluster: Cluster, timeout: float = 15) -> None:
    """The reconciler's second pass over every admin action has run."""
    give_up = time.monotonic() + timeout
    while (
        cluster.sql("SELECT count(*) FROM redis_cleanup")[0][0]
        or cluster.sql("SELECT count(*) FROM redis_outbox")[0][0]
    ):
        assert time.monotonic() < give_up, "admin actions' shard work not done"
        time.sleep(0.1)


def verified(cluster: Cluster, board_period: str) -> None:
    """`shard-manager verify` finds the period's shards exact (each board by its own placement)."""
    checked = manager(cluster, "verify", "--period", board_period, "--recheck-after", "0.2")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def three_players(api, board="arena"):
    create(api, board, operator="incr", windows=["all"])
    for user, score in (("ace", 30), ("cheat", 50), ("dee", 10)):
        assert post(api, board, user, "m1", score).status_code == 200


def test_a_hidden_player_leaves_every_answer_of_the_board_and_unhide_brings_them_back(api, board):
    three_players(api)
    create(api, "other", operator="incr", windows=["all"])
    assert post(api, "other", "cheat", "m1", 5).status_code == 200
    hidden = api.post("/v1/admin/boards/arena/players/cheat/hide", json=WHY, headers=ADMIN)
    assert hidden.status_code == 200, hidden.text
    assert hidden.json()["changed"] is True and hidden.json()["detail"]["periods"] == ["arena:all:all"]

    assert standings(api, "arena") == (2, [(1, "ace", 30), (2, "dee", 10)])  # the others close up
    assert api.get("/v1/boards/arena/scores/cheat").status_code == 404
    assert api.get("/v1/boards/arena/scores/dee").json()["rank"] == 2
    listed = api.post("/v1/boards/arena/ranks", json={"user_ids": ["cheat", "dee"]}).json()["entries"]
    assert [(e["user_id"], e["rank"], e["list_rank"]) for e in listed] == [("cheat", None, None), ("dee", 2, 1)]
    around = api.get("/v1/boards/arena/scores/dee/around", params={"radius": 5}).json()["entries"]
    assert [e["user_id"] for e in around] == ["ace", "dee"]

    events_before = board.sql("SELECT count(*) FROM score_events WHERE user_id = 'cheat'")[0][0]
    refused = post(api, "arena", "cheat", "m2", 1000)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "player_hidden", refused.text
    assert board.sql("SELECT count(*) FROM score_events WHERE user_id = 'cheat'")[0][0] == events_before
    assert standings(api, "other") == (1, [(1, "cheat", 5)])  # only that board
    assert post(api, "other", "cheat", "m2", 1).status_code == 200

    again = api.post("/v1/admin/boards/arena/players/cheat/hide", json=WHY, headers=ADMIN)
    assert again.status_code == 200 and again.json()["changed"] is False

    shown = api.post("/v1/admin/boards/arena/players/cheat/unhide", json={"reason": "appeal won"}, headers=ADMIN)
    assert shown.status_code == 200 and shown.json()["changed"] is True, shown.text
    assert standings(api, "arena") == (3, [(1, "cheat", 50), (2, "ace", 30), (3, "dee", 10)])
    assert post(api, "arena", "cheat", "m2", 1).json()["windows"]["all"]["score"] == 51
    wait_cleaned(board)
    verified(board, "arena:all:all")

    audit = api.get("/v1/admin/audit", headers=ADMIN).json()["entries"]
    assert [(e["action"], e["board"], e["subject"], e["who"]) for e in audit] == [
        ("unhide", "arena", "cheat", "admin"),
        ("hide", "arena", "cheat", "admin"),
    ]
    assert audit[1]["reason"] == WHY["reason"]


def test_a_hidden_player_stays_hidden_after_a_rebuild_and_verify_agrees(api, board):
    three_players(api)
    assert api.post("/v1/admin/boards/arena/players/cheat/hide", json=WHY, headers=ADMIN).status_code == 200
    wait_cleaned(board)
    verified(board, "arena:all:all")
    # A rebuild re-materialises the shards from PostgreSQL alone: hiding is kept there.
    rebuilt = manager(board, "rebuild", "--period", "arena:all:all")
    assert rebuilt.returncode == 0 and "2 players" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    assert standings(api, "arena") == (2, [(1, "ace", 30), (2, "dee", 10)])
    verified(board, "arena:all:all")


def test_hidden_on_every_board_includes_boards_made_later(api, board):
    three_players(api)
    everywhere = api.post("/v1/admin/players/cheat/hide", json=WHY, headers=ADMIN)
    assert everywhere.status_code == 200 and everywhere.json()["board"] is None
    create(api, "newer", operator="incr", windows=["all"])
    assert post(api, "newer", "cheat", "n1", 7).status_code == 403
    assert standings(api, "arena")[0] == 2
    one = api.post("/v1/admin/boards/arena/players/cheat/unhide", json=WHY, headers=ADMIN)
    assert one.status_code == 409 and one.json()["error"]["code"] == "hidden_on_every_board"
    assert api.post("/v1/admin/players/cheat/unhide", json=WHY, headers=ADMIN).status_code == 200
    assert standings(api, "arena") == (3, [(1, "cheat", 50), (2, "ace", 30), (3, "dee", 10)])
    assert post(api, "newer", "cheat", "n1", 7).status_code == 200


def test_removing_an_entry_drops_its_score_and_events_and_the_player_may_start_again(api, board):
    create(api, "arena", operator="incr", windows=["daily", "all"])
    for user, score in (("ace", 30), ("cheat", 50), ("dee", 10)):
        assert post(api, "arena", user, "m1", score).status_code == 200
    today = period_label("daily", period_start("daily", datetime.now(UTC)))
    gone = api.delete(
        "/v1/admin/boards/arena/players/cheat",
        params={"window": "all", "reason": "score from a known exploit"},
        headers=ADMIN,
    )
    assert gone.status_code == 200, gone.text
    assert gone.json()["detail"] == {"period": "arena:all:all", "events": 1, "archived": False}
    assert standings(api, "arena", window="all") == (2, [(1, "ace", 30), (2, "dee", 10)])
    assert standings(api, "arena", window="daily")[0] == 3  # the daily entry is another entry
    # The event keeps the period it still stands for, and its match_id: a resend of the
    # removed result is a duplicate, never counted again.
    assert board.sql("SELECT board_periods, scores_after FROM score_events WHERE user_id = 'cheat'") == [
        ([f"arena:daily:{today}", None], [50, None])
    ]
    resent = post(api, "arena", "cheat", "m1", 50).json()
    assert resent["duplicate"] is True and resent["windows"]["all"]["score"] is None
    assert standings(api, "arena", window="all")[0] == 2
    # Scoring again starts from nothing there, and the shards show it (its version is
    # newer than the removal's tombstone).
    again = post(api, "arena", "cheat", "m2", 5).json()["windows"]
    assert again["all"]["score"] == 5 and again["daily"]["score"] == 55
    assert standings(api, "arena", window="all") == (3, [(1, "ace", 30), (2, "dee", 10), (3, "cheat", 5)])
    wait_cleaned(board)
    assert standings(api, "arena", window="all")[0] == 3
    verified(board, "arena:all:all")


def test_removing_an_entry_from_an_archived_period_closes_up_its_ranks(api, board):
    create(api, "season", operator="incr", windows=["monthly"])
    with psycopg2.connect(board.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT nextval('score_seq') FROM generate_series(1, 3)")
        seqs = [row[0] for row in cur.fetchall()]
        for (user, score), seq in zip((("ace", 30), ("cheat", 50), ("dee", 10)), seqs, strict=True):
            cur.execute(
                "INSERT INTO player_scores (board_period, user_id, score, version, seq, shard, epoch)"
                " VALUES ('season:monthly:2026-01', %s, %s, 1, %s, 's0', 1)",
                (user, score, seq),
            )
    archive_period(board.dsn, "season:monthly:2026-01", datetime.now(UTC))
    gone = api.delete(
        "/v1/admin/boards/season/players/cheat", params={"period": "2026-01", "reason": "exploit"}, headers=ADMIN
    )
    assert gone.status_code == 200 and gone.json()["detail"]["archived"] is True, gone.text
    assert standings(api, "season", period="2026-01") == (2, [(1, "ace", 30), (2, "dee", 10)])
    assert api.get("/v1/boards/season/scores/dee", params={"period": "2026-01"}).json()["rank"] == 2
    assert board.sql("SELECT players FROM period_archives WHERE board_period = 'season:monthly:2026-01'") == [(2,)]


def all_traces(cluster: Cluster, needle: str) -> list[str]:
    """Every row of every table, and every key, member, field and value of every shard,
    that contains `needle`."""
    found = []
    tables = cluster.sql(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    )
    for (table,) in tables:
        count = cluster.sql(f"SELECT count(*) FROM {table} t WHERE t::text LIKE %s", (f"%{needle}%",))[0][0]  # noqa: S608
        if count:
            found.append(f"{table}: {count} row(s)")
    for i in range(len(cluster.shards)):
        client = cluster.redis(i)
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if needle in key:
                found.append(f"shard {i} key {key}")
            elif kind == "zset" and any(needle in m for m in client.zrange(key, 0, -1)):
                found.append(f"shard {i} member of {key}")
            elif kind == "hash" and any(needle in f or needle in v for f, v in client.hgetall(key).items()):
                found.append(f"shard {i} field of {key}")
            elif kind == "string" and needle in (client.get(key) or ""):
                found.append(f"shard {i} value of {key}")
    return found


def test_erasing_a_player_leaves_no_trace_but_the_erasure_record(api, board):
    create(api, "arena", operator="incr", windows=["daily", "all"])
    create(api, "duel", operator="best", windows=["all"])
    user = "erase-me-7"
    for b in ("arena", "duel"):
        for other, score in (("ace", 30), ("dee", 10)):
            assert post(api, b, other, "m1", score).status_code == 200
        assert post(api, b, user, "m1", 20).status_code == 200
    assert api.post("/v1/scores", json={"user_id": user, "match_id": "g1", "score": 3}, headers=AUTH).status_code == 200
    assert api.post(f"/v1/admin/boards/duel/players/{user}/hide", json=WHY, headers=ADMIN).status_code == 200
    assert api.post(f"/v1/admin/boards/duel/players/{user}/unhide", json=WHY, headers=ADMIN).status_code == 200
    # A move between shards leaves tombstones behind, which name the player too.
    assert post(api, "arena", user, "m2", 5000).status_code == 200
    counter = player_counter_field(user)  # the rate limiter counts by a hash of the id

    def counted() -> bool:
        limits = board.redis(0)
        return any(limits.hexists(key, counter) for key in limits.scan_iter("rl:p:*"))

    assert counted()

    erased = api.delete(f"/v1/admin/players/{user}", params={"reason": "GDPR request 77"}, headers=ADMIN)
    assert erased.status_code == 200, erased.text
    assert erased.json()["user_id"] == user_hash(user)
    wait_cleaned(board)
    assert all_traces(board, user) == [] and not counted()

    for b in ("arena", "duel"):
        assert api.get(f"/v1/boards/{b}/scores/{user}").status_code == 404
        assert standings(api, b)[1] == [(1, "ace", 30), (2, "dee", 10)]
    assert api.get(f"/v1/scores/{user}").status_code == 404
    refused = post(api, "arena", user, "m3", 1)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "player_erased"
    assert board.sql("SELECT user_hash FROM erased_players") == [(user_hash(user),)]
    audit = api.get("/v1/admin/audit", params={"user_id": user}, headers=ADMIN).json()["entries"]
    assert [e["action"] for e in audit] == ["erase", "unhide", "hide"]
    assert {e["subject"] for e in audit} == {user_hash(user)}
    for key in ("arena:all:all", "duel:all:all"):
        verified(board, key)


def test_erasing_under_concurrent_writes_for_the_same_player_leaves_nothing_behind(api, board, router):
    import threading

    create(api, "arena", operator="incr", windows=["daily", "all"])
    user = "busy-erasee"
    stop = threading.Event()
    answers: list[int] = []

    def writer(n: int) -> None:
        with router.client() as client:
            for k in range(400):
                if stop.is_set():
                    return
                body = {"user_id": user, "match_id": f"w{n}-{k}", "score": 1 + (k * 997) % 3000}
                answers.append(client.post("/v1/boards/arena/scores", json=body, headers=AUTH).status_code)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    erased = api.delete(f"/v1/admin/players/{user}", params={"reason": "account deleted"}, headers=ADMIN)
    assert erased.status_code == 200, erased.text
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert 200 in answers and 403 in answers, sorted(set(answers))
    assert set(answers) <= {200, 403}
    wait_cleaned(board)
    assert all_traces(board, user) == []
    today = period_label("daily", period_start("daily", datetime.now(UTC)))
    for key in ("arena:all:all", f"arena:daily:{today}"):
        verified(board, key)


def test_bad_admin_requests_change_nothing_and_a_game_token_cannot_act(api, board):
    three_players(api)
    for method, path, kwargs in (
        ("post", "/v1/admin/boards/arena/players/cheat/hide", {"json": WHY}),
        ("post", "/v1/admin/players/cheat/hide", {"json": WHY}),
        ("delete", "/v1/admin/boards/arena/players/cheat", {"params": WHY}),
        ("delete", "/v1/admin/players/cheat", {"params": WHY}),
        ("get", "/v1/admin/audit", {}),
    ):
        for headers in ({}, AUTH, {"X-Admin-Token": GAME_TOKEN}):
            answer = getattr(api, method)(path, headers=headers, **kwargs)
            assert answer.status_code == 401, (path, headers, answer.text)
    no_reason = api.post("/v1/admin/boards/arena/players/cheat/hide", json={}, headers=ADMIN)
    assert no_reason.status_code == 422 and no_reason.json()["error"]["field"] == "reason"
    empty = api.delete("/v1/admin/players/cheat", params={"reason": ""}, headers=ADMIN)
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "reason"
    # PostgreSQL text cannot hold NUL: refused up front, in the query and in a body alike.
    nul = api.delete("/v1/admin/players/cheat", params={"reason": "a\x00b"}, headers=ADMIN)
    assert nul.status_code == 422 and nul.json()["error"]["field"] == "reason", nul.text
    nul_body = api.post("/v1/admin/players/cheat/hide", json={"reason": "a\u0000b"}, headers=ADMIN)
    assert nul_body.status_code == 422 and nul_body.json()["error"]["field"] == "reason", nul_body.text
    unknown = api.post("/v1/admin/boards/nowhere/players/cheat/hide", json=WHY, headers=ADMIN)
    assert unknown.status_code == 404
    assert standings(api, "arena")[0] == 3
    assert board.sql("SELECT count(*) FROM admin_audit")[0][0] == 0


@pytest.fixture
def named_admins(board: Cluster):
    proc = board.router(extra_env={"LB_ADMIN_TOKENS": "alice=alice-admin-token,bob=bob-admin-token"})
    yield proc
    proc.stop()


def test_the_audit_names_the_admin_token_that_acted(api, named_admins):
    three_players(api)
    with named_admins.client() as client:
        alice = {"X-Admin-Token": "alice-admin-token"}
        bob = {"X-Admin-Token": "bob-admin-token"}
        assert client.post("/v1/admin/boards/arena/players/cheat/hide", json=WHY, headers=alice).status_code == 200
        assert client.post("/v1/admin/boards/arena/players/cheat/unhide", json=WHY, headers=bob).status_code == 200
        assert client.post("/v1/admin/players/dee/hide", json=WHY, headers=ADMIN).status_code == 200
        page = client.get("/v1/admin/audit", params={"limit": 2}, headers=bob).json()
    assert [(e["who"], e["action"]) for e in page["entries"]] == [("admin", "hide"), ("bob", "unhide")]
    assert page["next_before"] == page["entries"][-1]["id"]
    older = api.get("/v1/admin/audit", params={"before": page["next_before"]}, headers=ADMIN).json()
    assert [(e["who"], e["action"]) for e in older["entries"]] == [("alice", "hide")]
    assert older["next_before"] is None


def manager(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LB_DATABASE_URL": cluster.dsn, "LB_SHARDS_FILE": str(cluster.shards_file)}
    return subprocess.run(
        [sys.executable, "-m", "shard_manager", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_shard_manager_verbs_do_what_the_api_does(api, board):
    three_players(api)
    hidden = manager(board, "hide", "cheat", "--board", "arena", "--reason", "aimbot", "--who", "ops-oncall")
    assert hidden.returncode == 0 and "done, on the shards too" in hidden.stdout, hidden.stdout + hidden.stderr
    assert standings(api, "arena") == (2, [(1, "ace", 30), (2, "dee", 10)])
    shown = manager(board, "unhide", "cheat", "--board", "arena", "--reason", "appeal")
    assert shown.returncode == 0 and "done, on the shards too" in shown.stdout, shown.stdout + shown.stderr
    assert standings(api, "arena")[1][0] == (1, "cheat", 50)
    removed = manager(board, "remove", "dee", "--period", "arena:all:all", "--reason", "exploit")
    assert removed.returncode == 0, removed.stderr
    erased = manager(board, "erase", "ace", "--reason", "request 9")
    assert erased.returncode == 0, erased.stderr
    assert standings(api, "arena") == (1, [(1, "cheat", 50)])
    refused = manager(board, "hide", "cheat", "--board", "nowhere", "--reason", "x")
    assert refused.returncode == 2 and "no board" in refused.stderr
    audit = manager(board, "audit", "--board", "arena")
    assert audit.returncode == 0
    lines = audit.stdout.splitlines()
    assert [line.split()[4] for line in lines] == ["remove", "unhide", "hide"], audit.stdout
    assert "ops-oncall" in lines[-1]
    assert board.sql("SELECT count(*) FROM player_scores WHERE user_id IN ('ace', 'dee')") == [(0,)]
    assert board.sql("SELECT user_hash FROM erased_players") == [(user_hash("ace"),)]


def test_an_admin_can_see_everything_held_about_a_player(api, board):
    three_players(api)
    create(api, "duel", operator="best", windows=["all"])
    body = {"user_id": "cheat", "match_id": "d1", "score": 7, "metadata": {"name": "C"}}
    assert api.post("/v1/boards/duel/scores", json=body, headers=AUTH).status_code == 200
    assert api.post("/v1/admin/boards/arena/players/cheat/hide", json=WHY, headers=ADMIN).status_code == 200
    record = api.get("/v1/admin/players/cheat", headers=ADMIN)
    assert record.status_code == 200, record.text
    assert record.json() == {
        "user_id": "cheat",
        "erased": False,
        "hidden_on": ["arena"],
        "entries": [
            {
                "board": "arena",
                "window": "all",
                "period": "all",
                "score": 50,
                "hidden": True,
                "archived_rank": None,
                "metadata": None,
            },
            {
                "board": "duel",
                "window": "all",
                "period": "all",
                "score": 7,
                "hidden": False,
                "archived_rank": None,
                "metadata": {"name": "C"},
            },
        ],
    }
    assert api.get("/v1/admin/players/cheat", headers=AUTH).status_code == 401
    assert api.delete("/v1/admin/players/cheat", params=WHY, headers=ADMIN).status_code == 200
    assert api.get("/v1/admin/players/cheat", headers=ADMIN).json() == {
        "user_id": "cheat",
        "erased": True,
        "hidden_on": [],
        "entries": [],
    }


def test_an_erasure_while_a_shard_is_down_is_recorded_and_finished_when_it_is_back(api, board):
    user = "down-erasee"
    for match, score in (("m1", 50), ("m2", 450)):  # s0, then s1: a tombstone stays on s0
        body = {"user_id": user, "match_id": match, "score": score}
        assert api.post("/v1/scores", json=body, headers=AUTH).status_code == 200
    wait_cleaned(board)
    board.shards[1].kill()
    try:
        erased = api.delete(f"/v1/admin/players/{user}", params={"reason": "request"}, headers=ADMIN)
        assert erased.status_code == 503 and erased.json()["error"]["code"] == "shard_unavailable", erased.text
        # The answer is about the action, not a score: it is recorded, and not to be repeated.
        message = erased.json()["error"]["message"]
        assert "action is recorded" in message and "match_id" not in message, message
        # PostgreSQL's part is done: the id is refused at once.
        refused = api.post("/v1/scores", json={"user_id": user, "match_id": "m3", "score": 1}, headers=AUTH)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "player_erased"
        assert board.sql("SELECT count(*) FROM redis_cleanup") == [(1,)]
    finally:
        board.shards[1].start()
    wait_cleaned(board, timeout=30)
    assert all_traces(board, user) == []
    assert api.get(f"/v1/scores/{user}").status_code == 404
