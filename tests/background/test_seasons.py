"""Seasons: closing a period (the original board's months, other boards' days) into
PostgreSQL, reading it back, dropping its Redis keys."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from router.background.seasons import ArchiveRefused, archive_month, archive_period
from router.periods import board_period
from router.shards.keys import zset_key
from tests.cluster import ADMIN_TOKEN, Cluster, commit_directly, shard_map_for
from tests.invariants import wait_outbox_empty
from tests.load import AUTH


def months_ago(n: int) -> date:
    month = datetime.now(UTC).date().replace(day=1)
    for _ in range(n):
        month = (month - timedelta(days=1)).replace(day=1)
    return month


def history(cluster: Cluster, month: date, scores: dict[str, int]) -> None:
    """Events of a month that has since ended, committed by the same function routers call."""
    users = sorted(scores)
    moment = datetime(month.year, month.month, 15, tzinfo=UTC)
    commit_directly(cluster, month, [(u, "old", scores[u]) for u in users], occurred_at=moment)


def manager(cluster: Cluster, *args: str, shards_file=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LB_DATABASE_URL": cluster.dsn, "LB_SHARDS_FILE": str(shards_file or cluster.shards_file)}
    return subprocess.run([sys.executable, "-m", "shard_manager", *args], env=env, capture_output=True, text=True)


SCORES = {"ann": 1500, "ben": 150, "cat": 150, "dan": 15, "eve": 5000, "fay": 0}


def test_archive_snapshots_the_final_board_and_serves_it(api, board):
    old = months_ago(2)
    label = old.strftime("%Y-%m")
    history(board, old, SCORES)
    wait_outbox_empty(board, timeout=10)  # the reconciler put the old month on the shards
    assert sum(board.redis(i).zcard(zset_key(label)) for i in range(3)) == len(SCORES)
    # Not live and not archived: not served.
    assert api.get(f"/v1/leaderboard/top?month={label}").status_code == 404

    first = manager(board, "archive", "--month", label)
    assert first.returncode == 0, first.stderr
    assert f"{label}: archived, 6 players" in first.stdout
    again = manager(board, "archive", "--month", label)
    assert f"{label}: already archived, 6 players" in again.stdout

    top = api.get(f"/v1/leaderboard/top?month={label}&limit=10").json()
    assert top["total_players"] == 6
    # ben reached 150 before cat (same group, ben arrived first).
    assert [(e["rank"], e["user_id"], e["score"]) for e in top["entries"]] == [
        (1, "eve", 5000),
        (2, "ann", 1500),
        (3, "ben", 150),
        (4, "cat", 150),
        (5, "dan", 15),
        (6, "fay", 0),
    ]
    page = api.get(f"/v1/leaderboard/top?month={label}&limit=2&offset=2").json()["entries"]
    assert [e["user_id"] for e in page] == ["ben", "cat"]
    me = api.get(f"/v1/scores/cat?month={label}").json()
    assert (me["rank"], me["score"], me["total_players"], me["percentile"]) == (4, 150, 6, 50.0)
    around = api.get(f"/v1/scores/cat/around?month={label}&radius=1").json()["entries"]
    assert [e["user_id"] for e in around] == ["ben", "cat", "dan"]
    assert api.get(f"/v1/scores/nobody?month={label}").status_code == 404

    months = api.get("/v1/leaderboard/months").json()["months"]
    assert {"month": label, "status": "archived", "players": 6} in months
    assert [m["status"] for m in months[:2]] == ["live", "live"]

    # The operator's file already says something else (an edit not applied yet, here
    # without s2): the keys go from the shards of the layout in force, s2 included.
    edited = board.write_shard_map(shard_map_for(board.shards[:2], bounds=(0, 100)), board.workdir / "edited.yaml")
    dropped = manager(board, "archive", "--month", label, "--drop-redis", shards_file=edited)
    assert label in dropped.stdout
    assert sum(board.redis(i).exists(zset_key(label)) for i in range(3)) == 0
    assert api.get(f"/v1/leaderboard/top?month={label}").json()["total_players"] == 6


def test_events_for_an_archived_month_are_refused_even_by_a_late_router(board):
    old = months_ago(2)
    history(board, old, {"ann": 10})
    archive_month(board.dsn, old, datetime.now(UTC))
    late = commit_directly(board, old, [("ann", "late", 5)], occurred_at=datetime(old.year, old.month, 20, tzinfo=UTC))
    assert late[0][0] == "closed"
    assert board.sql("SELECT score FROM player_scores WHERE user_id='ann'") == [(10,)]


def test_api_refuses_events_for_old_months_with_409(api):
    occurred = datetime.combine(months_ago(2), datetime.min.time(), UTC).isoformat()
    body = {"user_id": "ann", "match_id": "x", "occurred_at": occurred}
    reply = api.post("/v1/scores", json=body, headers=AUTH)
    assert reply.status_code == 409
    assert months_ago(2).strftime("%Y-%m") in reply.json()["error"]["message"]


def test_live_months_cannot_be_archived(board):
    result = manager(board, "archive", "--month", months_ago(1).strftime("%Y-%m"))
    assert result.returncode == 2
    assert "still live" in result.stderr


def test_routers_rotate_in_the_background(board):
    old = months_ago(3)
    label = old.strftime("%Y-%m")
    history(board, old, SCORES)
    router = board.router(extra_env={"LB_ROTATION_INTERVAL_S": "0.3", "LB_ARCHIVE_REDIS_RETENTION_S": "0"})
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rows = board.sql(
                "SELECT players, redis_dropped_at FROM period_archives WHERE board_period = %s",
                (board_period("global", "monthly", old),),
            )
            if rows and rows[0][1] is not None:
                break
            time.sleep(0.1)
        assert rows and rows[0][0] == len(SCORES) and rows[0][1] is not None
        assert sum(board.redis(i).exists(zset_key(label)) for i in range(3)) == 0
        with router.client() as api:
            assert api.get(f"/v1/scores/eve?month={label}").json()["rank"] == 1
    finally:
        router.stop()


def test_a_closed_daily_period_of_an_asc_board_is_archived_as_the_board_shows_it(api, board):
    reply = api.put(
        "/v1/admin/boards/sprint",
        json={"order": "asc", "operator": "best", "windows": ["daily"]},
        headers={"X-Admin-Token": ADMIN_TOKEN},
    )
    assert reply.status_code == 200, reply.text
    moment = datetime.now(UTC) - timedelta(days=3)
    day = moment.date().isoformat()
    key = f"sprint:daily:{day}"
    # Events of a day that has since closed, through the function routers call.
    times = {"ann": 6100, "ben": 5900, "cat": 6100}
    for user, value in times.items():
        rows = board.sql(
            "SELECT status FROM lb_apply_events('{sprint}', %s, '{d1}', '{best}', %s, %s, '{1}', '{1}', %s)",
            ([user], [value], [moment], [key]),
        )
        assert rows == [("applied",)]
    result = archive_period(board.dsn, key, datetime.now(UTC))
    assert (result.created, result.players) == (True, 3)
    page = api.get(f"/v1/boards/sprint/top?period={day}").json()
    # Lowest time first; ann reached 6100 before cat.
    assert [(e["rank"], e["user_id"], e["score"]) for e in page["entries"]] == [
        (1, "ben", 5900),
        (2, "ann", 6100),
        (3, "cat", 6100),
    ]
    late = api.post(
        "/v1/boards/sprint/scores",
        json={"user_id": "dan", "match_id": "late", "score": 1, "occurred_at": moment.isoformat()},
        headers=AUTH,
    )
    assert late.status_code == 409 and late.json()["error"]["code"] == "period_closed", late.text
    with pytest.raises(ArchiveRefused, match="no board nope"):
        archive_period(board.dsn, f"nope:daily:{day}", datetime.now(UTC))


def test_archive_board_archives_every_period_of_it_that_no_longer_takes_events(api, board):
    reply = api.put("/v1/admin/boards/dash", json={"windows": ["daily"]}, headers={"X-Admin-Token": ADMIN_TOKEN})
    assert reply.status_code == 200, reply.text
    today = datetime.now(UTC)
    keys = {}
    for days in (3, 4, 0):  # two closed days, and today, which takes events
        moment = today - timedelta(days=days)
        keys[days] = f"dash:daily:{moment.date().isoformat()}"
        rows = board.sql(
            "SELECT status FROM lb_apply_events('{dash}', '{ann}', %s, '{incr}', '{5}', %s, '{1}', '{1}', %s)",
            ([f"d{days}"], [moment], [keys[days]]),
        )
        assert rows == [("applied",)]
    result = manager(board, "archive", "--board", "dash")
    assert result.returncode == 0, result.stderr
    archived = {key for (key,) in board.sql("SELECT board_period FROM period_archives")}
    assert archived == {keys[3], keys[4]}, result.stdout
    again = manager(board, "archive", "--board", "dash")
    assert again.returncode == 0 and "no period to archive" in again.stdout, again.stdout
