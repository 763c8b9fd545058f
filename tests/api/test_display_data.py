"""Display data (`metadata`) on entries, against a real router, real shards and real
PostgreSQL: written with scores, shown on every answer about players, carried when a
player moves between shards, through rebuilds, hiding and archives."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

from router.background.seasons import archive_period
from router.periods import board_period, month_label, month_start
from router.shards.keys import metadata_key
from tests.cluster import ADMIN_TOKEN, GAME_TOKEN, Cluster

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}
ALICE = {"name": "Alice", "country": "FR", "level": 12}


def post(api, user, match, score, board=None, **extra):
    body = {"user_id": user, "match_id": match, "score": score, **extra}
    path = f"/v1/boards/{board}/scores" if board else "/v1/scores"
    return api.post(path, json=body, headers=AUTH)


def entries(api, path, **query):
    answer = api.get(path, params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


def test_display_data_is_on_every_answer_about_the_player_and_the_last_write_wins(api, board):
    assert api.put("/v1/admin/boards/duel", json={"operator": "best"}, headers=ADMIN).status_code == 200
    assert post(api, "alice", "m1", 50, "duel", metadata=ALICE).status_code == 200
    assert post(api, "bob", "m1", 40, "duel").status_code == 200
    top = entries(api, "/v1/boards/duel/top")
    assert top == [
        {"rank": 1, "user_id": "alice", "score": 50, "metadata": ALICE},
        {"rank": 2, "user_id": "bob", "score": 40},  # none written: no key, as before display data existed
    ]
    assert api.get("/v1/boards/duel/scores/alice").json()["metadata"] == ALICE
    assert "metadata" not in api.get("/v1/boards/duel/scores/bob").json()
    assert entries(api, "/v1/boards/duel/scores/bob/around", radius=1)[0]["metadata"] == ALICE
    listed = api.post("/v1/boards/duel/ranks", json={"user_ids": ["bob", "alice", "nobody"]}).json()["entries"]
    assert [e.get("metadata") for e in listed] == [None, ALICE, None]

    # A worse score does not change the entry's score or tie-break, but its display data is newer.
    renamed = {"name": "Alice the Great"}
    assert post(api, "alice", "m2", 10, "duel", metadata=renamed).status_code == 200
    assert entries(api, "/v1/boards/duel/top")[0] == {"rank": 1, "user_id": "alice", "score": 50, "metadata": renamed}
    # A write without it keeps what the entry has.
    assert post(api, "alice", "m3", 60, "duel").status_code == 200
    assert entries(api, "/v1/boards/duel/top")[0] == {"rank": 1, "user_id": "alice", "score": 60, "metadata": renamed}
    checked = manager(board, "verify", "--board", "duel", "--recheck-after", "0.2")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_display_data_that_is_too_large_or_not_an_object_is_refused_and_nothing_is_written(api, board):
    for bad in ({"name": "x" * 250}, ["Alice"], "Alice", 7):
        answer = post(api, "carol", "m1", 5, metadata=bad)
        assert answer.status_code == 422 and answer.json()["error"]["field"] == "metadata", (bad, answer.text)
    batch = api.post(
        "/v1/scores/batch",
        json={"events": [{"user_id": "carol", "match_id": "m1", "metadata": {"name": "y" * 300}}]},
        headers=AUTH,
    ).json()["results"][0]
    assert batch["status"] == "refused" and batch["field"] == "metadata", batch
    assert board.sql("SELECT count(*) FROM score_events") == [(0,)]
    assert board.sql("SELECT count(*) FROM player_scores") == [(0,)]
    # Exactly 256 bytes as compact JSON is allowed; non-ASCII counts in UTF-8 bytes.
    fits = {"n": "é" * 124}  # {"n":"…"} = 8 bytes + 248
    assert post(api, "carol", "m1", 5, metadata=fits).status_code == 200
    assert post(api, "dave", "m1", 5, metadata={"n": "é" * 125}).status_code == 422


def test_display_data_moves_with_the_player_and_survives_a_rebuild_hiding_and_the_archive(api, board):
    # The original board follows the shard map's ranges: [0, 100) s0, [100, 1000) s1, [1000, ...) s2.
    assert post(api, "alice", "m1", 50, metadata=ALICE).status_code == 200
    assert post(api, "alice", "m2", 2000).status_code == 200  # s0 -> s2
    month = month_label(datetime.now(UTC))
    assert board.sql("SELECT shard, metadata FROM player_scores WHERE user_id = 'alice'") == [
        ("s2", '{"name":"Alice","country":"FR","level":12}')
    ]
    assert entries(api, "/v1/leaderboard/top")[0]["metadata"] == ALICE
    assert api.get("/v1/scores/alice").json()["metadata"] == ALICE
    assert all(board.redis(i).hget(f"lb:{month}:m", "alice") is None for i in (0, 1))
    rebuilt = manager(board, "rebuild", "--month", month)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert api.get("/v1/scores/alice").json()["metadata"] == ALICE
    hide = {"reason": "check"}
    assert api.post("/v1/admin/boards/global/players/alice/hide", json=hide, headers=ADMIN).status_code == 200
    assert api.get("/v1/scores/alice").status_code == 404
    assert api.post("/v1/admin/boards/global/players/alice/unhide", json=hide, headers=ADMIN).status_code == 200
    assert api.get("/v1/scores/alice").json()["metadata"] == ALICE


def test_an_archived_period_keeps_the_display_data_of_its_entries(api, board):
    assert api.put("/v1/admin/boards/cup", json={"windows": ["monthly"]}, headers=ADMIN).status_code == 200
    board.sql(
        "INSERT INTO player_scores (board_period, user_id, score, version, seq, shard, epoch, metadata)"
        " VALUES ('cup:monthly:2026-01', 'alice', 9, 1, nextval('score_seq'), 's0', 1, %s)",
        ('{"name":"Alice"}',),
    )
    archive_period(board.dsn, "cup:monthly:2026-01", datetime.now(UTC))
    assert entries(api, "/v1/boards/cup/top", period="2026-01") == [
        {"rank": 1, "user_id": "alice", "score": 9, "metadata": {"name": "Alice"}}
    ]
    assert api.get("/v1/boards/cup/scores/alice", params={"period": "2026-01"}).json()["metadata"] == {"name": "Alice"}


def test_a_kept_top_page_is_not_served_once_display_data_changed(api, board):
    assert post(api, "alice", "m1", 50, metadata={"name": "A"}).status_code == 200
    assert entries(api, "/v1/leaderboard/top")[0]["metadata"] == {"name": "A"}
    assert entries(api, "/v1/leaderboard/top")[0]["metadata"] == {"name": "A"}  # now kept
    assert post(api, "alice", "m2", 0, metadata={"name": "B"}).status_code == 200  # same score
    assert entries(api, "/v1/leaderboard/top")[0]["metadata"] == {"name": "B"}


def commands_during(cluster: Cluster, action) -> list[list[str]]:
    """The commands clients sent each shard while `action` ran, as MONITOR shows them
    (name and arguments), leaving out those scripts ran."""
    sockets = []
    for server in cluster.shards:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"MONITOR\r\n")
        assert sock.recv(5) == b"+OK\r\n"
        sockets.append(sock)
    action()
    time.sleep(0.2)
    seen = []
    for sock in sockets:
        data = b""
        sock.settimeout(0.3)
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        sock.close()
        lines = data.decode(errors="replace").splitlines()
        seen.append([line.split('"', 1)[1] for line in lines if '"' in line and " lua]" not in line])
    return seen


def test_pages_with_display_data_cost_the_shards_no_command_more(api, board):
    events = [
        {"user_id": f"p{i}", "match_id": "m", "score": i * 11, "metadata": {"name": f"Player {i}"}} for i in range(100)
    ]
    assert api.post("/v1/scores/batch", json={"events": events}, headers=AUTH).status_code == 200
    pages = []
    # Two different pages (a kept one would read nothing but the counts), over all three shards.
    sent = commands_during(
        board, lambda: pages.extend(entries(api, "/v1/leaderboard/top", limit=100, offset=o) for o in (0, 1))
    )
    assert pages[0][0]["metadata"] == {"name": "Player 99"} and pages[1][-1]["metadata"] == {"name": "Player 0"}
    # Counts and generations, then the stretches: script calls, which read the display data
    # themselves; no command of its own names the display data or reads the board. (Besides
    # them: a first SCRIPT LOAD per connection, and self-healing's look at each shard.)
    shown_key = f'"{metadata_key(board_period("global", "monthly", month_start(datetime.now(UTC))))}"'
    for commands in sent:
        assert any(c.startswith('EVALSHA"') for c in commands), sent
        own = [c for c in commands if not c.startswith('EVALSHA"')]
        assert not [c for c in own if shown_key in c or c.split('"')[0] in ("ZREVRANGE", "ZRANGE", "HMGET")], sent


def manager(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LB_DATABASE_URL": cluster.dsn, "LB_SHARDS_FILE": str(cluster.shards_file)}
    return subprocess.run(
        [sys.executable, "-m", "shard_manager", *args], env=env, capture_output=True, text=True, timeout=120
    )
