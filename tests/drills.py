"""A steady load of single writes for the fault drills, with what every client saw.

Players are pinned to shards: each shard's players start in the middle of its range
and gain 1 per write, so they never cross a boundary during a drill, and a write's
shard is known. Each worker writes for the players of one shard, one request at a
time, and resends an unanswered or 5xx write with the same match_id until it is
answered, as a real client must. Bounded: every loop stops at its deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from tests.cluster import GAME_TOKEN

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
READ_DEADLINE_S = 0.25
WRITE_DEADLINE_S = 0.5
PG_DEADLINE_S = 2.0
# A reply may take its deadline plus the router's own work, on a busy 2-core machine.
SLACK_S = 1.0
ROUTER_ENV = {
    "LB_SHARD_READ_DEADLINE_S": str(READ_DEADLINE_S),
    "LB_SHARD_WRITE_DEADLINE_S": str(WRITE_DEADLINE_S),
    "LB_PG_DEADLINE_S": str(PG_DEADLINE_S),
    "LB_HEAL_CHECK_S": "0.5",
}


def now() -> datetime:
    return datetime.now(UTC)


# One score per shard of tests.cluster.BOUNDS, far from its boundaries: every write adds
# 1, so shard s0's players ([0, 100)) must not reach 100 during a drill, or they would
# become s1's players and a drill that kills s1 would count them against s0. Spread over
# 64 players, even 500 acknowledged writes a second for s0 through a 9 s drill leave
# each about 70 points short of the boundary (on a fast machine, 12 players crossed it).
HOMES = (1, 300, 5000)


@dataclass(frozen=True, slots=True)
class Reply:
    shard: int
    sent: float
    seconds: float
    status: int | None  # None: no HTTP answer at all (connection refused, reset, timeout)
    code: str = ""


@dataclass
class DrillLoad:
    urls: list[str]
    players_per_shard: int = 64
    workers_per_shard: int = 6
    acked: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    replies: list[Reply] = field(default_factory=list)
    acks: list[tuple[int, float]] = field(default_factory=list)  # (shard, when answered 200)
    _match_ids: itertools.count = field(default_factory=itertools.count)

    def players(self, shard: int) -> list[str]:
        return [f"p{shard}-{i:02d}" for i in range(self.players_per_shard)]

    def seed(self) -> None:
        events = [
            {"user_id": user, "match_id": "seed", "score": HOMES[shard]}
            for shard in range(len(HOMES))
            for user in self.players(shard)
        ]
        with httpx.Client(base_url=self.urls[0], timeout=30) as client:
            reply = client.post("/v1/scores/batch", json={"events": events}, headers=AUTH)
        assert reply.status_code == 200, reply.text
        for event in events:
            self.acked[event["user_id"]] += event["score"]

    async def run(self, seconds: float, fault=None) -> None:
        """Write for `seconds`; `fault(started)` runs beside the load (an async callable)."""
        stop_at = time.monotonic() + seconds
        started = time.monotonic()
        clients = [httpx.AsyncClient(base_url=url, timeout=15) for url in self.urls]

        async def worker(shard: int, n: int) -> None:
            players = self.players(shard)
            client = clients[n % len(clients)]
            while time.monotonic() < stop_at:
                user = players[(n + next(self._match_ids)) % len(players)]
                body = {"user_id": user, "match_id": f"d{next(self._match_ids)}", "score": 1}
                await self._send_until_answered(client, shard, body, stop_at + 30)

        tasks = [
            asyncio.create_task(worker(shard, n)) for shard in range(len(HOMES)) for n in range(self.workers_per_shard)
        ]
        if fault is not None:
            tasks.append(asyncio.create_task(fault(started)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for client in clients:
                await client.aclose()

    async def _send_until_answered(self, client: httpx.AsyncClient, shard: int, body: dict, give_up: float) -> None:
        while True:
            sent = time.monotonic()
            try:
                reply = await client.post("/v1/scores", json=body, headers=AUTH)
                status, code = reply.status_code, ""
                if status != 200:
                    code = reply.json().get("error", {}).get("code", "")
            except httpx.TransportError as exc:
                status, code = None, type(exc).__name__
            answered = time.monotonic()
            self.replies.append(Reply(shard, sent, answered - sent, status, code))
            if status == 200:
                self.acked[body["user_id"]] += body["score"]
                self.acks.append((shard, answered))
                return
            assert status in (None, 503), f"{body}: {status} {code}"
            if answered > give_up:
                raise AssertionError(f"no answer for {body} after the drill ended")
            await asyncio.sleep(0.05)

    def rate(self, shards: set[int], start: float, end: float) -> float:
        """Acknowledged writes per second for these shards' players between two moments."""
        count = sum(1 for shard, when in self.acks if shard in shards and start <= when < end)
        return count / (end - start)

    def assert_kept_rate(
        self, shards: set[int], before: tuple[float, float], during: tuple[float, float]
    ) -> tuple[float, float]:
        """These shards' players kept at least half their acknowledged-write rate through a
        fault: `during` against `before` (each a (start, end) of moments). A load that
        got nothing acknowledged before the fault fails here, instead of passing as
        "half of zero"."""
        rate_before, rate_during = self.rate(shards, *before), self.rate(shards, *during)
        assert rate_before > 0, f"no write of shards {sorted(shards)} was acknowledged before the fault"
        assert rate_during >= 0.5 * rate_before, (rate_before, rate_during)
        return rate_before, rate_during

    def slowest(self, shards: set[int] | None = None) -> float:
        return max((r.seconds for r in self.replies if shards is None or r.shard in shards), default=0.0)

    def unanswered(self) -> list[Reply]:
        return [r for r in self.replies if r.status is None]
