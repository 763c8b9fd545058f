"""Locust game-day scenarios against a running cluster (`make up`, then `make loadtest`).

GameService: a game's backend reporting match results, one at a time and in
batches, resending the same match_id when an answer is lost (as a real service must).
Player: someone looking at the board: the top 10, their own rank, the players
around them, with think time in between.

Settings (environment): LB_GAME_TOKEN (default: .data/game_token), LB_LOADTEST_PLAYERS
(how many distinct players, default 100000). Users, spawn rate, run time and host
are Locust's own options.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from locust import FastHttpUser, between, events, task

PLAYERS = int(os.environ.get("LB_LOADTEST_PLAYERS", "100000"))
RESENDS = 3


def _token() -> str:
    token = os.environ.get("LB_GAME_TOKEN")
    if token:
        return token.split(",")[0]
    path = Path(os.environ.get("LB_DATA_DIR", ".data")) / "game_token"
    return path.read_text().strip() if path.exists() else ""


TOKEN = _token()
_matches = itertools.count()
_run = uuid.uuid4().hex[:8]


@events.test_start.add_listener
def _check_target(environment, **_):
    """Refuse at once, and say why, rather than spend the whole run timing refusals."""
    if not TOKEN:
        raise SystemExit("no game token: set LB_GAME_TOKEN or start the cluster with `make up`")
    ready = f"{(environment.host or '').rstrip('/')}/readyz"
    try:
        # No proxies: Locust's own client does not use them either.
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(ready, timeout=5):
            pass
    except urllib.error.HTTPError as exc:
        # It answers but is not ready (a shard or PostgreSQL down): a run against a
        # degraded cluster can be the point, so go on, and say so.
        logging.warning("%s answered %s: the cluster is degraded; running anyway", ready, exc.code)
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"nothing answers at {ready} ({exc}): start the cluster with `make up`, or point --host "
            "(LOADTEST_HOST for make loadtest) at one"
        ) from None


def player_id() -> str:
    # A few hundred players are much more active than most, as in real games. (Not a
    # handful: one player in a tenth of all matches would be one result every few
    # seconds, which the per-player rate limit rightly refuses.)
    if random.random() < 0.2:
        return f"p{min(int((random.paretovariate(1.2) - 1) * 50), PLAYERS - 1)}"
    return f"p{random.randrange(PLAYERS)}"


def match_result(user: str) -> dict:
    if random.random() < 0.1:
        result = {
            "user_id": user,
            "match_id": f"{_run}-{next(_matches)}",
            "score": random.randint(0, 5000),
            "mode": "best",
        }
    else:
        result = {"user_id": user, "match_id": f"{_run}-{next(_matches)}", "score": random.choice([1, 1, 1, 2, 3, -1])}
    if random.random() < 0.05:
        # Now and then the game sends the player's display data with a result (a new
        # name, a new level), which every entry of theirs then shows.
        result["metadata"] = {"name": f"Player {user}", "level": random.randint(1, 60)}
    return result


class GameService(FastHttpUser):
    weight = 1
    wait_time = between(0.01, 0.05)

    def _send(self, path: str, body: dict, name: str) -> None:
        headers = {"X-Game-Service-Token": TOKEN}
        for attempt in range(RESENDS):
            with self.client.post(path, json=body, headers=headers, name=name, catch_response=True) as reply:
                if reply.status_code in (200, 422, 429):
                    # 422: a negative result refused; 429: a player over the hourly
                    # limit. Both are the service doing its job, not failing.
                    reply.success()
                    return
                if attempt + 1 < RESENDS and (reply.status_code in (0, 502, 503, 504)):
                    reply.failure(f"{reply.status_code}, resending the same match_id")
                    continue
                reply.failure(f"{reply.status_code}: {reply.text[:200] if reply.text else ''}")
                return

    @task(10)
    def report_match(self) -> None:
        self._send("/v1/scores", match_result(player_id()), "POST /v1/scores")

    @task(1)
    def report_batch(self) -> None:
        body = {"events": [match_result(player_id()) for _ in range(100)]}
        self._send("/v1/scores/batch", body, "POST /v1/scores/batch (100)")


class Player(FastHttpUser):
    weight = 3
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.me = f"p{random.randrange(PLAYERS)}"

    @task(3)
    def top(self) -> None:
        self.client.get("/v1/leaderboard/top?limit=10", name="GET /v1/leaderboard/top")

    @task(2)
    def my_rank(self) -> None:
        with self.client.get(f"/v1/scores/{self.me}", name="GET /v1/scores/{id}", catch_response=True) as reply:
            if reply.status_code in (200, 404):  # 404: this player has not played this month yet
                reply.success()

    @task(1)
    def friends(self) -> None:
        friends = [self.me, *(f"p{random.randrange(PLAYERS)}" for _ in range(19))]
        self.client.post(
            "/v1/boards/global/ranks", json={"user_ids": friends}, name="POST /v1/boards/global/ranks (20)"
        )

    @task(1)
    def around_me(self) -> None:
        with self.client.get(
            f"/v1/scores/{self.me}/around?radius=4", name="GET /v1/scores/{id}/around", catch_response=True
        ) as reply:
            if reply.status_code in (200, 404):
                reply.success()
