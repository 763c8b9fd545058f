"""Several router processes, many clients, players pushed back and forth across boundaries."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.cluster import Cluster
from tests.invariants import assert_exact, wait_outbox_empty
from tests.load import AUTH, Ledger, run_load, seed


@pytest.fixture
def two_routers(board: Cluster):
    routers = [board.router(), board.router()]
    yield routers
    for r in routers:
        r.stop()


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
