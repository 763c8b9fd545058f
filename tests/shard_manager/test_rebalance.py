"""Online rebalancing: plans from two maps, and applies while games keep writing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from router.shardmap import ShardMap, dump_shard_map, shard_map_from_dict
from router.store.layout import read_layout
from shard_manager.local.processes import free_port
from shard_manager.rebalance import (
    AddShards,
    MoveBoundary,
    Rebalancer,
    RebalanceRefused,
    RemoveShards,
    plan_steps,
)
from shard_manager.verify import verify_month
from tests.cluster import Cluster, running_cluster
from tests.invariants import assert_exact, wait_outbox_empty
from tests.load import AUTH, Ledger, run_load, seed


def layout(*shards: tuple[str, int], epoch: int = 1) -> ShardMap:
    """A map from (id, min_score) pairs; addresses follow the id."""
    entries = []
    for k, (shard_id, start) in enumerate(shards):
        end = shards[k + 1][1] if k + 1 < len(shards) else None
        port = 7000 + int(shard_id[1:])
        entries.append({"id": shard_id, "address": f"redis://127.0.0.1:{port}/0", "min_score": start, "max_score": end})
    return shard_map_from_dict({"epoch": epoch, "shards": entries})


# -- planning (pure) ------------------------------------------------------------------


def test_plan_moving_a_boundary_down_and_up():
    current = layout(("s0", 0), ("s1", 100), ("s2", 1000))
    assert plan_steps(current, layout(("s0", 0), ("s1", 50), ("s2", 1000))) == [
        MoveBoundary("s1", "s0", "s1", 50, 100, up=True)
    ]
    assert plan_steps(current, layout(("s0", 0), ("s1", 100), ("s2", 2000))) == [
        MoveBoundary("s2", "s2", "s1", 1000, 2000, up=False)
    ]


def test_plan_split_onto_a_new_shard():
    current = layout(("s0", 0), ("s1", 100), ("s2", 1000))
    steps = plan_steps(current, layout(("s0", 0), ("s1", 100), ("s3", 500), ("s2", 1000)))
    assert steps == [
        AddShards((("s3", "redis://127.0.0.1:7003/0"),)),
        MoveBoundary("s3", "s1", "s3", 500, 1000, up=True),
    ]


def test_plan_drain_a_shard_into_both_neighbours():
    current = layout(("s0", 0), ("s1", 100), ("s2", 1000))
    steps = plan_steps(current, layout(("s0", 0), ("s2", 500)))
    assert steps == [
        MoveBoundary("s1", "s1", "s0", 100, 500, up=False),
        MoveBoundary("s2", "s1", "s2", 500, 1000, up=True),
        RemoveShards(("s1",)),
    ]


def test_plan_moves_a_boundary_past_another_in_a_safe_order():
    current = layout(("s0", 0), ("s1", 10), ("s2", 20))
    steps = plan_steps(current, layout(("s0", 0), ("s1", 30), ("s2", 40)))
    assert [s.shard_id for s in steps] == ["s2", "s1"]


def test_plan_refuses_reordering_and_address_changes():
    current = layout(("s0", 0), ("s1", 100), ("s2", 1000))
    with pytest.raises(RebalanceRefused, match="order"):
        plan_steps(current, layout(("s0", 0), ("s2", 100), ("s1", 1000)))
    moved = shard_map_from_dict(
        {
            **current.to_dict(),
            "shards": [{**current.to_dict()["shards"][0], "address": "redis://10.0.0.9:1/0"}]
            + current.to_dict()["shards"][1:],
        }
    )
    with pytest.raises(RebalanceRefused, match="changed address"):
        plan_steps(current, moved)


def test_plan_of_the_same_map_is_empty():
    current = layout(("s0", 0), ("s1", 100), ("s2", 1000))
    assert plan_steps(current, layout(("s0", 0), ("s1", 100), ("s2", 1000), epoch=7)) == []


# -- applying online (real servers) --------------------------------------------------


@pytest.fixture(scope="module")
def rb_cluster() -> Iterator[Cluster]:
    """A cluster of its own (with a spare server): these tests change its layout."""
    with running_cluster("lb-rebalance-", redis_servers=4) as cluster:
        yield cluster


def target_file(cluster: Cluster, name: str, shards: list[tuple[int, int]]) -> tuple[Path, ShardMap]:
    """A shard map over the cluster's servers: (server index, min_score) in order."""
    entries = []
    for k, (index, start) in enumerate(shards):
        end = shards[k + 1][1] if k + 1 < len(shards) else None
        entries.append({"id": f"s{index}", "address": cluster.shards[index].url, "min_score": start, "max_score": end})
    shard_map = shard_map_from_dict({"epoch": 1, "shards": entries})
    path = cluster.workdir / name
    path.write_text(dump_shard_map(shard_map))
    return path, shard_map


def manager(cluster: Cluster, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "LB_DATABASE_URL": cluster.dsn, "LB_SHARDS_FILE": str(cluster.shards_file)}
    return subprocess.Popen(
        [sys.executable, "-m", "shard_manager", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def apply_during_load(cluster: Cluster, routers, target: ShardMap, ledger: Ledger) -> None:
    applied: list = []

    def rebalance_midway() -> None:
        time.sleep(1.0)
        rebalancer = Rebalancer(cluster.dsn, step_players=20, settle_s=1.5)
        try:
            applied.append(rebalancer.apply(target))
        finally:
            rebalancer.close()

    worker = threading.Thread(target=rebalance_midway)
    worker.start()
    asyncio.run(run_load([r.url for r in routers], 6.0, ledger, clients=16))
    worker.join(timeout=120)
    assert applied, "apply did not finish"
    assert applied[0].shard_map.same_layout(target)


def check_exact(cluster: Cluster, routers, ledger: Ledger) -> None:
    wait_outbox_empty(cluster, timeout=15)
    current = read_layout(cluster.dsn)
    assert current is not None and current.move is None and current.target is None
    month = datetime.now(UTC).date().replace(day=1)
    report = verify_month(cluster.dsn, current.shard_map, month)
    assert report.ok, report.render()
    for router in routers:
        with router.client() as api:
            assert_exact(cluster, api, dict(ledger.acked), shard_map=current.shard_map)
    assert ledger.retries == 0, f"writes retried during the rebalance: {ledger.failures[:5]}"


def test_boundary_move_split_and_drain_while_games_write(rb_cluster: Cluster):
    cluster = rb_cluster
    cluster.reset()
    routers = [cluster.router(extra_env={"LB_LAYOUT_POLL_S": "0.2"}) for _ in range(2)]
    try:
        ledger = Ledger()
        seed(cluster, routers[0].url, ledger)
        # Bystanders spread over every range, so every move has players to move.
        spread = [{"user_id": f"spread{i:03d}", "match_id": "m", "score": i * 13} for i in range(160)]
        with routers[0].client() as api:
            assert api.post("/v1/scores/batch", json={"events": spread}, headers=AUTH).json()["applied"] == 160
        ledger.acked.update({e["user_id"]: e["score"] for e in spread})

        # (a) the 100 boundary moves down to 50: [50, 100) goes from s0 up to s1
        _, target = target_file(cluster, "a.yaml", [(0, 0), (1, 50), (2, 1000)])
        apply_during_load(cluster, routers, target, ledger)
        check_exact(cluster, routers, ledger)

        # (b) a new, empty server s3 takes the top of s1's range
        _, target = target_file(cluster, "b.yaml", [(0, 0), (1, 50), (3, 500), (2, 1000)])
        apply_during_load(cluster, routers, target, ledger)
        check_exact(cluster, routers, ledger)
        with routers[0].client() as api:
            shards = api.get("/v1/admin/shards", headers={"X-Admin-Token": "test-admin-token"}).json()
        assert [s["id"] for s in shards["shards"]] == ["s0", "s1", "s3", "s2"]
        assert shards["shards"][2]["players"] > 0  # routers picked up the new shard without restart

        # (c) s1 is drained into its neighbours and leaves the layout
        _, target = target_file(cluster, "c.yaml", [(0, 0), (3, 300), (2, 1000)])
        apply_during_load(cluster, routers, target, ledger)
        check_exact(cluster, routers, ledger)
        from router.shards.keys import zset_key

        assert cluster.redis(1).zcard(zset_key(datetime.now(UTC).strftime("%Y-%m"))) == 0
    finally:
        for router in routers:
            router.stop()


def test_apply_killed_midway_resumes_to_the_same_end_state(rb_cluster: Cluster):
    cluster = rb_cluster
    cluster.reset()
    start = read_layout(cluster.dsn).shard_map
    router = cluster.router(extra_env={"LB_LAYOUT_POLL_S": "0.2"})
    try:
        events = [{"user_id": f"k{i:04d}", "match_id": "m", "score": i % 2000} for i in range(3000)]
        with router.client() as api:
            for start_at in range(0, len(events), 1000):
                chunk = {"events": events[start_at : start_at + 1000]}
                assert api.post("/v1/scores/batch", json=chunk, headers=AUTH).json()["applied"] == 1000
        # Move a wide range in small steps so the kill lands mid-move.
        indexes = [int(s.id[1:]) for s in start.shards]
        path, target = target_file(
            cluster,
            "kill.yaml",
            [(indexes[0], 0), (indexes[1], 1500)] + [(i, 1900 + k) for k, i in enumerate(indexes[2:])],
        )
        first = manager(cluster, "apply", str(path), "--step-players", "10")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = read_layout(cluster.dsn)
            if current.move and current.move.get("cursors"):
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        stuck = read_layout(cluster.dsn)
        assert stuck.move is not None and stuck.target is not None, "the kill did not land mid-move"

        other = manager(cluster, "apply", str(path))
        out, err = other.communicate(timeout=120)
        assert other.returncode == 0, out + err
        final = read_layout(cluster.dsn)
        assert final.move is None and final.target is None
        assert final.shard_map.same_layout(target)
        wait_outbox_empty(cluster, timeout=15)
        with router.client() as api:
            assert_exact(cluster, api, {e["user_id"]: e["score"] for e in events}, shard_map=final.shard_map)
    finally:
        router.stop()


def test_refusals_leave_the_layout_untouched(rb_cluster: Cluster):
    cluster = rb_cluster
    before = read_layout(cluster.dsn)
    bad = cluster.workdir / "bad.yaml"
    bad.write_text("epoch: 1\nshards:\n  - {id: s0, address: 'redis://127.0.0.1:1/0', min_score: 5, max_score: null}\n")
    result = manager(cluster, "apply", str(bad))
    _, err = result.communicate(timeout=60)
    assert result.returncode == 2 and "shards[0].min_score" in err
    dead_port = free_port()
    ids = [s.id for s in before.shard_map.shards]
    unreachable = cluster.workdir / "unreachable.yaml"
    unreachable.write_text(
        dump_shard_map(
            shard_map_from_dict(
                {
                    "epoch": 1,
                    "shards": [
                        {"id": ids[0], "address": before.shard_map.shards[0].address, "min_score": 0, "max_score": 10},
                        {"id": "s9", "address": f"redis://127.0.0.1:{dead_port}/0", "min_score": 10, "max_score": None},
                    ],
                }
            )
        )
    )
    result = manager(cluster, "apply", str(unreachable))
    _, err = result.communicate(timeout=60)
    assert result.returncode == 2 and "unreachable" in err
    after = read_layout(cluster.dsn)
    assert after.shard_map.bounds() == before.shard_map.bounds() and after.epoch == before.epoch


def test_plan_is_a_dry_run(rb_cluster: Cluster):
    cluster = rb_cluster
    before = read_layout(cluster.dsn)
    first, *rest = before.shard_map.shards
    entries = [
        {"id": s.id, "address": s.address, "min_score": s.range.start, "max_score": s.range.end}
        for s in before.shard_map.shards
    ]
    entries[0]["max_score"] = entries[1]["min_score"] = entries[1]["min_score"] + 7
    path = cluster.workdir / "plan.yaml"
    path.write_text(dump_shard_map(shard_map_from_dict({"epoch": 1, "shards": entries})))
    result = manager(cluster, "plan", str(path))
    out, err = result.communicate(timeout=60)
    assert result.returncode == 0, err
    assert "move scores" in out and "Nothing was changed" in out
    assert read_layout(cluster.dsn).epoch == before.epoch


def test_another_apply_running_is_refused(rb_cluster: Cluster):
    import psycopg2

    from shard_manager.rebalance import APPLY_LOCK

    holder = psycopg2.connect(rb_cluster.dsn)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (APPLY_LOCK,))
        current = read_layout(rb_cluster.dsn).shard_map
        rebalancer = Rebalancer(rb_cluster.dsn)
        try:
            with pytest.raises(RebalanceRefused, match="another"):
                rebalancer.apply(ShardMap(1, current.shards))
        finally:
            rebalancer.close()
    finally:
        holder.close()


def test_suggest_splits_players_evenly(rb_cluster: Cluster):
    cluster = rb_cluster
    cluster.reset()
    router = cluster.router()
    try:
        events = [{"user_id": f"q{i}", "match_id": "m", "score": i * 3} for i in range(900)]
        with router.client() as api:
            api.post("/v1/scores/batch", json={"events": events}, headers=AUTH)
    finally:
        router.stop()
    out_file = cluster.workdir / "suggested.yaml"
    result = manager(cluster, "suggest", "--shards", "3", "--write", str(out_file))
    _, err = result.communicate(timeout=60)
    assert result.returncode == 0, err
    from router.shardmap import load_shard_map

    suggested = load_shard_map(out_file)
    starts = [s.range.start for s in suggested.shards]
    assert starts[0] == 0 and len(starts) == 3
    per_shard = [sum(1 for i in range(900) if suggested.shard_for_score(i * 3).id == s.id) for s in suggested.shards]
    assert all(abs(n - 300) <= 2 for n in per_shard), per_shard
