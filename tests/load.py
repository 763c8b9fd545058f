"""A load of game-service clients for concurrency and fault tests: bounded, loopback only."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict

import httpx

from tests.cluster import GAME_TOKEN, Cluster

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
PLAYERS = [f"c{i:03d}" for i in range(200)]
CLIENTS = 32


class Ledger:
    """What the clients were told: the scores the service must end with."""

    def __init__(self) -> None:
        self.acked: dict[str, int] = defaultdict(int)
        self.applied = 0
        self.duplicates = 0
        self.refused = 0
        self.retries = 0
        self.match_ids = itertools.count()
        self.acked_matches: list[tuple[str, str]] = []
        self.unknown: list[dict] = []
        self.dead: set[httpx.AsyncClient] = set()
        self.stop = False
        self.failures: list[str] = []


async def send_until_answered(
    clients: list[httpx.AsyncClient], body: dict, ledger: Ledger, deadline: float, *, resend: bool = True
) -> None:
    """Send one event; with `resend`, repeat the same match_id until some router answers for sure.

    Without `resend` an event whose router vanished mid-request is left as it is:
    it may or may not have been committed, and no client was told either way.
    """
    start = random.randrange(len(clients))
    for attempt in itertools.count():
        live = [c for c in clients if c not in ledger.dead]
        client = live[(start + attempt) % len(live)]
        try:
            reply = await client.post("/v1/scores", json=body, headers=AUTH)
        except httpx.TransportError:
            reply = None
            if not resend:
                ledger.dead.add(client)
                ledger.unknown.append(body)
                return
        if reply is not None and reply.status_code == 200:
            if reply.json()["duplicate"]:
                ledger.duplicates += 1
            else:
                ledger.applied += 1
            ledger.acked[body["user_id"]] += body["score"]
            ledger.acked_matches.append((body["user_id"], body["match_id"]))
            return
        if reply is not None and reply.status_code == 422:
            ledger.refused += 1
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no definite answer for {body} (last: {reply and reply.text})")
        ledger.retries += 1
        ledger.failures.append("transport error" if reply is None else f"{reply.status_code} {reply.text[:200]}")
        await asyncio.sleep(0.05)


def next_delta(rng: random.Random, guess: int) -> int:
    """Steps that keep a player near 100 or 1000 and often carry them across."""
    boundary = 100 if guess < 550 else 1000
    if rng.random() < 0.1:  # the long jump between the two boundaries
        return 900 if boundary == 100 else -900
    return rng.randint(-25, 25) + (boundary - guess) // 4


async def run_load(
    urls: list[str], seconds: float, ledger: Ledger, on_tick=None, resend: bool = True, clients: int = CLIENTS
) -> None:
    workers = clients
    clients = [httpx.AsyncClient(base_url=u, timeout=10) for u in urls]
    stop_at = time.monotonic() + seconds
    guesses = {user: ledger.acked.get(user, 0) for user in PLAYERS}

    async def worker(n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < stop_at and not ledger.stop:
            user = rng.choice(PLAYERS)
            delta = next_delta(rng, guesses[user])
            guesses[user] = max(0, guesses[user] + delta)
            body = {"user_id": user, "match_id": f"m{next(ledger.match_ids)}", "score": delta}
            await send_until_answered(clients, body, ledger, stop_at + 60, resend=resend)

    try:
        tasks = [asyncio.create_task(worker(n)) for n in range(workers)]
        if on_tick is not None:
            tasks.append(asyncio.create_task(on_tick(stop_at)))
        await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()


def seed(cluster: Cluster, url: str, ledger: Ledger) -> None:
    events = []
    for i, user in enumerate(PLAYERS):
        score = (100 if i % 2 else 1000) + (i % 7) - 3
        events.append({"user_id": user, "match_id": "seed", "score": score})
        ledger.acked[user] += score
    with httpx.Client(base_url=url, timeout=30) as client:
        body = client.post("/v1/scores/batch", json={"events": events}, headers=AUTH).json()
    assert body["applied"] == len(PLAYERS)
