"""Many boards through the API, against a real router, real shards and real PostgreSQL:
order, operators, windows, closing, and the original endpoints beside them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from router.background.seasons import archive_period
from router.boards import MAX_SCORE
from router.periods import period_label, period_start
from router.shards.keys import user_of, zset_key
from router.store.boards import first_shard
from tests.cluster import ADMIN_TOKEN, GAME_TOKEN

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
ADMIN = {"X-Admin-Token": ADMIN_TOKEN}


def create(api, board, **config):
    answer = api.put(f"/v1/admin/boards/{board}", json=config, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()


def post(api, board, user, match, score, **extra):
    body = {"user_id": user, "match_id": match, "score": score, **extra}
    return api.post(f"/v1/boards/{board}/scores", json=body, headers=AUTH)


def top(api, board, **query):
    answer = api.get(f"/v1/boards/{board}/top", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_asc_board_ranks_the_lowest_first_and_best_keeps_the_lowest(api):
    create(api, "race", order="asc", operator="best", windows=["all"])
    assert post(api, "race", "ann", "r1", 6100).json()["windows"]["all"]["rank"] == 1
    assert post(api, "race", "ben", "r1", 5900).json()["windows"]["all"]["rank"] == 1
    slower = post(api, "race", "ann", "r2", 7000).json()["windows"]["all"]
    assert (slower["score"], slower["rank"]) == (6100, 2)  # a slower lap does not replace the best one
    faster = post(api, "race", "ann", "r3", 5000).json()["windows"]["all"]
    assert (faster["score"], faster["rank"], faster["previous_rank"]) == (5000, 1, 2)
    page = top(api, "race")
    assert [(e["rank"], e["user_id"], e["score"]) for e in page["entries"]] == [(1, "ann", 5000), (2, "ben", 5900)]
    me = api.get("/v1/boards/race/scores/ben").json()
    assert (me["score"], me["rank"], me["total_players"], me["period"]) == (5900, 2, 2, "all")


def test_ties_go_to_whoever_reached_the_score_first_in_both_orders(api):
    create(api, "strokes", order="asc", operator="set", windows=["all"])
    create(api, "kills", order="desc", operator="set", windows=["all"])
    for board in ("strokes", "kills"):
        for user in ("first", "second", "third"):
            assert post(api, board, user, "m1", 70).status_code == 200
        assert [e["user_id"] for e in top(api, board)["entries"]] == ["first", "second", "third"]


def test_one_event_updates_every_window_of_its_board_once(api):
    create(api, "arena", windows=["daily", "weekly", "all"])
    now = datetime.now(UTC)
    answer = post(api, "arena", "cy", "a1", 3).json()
    assert answer["board"] == "arena" and answer["duplicate"] is False
    assert {w: (v["period"], v["score"], v["rank"]) for w, v in answer["windows"].items()} == {
        "daily": (period_label("daily", period_start("daily", now)), 3, 1),
        "weekly": (period_label("weekly", period_start("weekly", now)), 3, 1),
        "all": ("all", 3, 1),
    }
    again = post(api, "arena", "cy", "a1", 3).json()
    assert again["duplicate"] is True and again["windows"]["all"]["score"] == 3
    assert post(api, "arena", "cy", "a2", 4).json()["windows"]["weekly"]["score"] == 7
    for window in ("daily", "weekly", "all"):
        page = top(api, "arena", window=window)
        assert page["window"] == window and page["entries"] == [{"rank": 1, "user_id": "cy", "score": 7}]
    assert top(api, "arena")["window"] == "daily"  # the first window is the default
    # Yesterday's daily period is still live; the weekly and all-time ones are shared.
    yesterday = now - timedelta(days=1)
    late = post(api, "arena", "cy", "a3", 10, occurred_at=yesterday.isoformat()).json()["windows"]
    assert late["daily"]["period"] == period_label("daily", period_start("daily", yesterday))
    assert late["daily"]["score"] == 10 and late["all"]["score"] == 17
    assert top(api, "arena", window="daily")["entries"][0]["score"] == 7
    day = period_label("daily", period_start("daily", yesterday))
    assert top(api, "arena", window="daily", period=day)["entries"][0]["score"] == 10


def test_an_event_for_a_closed_period_is_refused_naming_it(api):
    create(api, "dailies", windows=["daily"])
    old = datetime.now(UTC) - timedelta(days=3)
    answer = post(api, "dailies", "dee", "d1", 1, occurred_at=old.isoformat())
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "period_closed"
    assert period_label("daily", period_start("daily", old)) in answer.json()["error"]["message"]


def test_a_score_that_would_leave_the_range_changes_nothing_in_any_window(api, board):
    create(api, "capped", windows=["all", "monthly"])
    assert post(api, "capped", "eve", "c1", MAX_SCORE).status_code == 200
    refused = post(api, "capped", "eve", "c2", 1)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "score"
    for window in ("all", "monthly"):
        assert top(api, "capped", window=window)["entries"][0]["score"] == MAX_SCORE
    assert board.sql("SELECT count(*) FROM score_events WHERE board = 'capped'") == [(1,)]


def test_boards_are_listed_and_unknown_ones_are_404(api):
    create(api, "listed", order="asc", operator="best", windows=["weekly"])
    post(api, "listed", "fay", "l1", 9)
    boards = {b["id"]: b for b in api.get("/v1/boards").json()["boards"]}
    assert boards["listed"] == {
        "id": "listed",
        "order": "asc",
        "operator": "best",
        "windows": ["weekly"],
        "status": "open",
        "players": {"weekly": 1},
        # Created without ranges: on one shard, picked by the board's id.
        "ranges": [{"shard": first_shard("listed", ("s0", "s1", "s2")), "min_score": 0, "max_score": None}],
    }
    assert boards["global"]["windows"] == ["monthly"]
    for path in ("/v1/boards/nope", "/v1/boards/nope/top", "/v1/boards/nope/scores/fay"):
        missing = api.get(path)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "board_not_found", path
    assert post(api, "nope", "fay", "x", 1).status_code == 404


def test_bad_board_config_is_422_naming_the_field_and_changes_nothing(api):
    for body, field in (
        ({"order": "sideways"}, "order"),
        ({"operator": "max"}, "operator"),
        ({"windows": []}, "windows"),
        ({"windows": ["hourly"]}, "windows.0"),
    ):
        answer = api.put("/v1/admin/boards/bad", json=body, headers=ADMIN)
        assert answer.status_code == 422 and answer.json()["error"]["field"] == field, (body, answer.text)
    assert api.put("/v1/admin/boards/Bad!", json={}, headers=ADMIN).status_code == 422
    assert api.get("/v1/boards/bad").status_code == 404
    assert api.put("/v1/admin/boards/bad", json={}, headers=AUTH).status_code == 401


def test_order_and_windows_cannot_change_once_a_board_has_scores(api):
    create(api, "fixed", windows=["all"])
    create(api, "fixed", order="asc", windows=["daily"])  # no scores yet: allowed
    post(api, "fixed", "gus", "f1", 5)
    for change, field in (
        ({"order": "desc", "windows": ["daily"]}, "order"),
        ({"order": "asc", "windows": ["all"]}, "windows"),
    ):
        answer = api.put("/v1/admin/boards/fixed", json=change, headers=ADMIN)
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == {
            "code": "board_conflict",
            "field": field,
            "message": answer.json()["error"]["message"],
        }
    assert create(api, "fixed", order="asc", operator="best", windows=["daily"])["operator"] == "best"


def test_a_deleted_board_is_closed_archived_and_still_readable(api):
    create(api, "event", windows=["all"])
    post(api, "event", "hal", "e1", 4)
    post(api, "event", "ida", "e1", 9)
    closed = api.delete("/v1/admin/boards/event", headers=ADMIN)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    refused = post(api, "event", "hal", "e2", 1)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "board_closed"
    assert [(e["user_id"], e["score"]) for e in top(api, "event", period="all")["entries"]] == [("ida", 9), ("hal", 4)]
    assert api.get("/v1/boards/event").json()["status"] == "closed"


def test_a_batch_fans_one_match_out_to_several_boards(api):
    create(api, "mode_a", windows=["all"])
    create(api, "mode_b", order="asc", operator="best", windows=["all", "daily"])
    events = [
        {"board": "mode_a", "user_id": "jo", "match_id": "x1", "score": 2},
        {"board": "mode_b", "user_id": "jo", "match_id": "x1", "score": 41},
        {"user_id": "jo", "match_id": "x1", "score": 1},
        {"board": "nope", "user_id": "jo", "match_id": "x1", "score": 1},
    ]
    answer = api.post("/v1/scores/batch", json={"events": events}, headers=AUTH).json()
    results = answer["results"]
    assert answer["applied"] == 3 and answer["refused"] == 1
    assert results[0]["board"] == "mode_a" and results[0]["windows"]["all"]["score"] == 2
    assert results[1]["windows"]["daily"]["score"] == 41 and results[1]["score"] == 41
    assert "board" not in results[2] and results[2]["score"] == 1  # the original board, the original shape
    assert results[3]["status"] == "refused" and results[3]["field"] == "board"
    assert api.get("/v1/scores/jo").json()["score"] == 1


def test_boards_listed_in_the_shard_map_file_are_created_when_a_router_starts(board, api, tmp_path):
    create(api, "tuned", order="desc", operator="incr", windows=["all"])
    seeded = tmp_path / "shards.yaml"
    seeded.write_text(
        board.shards_file.read_text()
        + "boards:\n"
        + "  - {id: sprint, order: asc, operator: best, windows: [weekly, all]}\n"
        + "  - {id: tuned, order: asc, windows: [daily]}\n"
    )
    second = board.router(shards_file=seeded)
    try:
        with second.client() as client:
            boards = {b["id"]: b for b in client.get("/v1/boards").json()["boards"]}
    finally:
        second.stop()
    assert (boards["sprint"]["order"], boards["sprint"]["operator"], boards["sprint"]["windows"]) == (
        "asc",
        "best",
        ["weekly", "all"],
    )
    # A board PostgreSQL already has is left as the admin API made it: the file only seeds.
    assert (boards["tuned"]["order"], boards["tuned"]["windows"]) == ("desc", ["all"])


def test_a_board_created_through_one_router_is_usable_through_another_at_once(board, api):
    other = board.router(extra_env={"LB_LAYOUT_POLL_S": "60"})  # no poll would find it in time
    try:
        with other.client() as client:
            assert client.get("/v1/boards/fresh").status_code == 404
            for n in range(20):
                create(api, f"fresh{n}", windows=["all"])
                written = client.post(
                    f"/v1/boards/fresh{n}/scores", json={"user_id": "kim", "match_id": "f1", "score": n}, headers=AUTH
                )
                assert written.status_code == 200, written.text
                assert client.get(f"/v1/boards/fresh{n}/scores/kim").json()["score"] == n
    finally:
        other.stop()


def _placed(cluster, board: str) -> dict[str, str]:
    """Where PostgreSQL places each player of the board, checked against the shards."""
    placed = dict(cluster.sql("SELECT user_id, shard FROM player_scores WHERE board_period LIKE %s", (f"{board}:%",)))
    key = zset_key(f"{board}:all:all")
    on_shards = {f"s{i}": {user_of(m) for m in cluster.redis(i).zrange(key, 0, -1)} for i in range(3)}
    for user, shard in placed.items():
        assert [s for s, users in on_shards.items() if user in users] == [shard], (user, shard, on_shards)
    return placed


def test_a_board_is_split_by_its_own_ranges_and_ranks_add_up_across_them(api, board):
    ranges = [
        {"shard": "s0", "min_score": 0, "max_score": 10},
        {"shard": "s1", "min_score": 10, "max_score": 20},
        {"shard": "s2", "min_score": 20, "max_score": None},
    ]
    assert create(api, "wins", windows=["all"], ranges=ranges)["ranges"] == ranges
    for user, score in (("low", 5), ("mid", 15), ("high", 25), ("also_low", 7)):
        assert post(api, "wins", user, "w1", score).status_code == 200
    assert _placed(board, "wins") == {"low": "s0", "also_low": "s0", "mid": "s1", "high": "s2"}
    page = top(api, "wins")
    assert [(e["rank"], e["user_id"]) for e in page["entries"]] == [
        (1, "high"),
        (2, "mid"),
        (3, "also_low"),
        (4, "low"),
    ]
    assert api.get("/v1/boards/wins/scores/also_low").json()["rank"] == 3
    # Crossing the board's boundary 20 (the original board's would be 100) moves the player.
    assert post(api, "wins", "mid", "w2", 11).json()["windows"]["all"]["rank"] == 1
    assert _placed(board, "wins")["mid"] == "s2"


def test_an_asc_boards_ranges_are_written_in_its_own_scores_fastest_on_the_last_shard(api, board):
    ranges = [
        {"shard": "s2", "min_score": 0, "max_score": 60},
        {"shard": "s1", "min_score": 60, "max_score": 120},
        {"shard": "s0", "min_score": 120, "max_score": None},
    ]
    assert create(api, "laps", order="asc", operator="best", windows=["all"], ranges=ranges)["ranges"] == ranges
    for user, time in (("slow", 200), ("fast", 50), ("fair", 90)):
        assert post(api, "laps", user, "l1", time).status_code == 200
    assert _placed(board, "laps") == {"fast": "s2", "fair": "s1", "slow": "s0"}
    assert [e["user_id"] for e in top(api, "laps")["entries"]] == ["fast", "fair", "slow"]
    assert api.get("/v1/boards/laps/scores/slow").json()["rank"] == 3


def test_a_board_without_ranges_lives_on_one_shard_whatever_its_scores(api, board):
    create(api, "event", windows=["all"])
    home = first_shard("event", ("s0", "s1", "s2"))
    for user, score in (("a", 1), ("b", 500), ("c", 50_000)):
        assert post(api, "event", user, "e1", score).status_code == 200
    assert set(_placed(board, "event").values()) == {home}
    assert [e["user_id"] for e in top(api, "event")["entries"]] == ["c", "b", "a"]


def test_bad_ranges_are_422_naming_the_entry_and_a_board_with_scores_keeps_its_ranges(api, board):
    good = [{"shard": "s0", "min_score": 0, "max_score": 10}, {"shard": "s1", "min_score": 10, "max_score": None}]
    for ranges, field in (
        (
            [{"shard": "s0", "min_score": 0, "max_score": 10}, {"shard": "s1", "min_score": 11, "max_score": None}],
            "ranges[1].min_score",
        ),
        ([{"shard": "s0", "min_score": 0, "max_score": 10}], "ranges[0].max_score"),
        ([{"shard": "s9", "min_score": 0, "max_score": None}], "ranges"),
        # desc: higher scores must be on later shards of the layout
        (
            [{"shard": "s1", "min_score": 0, "max_score": 10}, {"shard": "s0", "min_score": 10, "max_score": None}],
            "ranges",
        ),
        (
            [{"shard": "s0", "min_score": 0, "max_score": 10}, {"shard": "s0", "min_score": 10, "max_score": None}],
            "ranges[1].shard",
        ),
    ):
        answer = api.put("/v1/admin/boards/split", json={"windows": ["all"], "ranges": ranges}, headers=ADMIN)
        assert answer.status_code == 422, (ranges, answer.text)
        assert answer.json()["error"]["field"] == field, (ranges, answer.text)
    assert api.get("/v1/boards/split").status_code == 404  # nothing was created
    create(api, "split", windows=["all"], ranges=good)
    # No scores yet: the ranges may change at once.
    moved = [{"shard": "s1", "min_score": 0, "max_score": 30}, {"shard": "s2", "min_score": 30, "max_score": None}]
    assert create(api, "split", windows=["all"], ranges=moved)["ranges"] == moved
    post(api, "split", "p", "m1", 40)
    refused = api.put("/v1/admin/boards/split", json={"windows": ["all"], "ranges": good}, headers=ADMIN)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "board_conflict", refused.text
    assert "apply --board split" in refused.json()["error"]["message"]
    # The operator may still change, and the ranges stay as they were.
    assert create(api, "split", operator="best", windows=["all"])["ranges"] == moved
    assert _placed(board, "split") == {"p": "s2"}


def ranks(api, board, user_ids, **extra):
    return api.post(f"/v1/boards/{board}/ranks", json={"user_ids": user_ids, **extra}, headers=AUTH)


def test_a_list_of_players_is_ranked_as_the_whole_board_ranks_them(api, board):
    ranges = [
        {"shard": "s0", "min_score": 0, "max_score": 10},
        {"shard": "s1", "min_score": 10, "max_score": 20},
        {"shard": "s2", "min_score": 20, "max_score": None},
    ]
    create(api, "friends", windows=["all"], ranges=ranges)
    scores = {"a": 5, "b": 15, "c": 25, "d": 15, "e": 3, "f": 30}  # b reaches 15 before d
    for user, score in scores.items():
        assert post(api, "friends", user, "m1", score).status_code == 200
    asked = ["d", "nobody", "e", "b", "d", "f"]
    answer = ranks(api, "friends", asked)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["board"], body["window"], body["period"], body["total_players"]) == ("friends", "all", "all", 6)
    whole = {e["user_id"]: e["rank"] for e in top(api, "friends", limit=10)["entries"]}
    assert [(e["user_id"], e["rank"], e["score"], e["list_rank"]) for e in body["entries"]] == [
        ("d", whole["d"], 15, 3),
        ("nobody", None, None, None),
        ("e", whole["e"], 3, 4),
        ("b", whole["b"], 15, 2),
        ("f", whole["f"], 30, 1),
    ]
    assert whole["b"] < whole["d"]  # the tie goes to who reached 15 first


def test_list_ranks_of_an_asc_board_and_of_an_archived_period(api, board):
    create(api, "laps", order="asc", operator="best", windows=["daily"])
    for user, time in (("slow", 70), ("fast", 50), ("mid", 60)):
        assert post(api, "laps", user, "l1", time).status_code == 200
    live = ranks(api, "laps", ["slow", "fast"]).json()["entries"]
    assert [(e["user_id"], e["rank"], e["score"], e["list_rank"]) for e in live] == [
        ("slow", 3, 70, 2),
        ("fast", 1, 50, 1),
    ]
    # A day that has closed and been archived: ranks come from the archive.
    moment = datetime.now(UTC) - timedelta(days=3)
    key = f"laps:daily:{moment.date().isoformat()}"
    for user, time in (("ann", 61), ("ben", 59)):
        rows = board.sql(
            "SELECT status FROM lb_apply_events('{laps}', %s, '{old}', '{best}', %s, %s, '{1}', '{1}', %s)",
            ([user], [time], [moment], [key]),
        )
        assert rows == [("applied",)]
    archive_period(board.dsn, key, datetime.now(UTC))
    old = ranks(api, "laps", ["ann", "ben", "zed"], period=moment.date().isoformat()).json()
    assert old["total_players"] == 2
    assert [(e["user_id"], e["rank"], e["score"], e["list_rank"]) for e in old["entries"]] == [
        ("ann", 2, 61, 2),
        ("ben", 1, 59, 1),
        ("zed", None, None, None),
    ]


def test_a_bad_list_is_422_naming_the_field(api, board):
    create(api, "listed2", windows=["all"])
    for body, field in (
        ({"user_ids": []}, "user_ids"),
        ({"user_ids": [f"p{i}" for i in range(101)]}, "user_ids"),
        ({"user_ids": ["bad id!"]}, "user_ids"),
        ({"user_ids": ["a"], "window": "daily"}, "window"),
        ({"user_ids": ["a"], "period": "someday"}, "period"),
    ):
        answer = api.post("/v1/boards/listed2/ranks", json=body, headers=AUTH)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.json()["error"]["field"], (body, answer.text)
    assert ranks(api, "nope", ["a"]).status_code == 404


def test_a_list_of_a_hundred_players_costs_each_shard_a_call_or_two_not_one_per_player(api, board):
    create(api, "crowd", windows=["all"])
    events = [{"user_id": f"p{i}", "match_id": "m", "score": i} for i in range(100)]
    assert api.post("/v1/boards/crowd/scores/batch", json={"events": events}, headers=AUTH).status_code == 200
    shards = [board.redis(i) for i in range(3)]
    for shard in shards:
        shard.config_resetstat()
    answer = ranks(api, "crowd", [f"p{i}" for i in range(100)])
    assert answer.status_code == 200 and [e["list_rank"] for e in answer.json()["entries"]][:2] == [100, 99]
    calls = [int(shard.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)) for shard in shards]
    # Background work (reconciler, self-healing) may add a script call of its own now and then.
    assert all(1 <= n <= 4 for n in calls), calls
