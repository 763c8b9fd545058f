"""Exact reads with default settings: after a write's 2xx, every read through any router
reflects it; a kept top page is served only while it is current; a page never lists a
player twice or skips a rank, even while players move between shards."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from router.shardmap import shard_map_from_dict
from shard_manager.rebalance import Rebalancer
from tests.cluster import ADMIN_TOKEN, GAME_TOKEN, Cluster, RouterProcess, running_cluster
from tests.invariants import assert_exact, wait_outbox_empty

AUTH = {"X-Game-Service-Token": GAME_TOKEN}


@pytest.fixture(scope="module")
def exact_cluster() -> Iterator[Cluster]:
    """A cluster of its own: one test here re-splits its layout."""
    with running_cluster("lb-exact-") as cluster:
        yield cluster


@pytest.fixture
def two_routers(exact_cluster: Cluster) -> Iterator[tuple[RouterProcess, RouterProcess]]:
    exact_cluster.reset()
    routers = [exact_cluster.router(extra_env={"LB_LAYOUT_POLL_S": "0.2"}) for _ in range(2)]
    try:
        yield routers[0], routers[1]
    finally:
        for router in routers:
            router.stop()


class Model:
    """One sorted set holding everyone: higher score first, then who reached it first."""

    def __init__(self) -> None:
        self.scores: dict[str, int] = {}
        self.reached: dict[str, int] = {}
        self._clock = 0

    def add(self, user: str, delta: int) -> None:
        before = self.scores.get(user)
        self.scores[user] = (before or 0) + delta
        if before is None or delta != 0:
            self._clock += 1
            self.reached[user] = self._clock

    def order(self) -> list[str]:
        return sorted(self.scores, key=lambda u: (-self.scores[u], self.reached[u]))

    def page(self, offset: int, limit: int) -> list[dict]:
        order = self.order()
        return [
            {"rank": offset + 1 + i, "user_id": u, "score": self.scores[u]}
            for i, u in enumerate(order[offset : offset + limit])
        ]


def top_pages_counted(api: httpx.Client) -> dict[str, float]:
    found = re.findall(r'^lb_top_pages_total\{outcome="(\w+)"\} ([0-9.e+]+)$', api.get("/metrics").text, re.M)
    return {outcome: float(value) for outcome, value in found}


def test_every_read_through_another_router_reflects_the_write_just_acknowledged(two_routers):
    writer, reader = two_routers
    model = Model()
    rng = random.Random(17)
    users = [f"raw{i}" for i in range(30)]
    with writer.client() as w, reader.client() as r:
        for n in range(1000):
            user = rng.choice(users)
            # Mostly small steps, now and then one across a boundary (100 and 1000), both ways.
            current = model.scores.get(user, 0)
            delta = rng.choice([1, 2, 5, 120, 950]) if current < 1500 else -rng.choice([60, 900])
            answer = w.post("/v1/scores", json={"user_id": user, "match_id": f"m{n}", "score": delta}, headers=AUTH)
            assert answer.status_code == 200, answer.text
            model.add(user, delta)
            order = model.order()

            top = r.get("/v1/leaderboard/top?limit=10").json()
            assert top["total_players"] == len(order), n
            assert top["entries"] == model.page(0, 10), n
            me = r.get(f"/v1/scores/{user}").json()
            assert (me["rank"], me["score"], me["total_players"]) == (
                order.index(user) + 1,
                model.scores[user],
                len(order),
            )
            around = r.get(f"/v1/scores/{user}/around?radius=2").json()
            offset = max(0, order.index(user) - 2)
            assert around["entries"] == model.page(offset, order.index(user) + 3 - offset), n
        counted = top_pages_counted(r)
    # Every top read came right after a write, so none could have been reused.
    assert counted.get("rendered") == 1000 and counted.get("reused", 0) == 0


def test_a_kept_page_is_reused_until_a_write_to_any_shard_it_depends_on(two_routers):
    writer, reader = two_routers
    with writer.client() as w, reader.client() as r:
        for i, score in enumerate((5000, 4000, 3000)):  # all on the top shard
            w.post("/v1/scores", json={"user_id": f"top{i}", "match_id": "m", "score": score}, headers=AUTH)
        first = r.get("/v1/leaderboard/top?limit=2").json()
        assert [e["user_id"] for e in first["entries"]] == ["top0", "top1"] and first["total_players"] == 3
        before = top_pages_counted(r)
        for _ in range(5):  # nothing written: the kept page is current, and served
            assert r.get("/v1/leaderboard/top?limit=2").json() == first
        after = top_pages_counted(r)
        assert after.get("reused", 0) - before.get("reused", 0) == 5
        assert after.get("rendered", 0) == before.get("rendered", 0)

        # A new player far below the page, on the lowest shard: the entries stay, the total does not.
        w.post("/v1/scores", json={"user_id": "low", "match_id": "m", "score": 3}, headers=AUTH)
        page = r.get("/v1/leaderboard/top?limit=2").json()
        assert page["total_players"] == 4 and page["entries"] == first["entries"]
        # A score change that keeps every shard's size: the page must change all the same.
        w.post("/v1/scores", json={"user_id": "top1", "match_id": "m2", "score": 2000}, headers=AUTH)
        page = r.get("/v1/leaderboard/top?limit=2").json()
        assert [(e["user_id"], e["score"]) for e in page["entries"]] == [("top1", 6000), ("top0", 5000)]
        # A player leaving the top shard for a lower one.
        w.post("/v1/scores", json={"user_id": "top1", "match_id": "m3", "score": -5990}, headers=AUTH)
        page = r.get("/v1/leaderboard/top?limit=2").json()
        assert [e["user_id"] for e in page["entries"]] == ["top0", "top2"] and page["total_players"] == 4
        assert top_pages_counted(r).get("rendered", 0) - after.get("rendered", 0) == 3


def test_pages_never_list_a_player_twice_or_skip_a_rank_while_players_cross_and_a_boundary_moves(
    exact_cluster: Cluster, two_routers
):
    writer, reader = two_routers
    users = [f"mover{i}" for i in range(40)]
    scores = {u: 50 + i for i, u in enumerate(users)}  # around the 100 boundary
    with writer.client() as w:
        for u, s in scores.items():
            assert w.post("/v1/scores", json={"user_id": u, "match_id": "seed", "score": s}, headers=AUTH).is_success
    stop = threading.Event()
    problems: list[str] = []
    short_pages: list[str] = []
    pages_read = [0]

    def push_across(seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        with httpx.Client(base_url=writer.url, timeout=30) as api:
            while not stop.is_set() and n < 4000:
                user = rng.choice(users[seed::2])  # each writer has its own players
                delta = 100 if scores[user] < 100 else -100
                answer = api.post(
                    "/v1/scores", json={"user_id": user, "match_id": f"w{seed}-{n}", "score": delta}, headers=AUTH
                )
                if answer.status_code == 200:
                    scores[user] += delta
                n += 1

    def read_pages() -> None:
        with httpx.Client(base_url=reader.url, timeout=30) as api:
            while not stop.is_set() and pages_read[0] < 20000:
                for limit in (100, 25):
                    page = api.get(f"/v1/leaderboard/top?limit={limit}").json()
                    listed = [e["user_id"] for e in page["entries"]]
                    ranks = [e["rank"] for e in page["entries"]]
                    if len(set(listed)) != len(listed):
                        problems.append(f"a player listed twice: {sorted(u for u in listed if listed.count(u) > 1)}")
                    if ranks != list(range(1, len(ranks) + 1)):
                        problems.append(f"ranks not consecutive: {ranks}")
                    if len(listed) < min(limit, len(users)):
                        short_pages.append(f"page of {len(listed)} for {len(users)} players")
                    pages_read[0] += 1

    threads = [threading.Thread(target=push_across, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=read_pages) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        # Midway, move the 100 boundary down to 75 and back up, online.
        for bound in (75, 100):
            target = shard_map_from_dict(
                {
                    "epoch": 1,
                    "shards": [
                        {"id": "s0", "address": exact_cluster.shards[0].url, "min_score": 0, "max_score": bound},
                        {"id": "s1", "address": exact_cluster.shards[1].url, "min_score": bound, "max_score": 1000},
                        {"id": "s2", "address": exact_cluster.shards[2].url, "min_score": 1000, "max_score": None},
                    ],
                }
            )
            rebalancer = Rebalancer(exact_cluster.dsn, step_players=5, settle_s=0.5)
            try:
                rebalancer.apply(target)
            finally:
                rebalancer.close()
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not problems, problems[:5]
    assert pages_read[0] > 100
    # A page lacks a player only if every one of its re-reads found a shard changed
    # (ranking.PAGE_READS) and that player was between two shards at the last one: the
    # documented residue under writes this dense. Reading each page once, as before,
    # left players out of many pages.
    assert len(short_pages) <= pages_read[0] // 100, (len(short_pages), pages_read[0], short_pages[:3])
    # Once writes settle, pages equal one sorted set holding everyone.
    wait_outbox_empty(exact_cluster, timeout=15)
    with reader.client() as api:
        assert_exact(exact_cluster, api, scores)


def test_board_top_pages_are_kept_too_and_never_served_for_the_original_route(two_routers):
    writer, reader = two_routers
    admin = {"X-Admin-Token": ADMIN_TOKEN}
    with writer.client() as w, reader.client() as r:
        assert (
            w.put("/v1/admin/boards/lap", json={"order": "asc", "windows": ["all"]}, headers=admin).status_code == 200
        )
        for user, time_ms in (("ann", 61000), ("bob", 59000)):
            body = {"user_id": user, "match_id": "m", "score": time_ms}
            assert w.post("/v1/boards/lap/scores", json=body, headers=AUTH).status_code == 200
        first = r.get("/v1/boards/lap/top?limit=5").json()
        assert [(e["user_id"], e["score"]) for e in first["entries"]] == [("bob", 59000), ("ann", 61000)]
        before = top_pages_counted(r)
        for _ in range(4):
            assert r.get("/v1/boards/lap/top?limit=5").json() == first
        assert top_pages_counted(r).get("reused", 0) - before.get("reused", 0) == 4
        # A write through the other router: the next page through this one shows it.
        body = {"user_id": "ann", "match_id": "m2", "score": 58000, "mode": "best"}
        assert w.post("/v1/boards/lap/scores", json=body, headers=AUTH).status_code == 200
        assert [e["user_id"] for e in r.get("/v1/boards/lap/top?limit=5").json()["entries"]] == ["ann", "bob"]
        # The same board period through both routes of the original board: each its own shape.
        assert (
            w.post("/v1/scores", json={"user_id": "cy", "match_id": "m", "score": 3}, headers=AUTH).status_code == 200
        )
        month = r.get("/v1/leaderboard/top?limit=5").json()
        assert set(month) == {"month", "total_players", "entries"}
        board = r.get("/v1/boards/global/top?limit=5").json()
        assert board["board"] == "global" and board["entries"] == month["entries"]
        assert set(r.get("/v1/leaderboard/top?limit=5").json()) == {"month", "total_players", "entries"}
