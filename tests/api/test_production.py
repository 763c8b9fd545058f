"""What operators and security reviewers expect: tokens, limits, metrics, logs, shutdown, fuzzing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from router.core.rate_limits import player_counter_field, player_counters_key
from tests.cluster import ADMIN_TOKEN, GAME_TOKEN, Cluster, RouterProcess
from tests.invariants import assert_exact, wait_outbox_empty

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def custom_router(board: Cluster):
    started: list[RouterProcess] = []

    def start(**env: str) -> RouterProcess:
        router = board.router(extra_env=env)
        started.append(router)
        return router

    yield start
    for router in started:
        router.stop()


def test_missing_or_wrong_tokens_get_401_with_a_json_body(api):
    for headers in ({}, {"X-Game-Service-Token": "wrong"}):
        reply = api.post("/v1/scores", json={"user_id": "a", "match_id": "m"}, headers=headers)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "unauthorized"
    assert api.get("/v1/admin/shards").status_code == 401
    assert api.get("/v1/admin/shards", headers={"X-Admin-Token": GAME_TOKEN}).status_code == 401
    assert api.get("/v1/admin/shards", headers={"X-Admin-Token": ADMIN_TOKEN}).status_code == 200


@pytest.mark.parametrize(
    ("tokens", "admin", "problem"),
    [
        ("", "a-strong-admin-token-123", "LB_GAME_TOKENS is empty"),
        ("changeme", "a-strong-admin-token-123", "LB_GAME_TOKENS has a weak"),
        ("a-strong-game-token-1234", "short", "LB_ADMIN_TOKEN has a weak"),
    ],
)
def test_production_refuses_to_start_with_weak_tokens(board, tokens, admin, problem, tmp_path):
    router = RouterProcess(
        board.shards_file,
        board.dsn,
        tmp_path / "router.log",
        extra_env={"LB_ENV": "production", "LB_GAME_TOKENS": tokens, "LB_ADMIN_TOKEN": admin},
    )
    with pytest.raises(RuntimeError, match="router failed to start") as failure:
        router.start()
    assert problem in str(failure.value)
    assert "LB_ENV=dev" in str(failure.value)


def test_production_refuses_a_moved_clock(board, tmp_path):
    router = RouterProcess(
        board.shards_file,
        board.dsn,
        tmp_path / "router.log",
        extra_env={
            "LB_ENV": "production",
            "LB_GAME_TOKENS": "a-strong-game-token-1234",
            "LB_ADMIN_TOKEN": "a-strong-admin-token-123",
            "LB_CLOCK_OFFSET_FILE": str(tmp_path / "offset"),
        },
    )
    with pytest.raises(RuntimeError, match="router failed to start") as failure:
        router.start()
    assert "LB_CLOCK_OFFSET_FILE" in str(failure.value)


def test_optional_read_token(custom_router):
    router = custom_router(LB_READ_TOKENS="reader-token-0123456789")
    with router.client() as api:
        assert api.post("/v1/scores", json={"user_id": "a", "match_id": "m"}, headers=AUTH).status_code == 200
        assert api.get("/v1/leaderboard/top").status_code == 401
        assert api.get("/v1/leaderboard/top", headers={"X-Read-Token": "reader-token-0123456789"}).status_code == 200
        assert api.get("/v1/scores/a", headers=AUTH).status_code == 200  # a game token may read too
        assert api.get("/healthz").status_code == 200


def test_rate_limits_hold_across_router_processes(custom_router):
    env = {"LB_RATE_LIMIT_PLAYER_PER_HOUR": "5", "LB_RATE_LIMIT_TOKEN_PER_S": "0"}
    routers = [custom_router(**env), custom_router(**env)]
    statuses = []
    for n in range(8):
        with routers[n % 2].client() as api:
            reply = api.post("/v1/scores", json={"user_id": "spammer", "match_id": f"m{n}"}, headers=AUTH)
            statuses.append(reply.status_code)
            if reply.status_code == 429:
                assert int(reply.headers["Retry-After"]) > 0
                assert reply.json()["error"]["code"] == "rate_limited"
    assert statuses == [200] * 5 + [429] * 3
    with routers[0].client() as api:
        assert api.get("/v1/scores/spammer").json()["score"] == 5  # refused events changed nothing
        batch = api.post(
            "/v1/scores/batch",
            json={"events": [{"user_id": "spammer", "match_id": "b1"}, {"user_id": "calm", "match_id": "b1"}]},
            headers=AUTH,
        ).json()
        assert [r["status"] for r in batch["results"]] == ["refused", "applied"]
        assert "rate limited" in batch["results"][0]["reason"]


def test_player_counters_are_small_packed_hashes_that_expire_with_the_hour(board, custom_router):
    # A player's count for the hour lives in one of PLAYER_COUNTER_BUCKETS small hashes
    # on the counter store (packed by Redis: about 12 bytes a player), not in one hash
    # table holding every player of the hour (73-91).
    router = custom_router(LB_RATE_LIMIT_PLAYER_PER_HOUR="100", LB_RATE_LIMIT_TOKEN_PER_S="0")
    with router.client() as api:
        events = [{"user_id": f"p{n}", "match_id": "m"} for n in range(600)]
        assert api.post("/v1/scores/batch", json={"events": events}, headers=AUTH).json()["applied"] == 600
        assert api.post("/v1/scores", json={"user_id": "p0", "match_id": "m2"}, headers=AUTH).status_code == 200
    store = board.redis(0)  # LB_RATE_LIMIT_REDIS_URL's default: the first shard
    # Fields are a hash of the player id: the counters hold no ids.
    users = {player_counter_field(f"p{n}"): f"p{n}" for n in range(600)}
    counts: dict[str, str] = {}
    keys = list(store.scan_iter("rl:p:*"))
    assert len(keys) > 400  # 600 players spread over the buckets (about 558 expected)
    for key in keys:
        assert store.object("encoding", key) in ("ziplist", "listpack")
        assert 0 < store.ttl(key) <= 3601  # gone when its hour is over
        hour = int(key.split(":")[2])
        for field, count in store.hgetall(key).items():
            user = users[field]
            assert player_counters_key(hour, user) == key
            counts[user] = count
    assert counts == {f"p{n}": "2" if n == 0 else "1" for n in range(600)}


def test_no_player_counters_when_the_player_limit_is_off(board, custom_router):
    router = custom_router(LB_RATE_LIMIT_PLAYER_PER_HOUR="0")
    with router.client() as api:
        assert api.post("/v1/scores", json={"user_id": "free", "match_id": "m"}, headers=AUTH).status_code == 200
    assert list(board.redis(0).scan_iter("rl:p:*")) == []


def test_concurrent_requests_are_each_counted_exactly(custom_router):
    # 40 requests for one player and 20 for others, at once: they are counted
    # together, one call per write group, yet each request gets its own verdict, so
    # exactly the limit gets through and the refusals do not hold back the others.
    router = custom_router(LB_RATE_LIMIT_PLAYER_PER_HOUR="7", LB_RATE_LIMIT_TOKEN_PER_S="0")
    with router.client() as api:

        def send(n: int) -> int:
            user = "rush" if n % 3 else f"calm-{n}"
            return api.post("/v1/scores", json={"user_id": user, "match_id": f"m{n}"}, headers=AUTH).status_code

        with ThreadPoolExecutor(max_workers=40) as pool:
            statuses = list(pool.map(send, range(60)))
        rush = [status for n, status in enumerate(statuses) if n % 3]
        calm = [status for n, status in enumerate(statuses) if not n % 3]
        assert sorted(rush) == [200] * 7 + [429] * 33
        assert calm == [200] * 20
        assert api.get("/v1/scores/rush").json()["score"] == 7


def test_token_rate_limit(custom_router):
    router = custom_router(LB_RATE_LIMIT_TOKEN_PER_S="3")
    with router.client() as api:
        statuses = [
            api.post("/v1/scores", json={"user_id": f"u{n}", "match_id": "m"}, headers=AUTH).status_code
            for n in range(10)
        ]
    assert 429 in statuses and statuses.count(200) >= 3


def test_metrics_expose_requests_shards_and_commits(api):
    for n in range(3):
        api.post("/v1/scores", json={"user_id": "m", "match_id": f"m{n}", "score": 60}, headers=AUTH)
    api.get("/v1/scores/m")
    text = api.get("/metrics").text
    assert 'lb_http_requests_total{method="POST",route="/v1/scores",status="200"}' in text
    assert "lb_http_request_seconds_bucket{" in text
    assert 'lb_shard_operations_total{op="apply"' in text
    assert "lb_group_commit_events_count" in text and "lb_group_commit_seconds_count" in text
    assert "lb_players_moved_total" in text and "lb_reconciler_backlog" in text
    assert "lb_layout_epoch" in text


def test_request_id_is_echoed_or_generated_and_logged(board, custom_router):
    router = custom_router()
    with router.client() as api:
        given = api.get("/healthz", headers={"X-Request-ID": "trace-123"})
        assert given.headers["X-Request-ID"] == "trace-123"
        made = api.get("/healthz")
        assert len(made.headers["X-Request-ID"]) == 32
        bad = api.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert bad.headers["X-Request-ID"] != "bad id with spaces"
        body = {"user_id": "logged", "match_id": "m1"}
        api.post("/v1/scores", json=body, headers={**AUTH, "X-Request-ID": "write-1"})
        api.get("/v1/scores/nobody", headers={"X-Request-ID": "read-404"})
    router.stop()
    access = access_lines(router)
    # By default (LB_ACCESS_LOG=writes): writes and failures, not successful reads.
    assert {(line["request_id"], line["status"]) for line in access} == {("write-1", 200), ("read-404", 404)}
    assert all({"ts", "level", "route", "ms"} <= set(line) for line in access)


def test_access_log_can_list_every_request(board, custom_router):
    router = custom_router(LB_ACCESS_LOG="all")
    with router.client() as api:
        api.get("/healthz", headers={"X-Request-ID": "trace-123"})
    router.stop()
    assert any(line["request_id"] == "trace-123" and line["status"] == 200 for line in access_lines(router))


def test_access_lines_are_written_in_blocks_and_flushed_when_the_router_stops(board, custom_router):
    router = custom_router(LB_ACCESS_LOG_FLUSH_S="30")
    post_traced_write(router, "held-1")
    time.sleep(0.5)
    assert not logged(router, "held-1")
    router.stop()
    assert logged(router, "held-1")


def test_access_lines_show_up_within_the_flush_interval(board, custom_router):
    router = custom_router(LB_ACCESS_LOG_FLUSH_S="0.2")
    post_traced_write(router, "prompt-1")
    deadline = time.monotonic() + 5
    while not logged(router, "prompt-1"):
        assert time.monotonic() < deadline, "the access line never reached the log while the router ran"
        time.sleep(0.05)


def post_traced_write(router: RouterProcess, request_id: str) -> None:
    with router.client() as api:
        body = {"user_id": request_id, "match_id": "m1"}
        assert api.post("/v1/scores", json=body, headers={**AUTH, "X-Request-ID": request_id}).status_code == 200


def logged(router: RouterProcess, request_id: str) -> bool:
    return any(line["request_id"] == request_id and line["status"] == 200 for line in access_lines(router))


def access_lines(router: RouterProcess) -> list[dict]:
    lines = [json.loads(line) for line in router.log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg") == "request"]


def test_payload_limit_and_cors(custom_router):
    router = custom_router(LB_MAX_BODY_BYTES="2048", LB_CORS_ORIGINS="https://game.example")
    with router.client() as api:
        big = api.post(
            "/v1/scores/batch",
            content=b'{"events": [' + b" " * 5000 + b"]}",
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "payload_too_large"
        # A body that declares no length is cut off as it arrives: on a route, and on
        # the single write, answered before the framework once its route is known.
        assert api.post("/v1/scores", json={"user_id": "small", "match_id": "m1"}, headers=AUTH).status_code == 200
        for path in ("/v1/scores/batch", "/v1/scores"):
            streamed = api.post(
                path,
                content=iter([b'{"user_id": "big", "match_id": "m1", "pad": "', b"x" * 5000, b'"}']),
                headers={**AUTH, "Content-Type": "application/json"},
            )
            assert streamed.status_code == 413, path
            assert streamed.json()["error"]["code"] == "payload_too_large"
        assert api.get("/v1/scores/big").status_code == 404
        preflight = api.options(
            "/v1/scores",
            headers={
                "Origin": "https://game.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "X-Game-Service-Token",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == "https://game.example"
        other = api.options(
            "/v1/scores", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in other.headers
        origin = {"Origin": "https://game.example"}
        write = api.post("/v1/scores", json={"user_id": "cors", "match_id": "m1"}, headers={**AUTH, **origin})
        read = api.get("/v1/scores/cors", headers=origin)
        assert write.status_code == read.status_code == 200
        assert write.headers["access-control-allow-origin"] == read.headers["access-control-allow-origin"]
        assert read.headers["access-control-allow-origin"] == "https://game.example"


def test_unreadable_bodies_and_unknown_paths_use_the_error_shape(api):
    reply = api.post("/v1/scores", content=b"\xff\xfe{", headers={**AUTH, "Content-Type": "application/json"})
    assert reply.status_code in (400, 422) and "error" in reply.json()
    assert api.get("/v1/nothing-here").json()["error"]["code"] == "not_found"


def test_sigterm_finishes_in_flight_writes_and_loses_nothing_acknowledged(board: Cluster, custom_router):
    router = custom_router()
    acked: list[tuple[str, int]] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        with httpx.Client(base_url=router.url, timeout=10) as client:
            for i in range(10_000):
                if stop.is_set():
                    return
                body = {"user_id": f"g{n}", "match_id": f"m{i}", "score": 1}
                try:
                    reply = client.post("/v1/scores", json=body, headers=AUTH)
                except httpx.TransportError:
                    return  # the router is gone: this request was never acknowledged
                if reply.status_code == 200:
                    acked.append((body["user_id"], body["match_id"]))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    router.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises SIGTERM to exit with its status.
    assert router.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 50
    recorded = set(board.sql("SELECT user_id, match_id FROM score_events"))
    assert set(acked) <= recorded
    # The shards hold every acknowledged write too: the router flushed before exiting.
    after = board.router()
    try:
        wait_outbox_empty(board, timeout=10)
        with after.client() as api:
            assert_exact(board, api)
    finally:
        after.stop()


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(api, router):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{router.url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance",
            "-H",
            f"X-Game-Service-Token: {GAME_TOKEN}",
            "-H",
            f"X-Admin-Token: {ADMIN_TOKEN}",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout[-6000:]


def test_grafana_dashboard_uses_only_metrics_the_router_exports(api):
    import re

    exported = set(re.findall(r"^# TYPE (\w+) ", api.get("/metrics").text, re.M))
    dashboard = json.loads((ROOT / "ops" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(lb_\w+?)(?:_bucket|_total|_count|_sum)?\b", target["expr"])
    }
    assert used and used <= exported | {n.removesuffix("_total") for n in exported}, used - exported


def test_pages_served_from_memory_still_need_a_read_token_and_are_counted(custom_router):
    router = custom_router(LB_READ_TOKENS="reader-token-0123456789")
    reader = {"X-Read-Token": "reader-token-0123456789"}
    with router.client() as api:
        api.post("/v1/scores", json={"user_id": "solo", "match_id": "m", "score": 3}, headers=AUTH)
        assert api.get("/v1/leaderboard/top?limit=5", headers=reader).status_code == 200  # rendered, kept
        assert api.get("/v1/leaderboard/top?limit=5").status_code == 401  # the page is in memory; no token
        assert api.get("/v1/leaderboard/top?limit=5", headers={"X-Read-Token": "wrong"}).status_code == 401
        for _ in range(3):
            cached = api.get("/v1/leaderboard/top?limit=5", headers=reader)
            assert cached.json()["entries"] == [{"rank": 1, "user_id": "solo", "score": 3}]
            assert cached.headers["content-type"] == "application/json" and cached.headers["x-request-id"]
        metrics = api.get("/metrics").text
    label = 'lb_http_requests_total{method="GET",route="/v1/leaderboard/top",status="200"} '
    served = [line for line in metrics.splitlines() if line.startswith(label)]
    assert served and float(served[0].removeprefix(label)) == 4.0  # 1 rendered + 3 from memory


def test_plain_rank_reads_answered_before_routing_match_the_route(custom_router):
    router = custom_router(LB_READ_TOKENS="reader-token-0123456789")
    reader = {"X-Read-Token": "reader-token-0123456789"}
    month = time.strftime("%Y-%m", time.gmtime())
    with router.client() as api:
        api.post("/v1/scores", json={"user_id": "pat", "match_id": "m", "score": 4}, headers=AUTH)
        for _ in range(3):  # the first goes through routing, the rest are answered before it
            plain = api.get("/v1/scores/pat", headers=reader)
            routed = api.get(f"/v1/scores/pat?month={month}", headers=reader)  # a query string: always routed
            assert plain.status_code == routed.status_code == 200
            assert plain.json() == routed.json() and plain.json()["rank"] == 1
            missing, missing_routed = (
                api.get("/v1/scores/nobody", headers=reader),
                api.get(f"/v1/scores/nobody?month={month}", headers=reader),
            )
            assert missing.status_code == missing_routed.status_code == 404
            assert missing.json() == missing_routed.json()
            assert api.get("/v1/scores/pat").status_code == 401
            assert api.get("/v1/scores/pat", headers={"X-Read-Token": "wrong"}).status_code == 401
            assert api.get("/v1/scores/pat", headers=AUTH).status_code == 200  # a game token may read too
        metrics = api.get("/metrics").text
    label = 'lb_http_requests_total{method="GET",route="/v1/scores/{user_id}",status="200"} '
    counted = [line for line in metrics.splitlines() if line.startswith(label)]
    assert counted and float(counted[0].removeprefix(label)) == 9.0  # 3 x (plain, routed, game token)


def test_single_score_writes_answered_before_routing_match_the_route(custom_router):
    router = custom_router(LB_MAX_BODY_BYTES="2048")
    json_type = {"Content-Type": "application/json"}
    bad_bodies = [
        b"{not json",
        b"\xff\xfe{",
        b"[1, 2]",
        b'{"match_id": "m"}',
        b'{"user_id": "has space", "match_id": "m"}',
        b'{"user_id": "u", "match_id": "m", "score": "3"}',
        b'{"user_id": "u", "match_id": "m", "score": 1.5}',
        b'{"user_id": "u", "match_id": "m", "colour": "red"}',
        b'{"user_id": "u", "match_id": "m", "occurred_at": "2026-01-01T00:00:00"}',
    ]
    with router.client() as api:
        for round_no in range(3):  # the first goes through routing, the rest are answered before it
            event = {"user_id": "sam", "match_id": f"m{round_no}", "score": 5}
            plain = api.post("/v1/scores", json=event, headers=AUTH)
            routed = api.post("/v1/scores?via=route", json=event, headers=AUTH)  # a query string: always routed
            assert plain.status_code == routed.status_code == 200
            # The resend through the route is answered as a duplicate with the same state.
            same = ("user_id", "score", "rank", "month")
            assert [plain.json()[k] for k in same] == [routed.json()[k] for k in same]
            assert (plain.json()["duplicate"], routed.json()["duplicate"]) == (False, True)
            assert plain.json()["score"] == 6 * round_no + 5 and plain.json()["rank"] == 1
            assert plain.headers["content-type"] == "application/json" and plain.headers["x-request-id"]
            for body in bad_bodies:
                answers = [
                    api.post(path, content=body, headers={**AUTH, **json_type})
                    for path in ("/v1/scores", "/v1/scores?r")
                ]
                assert answers[0].status_code == answers[1].status_code and answers[0].status_code in (400, 422), body
                assert answers[0].json() == answers[1].json(), body
            as_text = api.post("/v1/scores", json=event, headers={**AUTH, "Content-Type": "text/plain"})
            assert as_text.status_code == 422  # only JSON bodies are read, as the route does
            # Only the JSON media type itself is read here, parameters aside, as the route does.
            for k, (media_type, status) in enumerate(
                (("application/jsonx", 422), ("Application/JSON; charset=utf-8", 200))
            ):
                answers = [
                    api.post(
                        path,
                        json={"user_id": "kim", "match_id": f"ct{k}-{round_no}-{j}"},
                        headers={**AUTH, "Content-Type": media_type},
                    )
                    for j, path in enumerate(("/v1/scores", "/v1/scores?r"))
                ]
                assert [a.status_code for a in answers] == [status, status], media_type
            assert api.post("/v1/scores", json=event).status_code == 401
            assert api.post("/v1/scores", json=event, headers={"X-Game-Service-Token": "wrong"}).status_code == 401
            chunked = api.post(
                "/v1/scores",
                content=iter([b'{"user_id": "sam", ', f'"match_id": "c{round_no}", "score": 1}}'.encode()]),
                headers={**AUTH, **json_type},
            )
            assert chunked.status_code == 200 and chunked.json()["score"] == 6 * round_no + 6
            too_big = api.post("/v1/scores", content=b"{" + b" " * 3000 + b"}", headers={**AUTH, **json_type})
            assert too_big.status_code == 413
        assert api.get("/v1/scores/sam").json()["score"] == 18
        metrics = api.get("/metrics").text
    label = 'lb_http_requests_total{method="POST",route="/v1/scores",status="200"} '
    counted = [line for line in metrics.splitlines() if line.startswith(label)]
    assert counted and float(counted[0].removeprefix(label)) == 15.0  # 3 x (plain, routed, chunked, 2 with a charset)


def test_the_stale_tolerant_opt_in_serves_pages_unchecked_for_at_most_its_time(custom_router):
    router = custom_router(LB_TOP_CACHE_TTL_S="1.0")
    with router.client() as api:
        api.post("/v1/scores", json={"user_id": "first", "match_id": "m", "score": 10}, headers=AUTH)
        assert [e["user_id"] for e in api.get("/v1/leaderboard/top").json()["entries"]] == ["first"]
        api.post("/v1/scores", json={"user_id": "second", "match_id": "m", "score": 20}, headers=AUTH)
        stale = api.get("/v1/leaderboard/top").json()["entries"]
        assert [e["user_id"] for e in stale] == ["first"]  # served from memory
        assert api.get("/v1/scores/second").json()["rank"] == 1  # ranks are never cached
        time.sleep(1.1)
        fresh = api.get("/v1/leaderboard/top").json()["entries"]
        assert [e["user_id"] for e in fresh] == ["second", "first"]


def test_plain_board_reads_and_writes_answered_before_routing_match_the_route(custom_router):
    router = custom_router(LB_READ_TOKENS="reader-token-0123456789")
    reader = {"X-Read-Token": "reader-token-0123456789"}
    admin = {"X-Admin-Token": ADMIN_TOKEN}
    with router.client() as api:
        assert api.put("/v1/admin/boards/arena", json={"windows": ["all"]}, headers=admin).status_code == 200
        for round_no in range(3):  # the first of each goes through routing, the rest are answered before it
            event = {"user_id": "pat", "match_id": f"m{round_no}", "score": 4, "metadata": {"n": round_no}}
            plain = api.post("/v1/boards/arena/scores", json=event, headers=AUTH)
            routed = api.post("/v1/boards/arena/scores?via=route", json=event, headers=AUTH)  # always routed
            assert plain.status_code == routed.status_code == 200, plain.text
            assert (plain.json()["duplicate"], routed.json()["duplicate"]) == (False, True)
            # The resend through the route is answered as a duplicate with the same state.
            same = ("period", "score", "rank")
            assert [plain.json()["windows"]["all"][k] for k in same] == [
                routed.json()["windows"]["all"][k] for k in same
            ]
            assert plain.json()["windows"]["all"]["score"] == 4 * (round_no + 1)
            for body in (b"{not json", b'{"user_id": "u", "match_id": "m", "metadata": [1]}'):
                answers = [
                    api.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
                    for path in ("/v1/boards/arena/scores", "/v1/boards/arena/scores?r")
                ]
                assert answers[0].status_code == answers[1].status_code and answers[0].json() == answers[1].json()
            assert api.post("/v1/boards/arena/scores", json=event).status_code == 401
            assert (
                api.post("/v1/boards/nowhere/scores", json=event, headers=AUTH).json()
                == api.post("/v1/boards/nowhere/scores?r", json=event, headers=AUTH).json()
            )

            me, me_routed = (
                api.get("/v1/boards/arena/scores/pat", headers=reader),
                api.get("/v1/boards/arena/scores/pat?window=all", headers=reader),
            )
            assert me.status_code == me_routed.status_code == 200
            assert me.json() == me_routed.json() and me.json()["metadata"] == {"n": round_no}
            for path in ("/v1/boards/arena/scores/nobody", "/v1/boards/nowhere/scores/pat"):
                missing, missing_routed = api.get(path, headers=reader), api.get(path + "?window=all", headers=reader)
                assert missing.status_code == missing_routed.status_code == 404
                assert missing.json() == missing_routed.json()
            assert api.get("/v1/boards/arena/scores/pat").status_code == 401

            # A query string the route validated before is answered before routing next time.
            top = api.get("/v1/boards/arena/top?limit=5", headers=reader)
            other_order = api.get("/v1/boards/arena/top?limit=5&window=all", headers=reader)
            assert top.status_code == other_order.status_code == 200
            assert top.json() == other_order.json() and top.json()["entries"][0]["metadata"] == {"n": round_no}
            assert api.get("/v1/boards/arena/top?limit=5").status_code == 401
            for query in ("limit=5", "limit=500"):
                unknown = [api.get(f"/v1/boards/nowhere/top?{query}", headers=reader) for _ in range(2)]
                assert unknown[0].status_code == unknown[1].status_code and unknown[0].json() == unknown[1].json()
        metrics = api.get("/metrics").text
    for label, count in (
        ('lb_http_requests_total{method="GET",route="/v1/boards/{board}/scores/{user_id}",status="200"} ', 6.0),
        ('lb_http_requests_total{method="POST",route="/v1/boards/{board}/scores",status="200"} ', 6.0),
        ('lb_http_requests_total{method="GET",route="/v1/boards/{board}/top",status="200"} ', 6.0),
    ):
        counted = [line for line in metrics.splitlines() if line.startswith(label)]
        assert counted and float(counted[0].removeprefix(label)) == count, label
