"""Several router processes, many clients, players pushed back and forth across boundaries."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict

import httpx
import pytest

from tests.cluster import GAME_TOKEN, Cluster
from tests.invariants import assert_exact, wait_outbox_empty

AUTH = {"X-Game-Service-Token": GAME_TOKEN}
PLAYERS = [f"c{i:03d}" for i in range(200)]
CLIENTS = 32


@pytest.fixture
def two_routers(board: Cluster):
    routers = [board.router(), board.router()]
    yield routers
    for r in routers:
        r.stop()


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
        await asyncio.sleep(0.05)


def next_delta(rng: random.Random, guess: int) -> int:
    """Steps that keep a player near 100 or 1000 and often carry them across."""
    boundary = 100 if guess < 550 else 1000
    if rng.random() < 0.1:  # the long jump between the two boundaries
        return 900 if boundary == 100 else -900
    return rng.randint(-25, 25) + (boundary - guess) // 4


async def run_load(urls: list[str], seconds: float, ledger: Ledger, on_tick=None, resend: bool = True) -> None:
    clients = [httpx.AsyncClient(base_url=u, timeout=10) for u in urls]
    stop_at = time.monotonic() + seconds
    guesses = dict.fromkeys(PLAYERS, 0)

    async def worker(n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < stop_at and not ledger.stop:
            user = rng.choice(PLAYERS)
            delta = next_delta(rng, guesses[user])
            guesses[user] = max(0, guesses[user] + delta)
            body = {"user_id": user, "match_id": f"m{next(ledger.match_ids)}", "score": delta}
            await send_until_answered(clients, body, ledger, stop_at + 60, resend=resend)

    try:
        tasks = [asyncio.create_task(worker(n)) for n in range(CLIENTS)]
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


def test_two_routers_32_clients_boundary_crossings_stay_exact(board: Cluster, two_routers):
    ledger = Ledger()
    seed(board, two_routers[0].url, ledger)
    asyncio.run(run_load([r.url for r in two_routers], 10.0, ledger))
    assert ledger.applied > 1000, f"too little load to mean anything: {ledger.applied}"
    wait_outbox_empty(board, timeout=10)
    with two_routers[1].client() as api:
        assert_exact(board, api, {u: s for u, s in ledger.acked.items()})
    (crossings,) = board.sql("SELECT count(*) FROM player_scores WHERE version > 1")[0]
    assert crossings > 100


def test_router_killed_mid_load_loses_nothing_and_reconciles(board: Cluster, two_routers):
    ledger = Ledger()
    seed(board, two_routers[0].url, ledger)
    victim = two_routers[0]
    killed: list[bool] = []

    async def kill_midway(stop_at: float) -> None:
        await asyncio.sleep(4)
        victim.kill()  # SIGKILL: no shutdown, no flush; whatever was in flight is cut
        killed.append(True)
        # Stop writing at once: later writes to the same players would repair them as a
        # side effect, and this test is about what heals when no write comes.
        ledger.stop = True

    # Requests cut by the kill are not resent: whatever the victim committed and did
    # not put on the shards can only get there through the reconciler.
    asyncio.run(run_load([r.url for r in two_routers], 8.0, ledger, on_tick=kill_midway, resend=False))
    assert killed and ledger.unknown, "the kill cut no request; the test proved nothing"
    wait_outbox_empty(board, timeout=15)  # reconciler: every 0.2 s, once a change is 0.5 s old
    recorded = set(board.sql("SELECT user_id, match_id FROM score_events"))
    assert set(ledger.acked_matches) <= recorded, "an acknowledged event is missing from PostgreSQL"
    with two_routers[1].client() as api:
        assert_exact(board, api)  # the shards hold exactly what PostgreSQL committed


def test_same_match_id_sent_concurrently_counts_once(board: Cluster, two_routers):
    async def race() -> list[bool]:
        clients = [httpx.AsyncClient(base_url=r.url, timeout=10) for r in two_routers]
        try:
            duplicates = []
            for n in range(40):
                body = {"user_id": f"racer{n % 4}", "match_id": f"shared-{n}", "score": 7}
                replies = await asyncio.gather(*(c.post("/v1/scores", json=body, headers=AUTH) for c in clients * 2))
                assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
                duplicates.append([r.json()["duplicate"] for r in replies])
            return duplicates
        finally:
            for c in clients:
                await c.aclose()

    outcomes = asyncio.run(race())
    assert all(flags.count(False) == 1 for flags in outcomes), outcomes
    wait_outbox_empty(board, timeout=10)
    with two_routers[1].client() as api:
        assert_exact(board, api, {f"racer{k}": 70 for k in range(4)})
    assert board.sql("SELECT count(*) FROM score_events") == [(40,)]
