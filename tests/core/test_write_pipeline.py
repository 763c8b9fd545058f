"""The write pipeline in this process, over the real PostgreSQL and shards: how it
forms its groups (the linger for writers that come straight back) and which shards
a group reads.

Every group is really committed. Group sizes are read where the pipeline hands a
group to its commit; shard calls from the pipeline's own metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from router.boards import LEGACY
from router.core.shard_writes import WriteOutcome
from router.core.user_cache import UserShardCache
from router.core.write_pipeline import WritePipeline
from router.errors import RateLimited
from router.events import GroupCommit, ScoreEvent
from router.shards.client import ShardClients
from router.store.postgres import Store
from tests.cluster import Cluster, shard_map_for


class RecordingPipeline(WritePipeline):
    """The real pipeline, noting the size of each group it commits."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.groups: list[int] = []

    async def _commit(self, events: Sequence[ScoreEvent]) -> GroupCommit:
        self.groups.append(len(events))
        return await super()._commit(events)


def event(user: str, n: int, score: int = 10) -> ScoreEvent:
    now = datetime.now(UTC)
    return ScoreEvent("global", user, f"{user}-m{n}", "incr", score, now, LEGACY.board_periods(now))


def run_with_pipeline(
    cluster: Cluster, linger_s: float, scenario, pipeline_class: type[RecordingPipeline] = RecordingPipeline, **extra
) -> RecordingPipeline:
    async def main() -> RecordingPipeline:
        store = Store(cluster.dsn, pool_size=2, statement_timeout_ms=5000)
        shards = ShardClients(cluster.shard_map, read_deadline_s=2, write_deadline_s=2)
        pipeline = pipeline_class(
            store, shards, UserShardCache(1000), batch_max=500, flushers=1, linger_s=linger_s, **extra
        )
        await pipeline.start()
        try:
            await scenario(pipeline)
        finally:
            await pipeline.stop()
            await shards.close()
            store.close()
        return pipeline

    return asyncio.run(main())


async def closed_loop(pipeline: WritePipeline, writers: int, rounds: int) -> None:
    """Writers that send again as soon as they are answered, some a little later than others."""

    async def writer(i: int) -> None:
        for n in range(rounds):
            (outcome,) = await pipeline.submit(event(f"loop{i}", n))
            assert outcome.row.status == "applied"
            await asyncio.sleep(0.003 * i)

    await asyncio.gather(*(writer(i) for i in range(writers)))


def test_writers_that_come_straight_back_are_gathered_into_one_group(board: Cluster):
    pipeline = run_with_pipeline(board, 0.5, lambda p: closed_loop(p, writers=8, rounds=6))
    assert pipeline.groups == [8] * 6


def test_with_the_linger_off_the_same_writers_are_not_waited_for(board: Cluster):
    # LB_WRITE_LINGER_MS=0: groups take what is queued, so these writers split into
    # smaller groups — the contrast to the test above, and what the linger is for.
    pipeline = run_with_pipeline(board, 0.0, lambda p: closed_loop(p, writers=8, rounds=6))
    assert sum(pipeline.groups) == 48
    assert len(pipeline.groups) > 6, pipeline.groups


def test_a_lone_writer_is_never_held_back_by_the_linger(board: Cluster):
    async def lone(pipeline: WritePipeline) -> None:
        for n in range(5):
            # Far below the 5 s linger: a group never waits for writers it does not expect.
            await asyncio.wait_for(pipeline.submit(event("lone", n)), timeout=2)

    pipeline = run_with_pipeline(board, 5.0, lone)
    assert pipeline.groups == [1] * 5


def test_writers_that_do_not_come_back_are_waited_for_until_the_linger_runs_out(board: Cluster):
    lingered_before = REGISTRY.get_sample_value("lb_group_linger_seconds_count") or 0.0
    waited: list[float] = []

    async def one_returns(pipeline: WritePipeline) -> None:
        await asyncio.gather(*(pipeline.submit(event(f"once{i}", 0)) for i in range(4)))
        started = time.monotonic()
        await asyncio.wait_for(pipeline.submit(event("once0", 1)), timeout=3)
        waited.append(time.monotonic() - started)

    pipeline = run_with_pipeline(board, 0.3, one_returns)
    assert pipeline.groups == [4, 1]
    # It did wait for the other three (the linger's deadline), then committed alone.
    assert waited[0] >= 0.25, waited
    assert (REGISTRY.get_sample_value("lb_group_linger_seconds_count") or 0.0) == lingered_before + 1


def test_lingering_stops_when_the_writers_it_waits_for_keep_not_coming(board: Cluster):
    # Like players with think time: after each pair, one new writer comes at once and
    # the linger waits in vain for a second. Twenty such lingers would take 6 s.
    waits: list[float] = []

    async def pairs_then_one(pipeline: WritePipeline) -> None:
        for n in range(20):
            await asyncio.gather(*(pipeline.submit(event(f"pair{n}-{i}", 0)) for i in range(2)))
            started = time.monotonic()
            await pipeline.submit(event(f"single{n}", 0))
            waits.append(time.monotonic() - started)

    pipeline = run_with_pipeline(board, 0.3, pairs_then_one)
    assert pipeline.groups == [2, 1] * 20
    lingered = [w for w in waits if w >= 0.25]
    # Three vain lingers bring the odds below one half, then one try in eight.
    assert 3 <= len(lingered) <= 6, waits


def test_a_writer_back_after_a_pause_longer_than_the_linger_is_not_held_back(board: Cluster):
    waited: list[float] = []

    async def pause_then_write(pipeline: WritePipeline) -> None:
        await asyncio.gather(*(pipeline.submit(event(f"pause{i}", 0)) for i in range(4)))
        await asyncio.sleep(1.2)  # longer than the 1 s linger: the group of four is not coming back
        started = time.monotonic()
        await pipeline.submit(event("pause0", 1))
        waited.append(time.monotonic() - started)

    pipeline = run_with_pipeline(board, 1.0, pause_then_write)
    assert pipeline.groups == [4, 1]
    assert waited[0] < 0.9, waited


def test_a_writer_back_after_a_refused_group_and_a_pause_is_not_held_back(board: Cluster):
    # A group refused whole by the rate limits commits nothing and has no shard writes
    # to wait for; its writers were answered at once. One of them back after a pause
    # longer than the linger is not coming straight back either, and is not waited for.
    waited: list[float] = []

    async def refuse_first_four(requests):
        return [RateLimited("too many", 1) if user.startswith("limited") else None for _, user in requests]

    async def refused_then_pause(pipeline: WritePipeline) -> None:
        results = await asyncio.gather(
            *(pipeline.submit(event(f"limited{i}", 0)) for i in range(4)), return_exceptions=True
        )
        assert all(isinstance(r, RateLimited) for r in results), results
        await asyncio.sleep(1.2)  # longer than the 1 s linger
        started = time.monotonic()
        await pipeline.submit(event("after-pause", 0))
        waited.append(time.monotonic() - started)

    pipeline = run_with_pipeline(board, 1.0, refused_then_pause, admit=refuse_first_four)
    assert pipeline.groups == [1]  # the refused four never reached a commit
    assert waited[0] < 0.9, waited


class AnsweredLatePipeline(RecordingPipeline):
    """The real pipeline, with `delay_s` between a group's commit and its shard writes
    when the group has a user that `slow(user)` names: shards that take that long to answer."""

    def __init__(self, *args, delay_s: float, slow, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delay_s = delay_s
        self.slow = slow

    async def _to_shards(self, events, commit):
        if any(self.slow(e.user_id) for e in events):
            await asyncio.sleep(self.delay_s)
        return await super()._to_shards(events, commit)


def run_answered_late(cluster: Cluster, linger_s: float, scenario, *, delay_s: float, slow=lambda user: True):
    return run_with_pipeline(cluster, linger_s, scenario, AnsweredLatePipeline, delay_s=delay_s, slow=slow)


def test_the_linger_counts_from_the_answers_so_writers_held_up_by_their_shards_are_still_gathered(board: Cluster):
    # Each group's answers take 100 ms, twice the linger: were the linger counted from
    # the commit, it would be over before anyone could come back, and the writers would
    # split into a group of the first to return and one of the rest.
    pipeline = run_answered_late(board, 0.05, lambda p: closed_loop(p, writers=8, rounds=4), delay_s=0.1)
    assert pipeline.groups == [8] * 4


def test_writers_queued_behind_a_slow_group_wait_at_most_ten_lingers_for_it(board: Cluster):
    # The group of four is answered after 2 s (a shard slow to answer). A writer that
    # comes meanwhile is lingered for, since the four may come back; but a slow shard
    # must not hold up other writers' commits past ten times the linger (0.5 s here).
    waited: list[float] = []

    async def slow_group_then_other(pipeline: WritePipeline) -> None:
        slow = asyncio.gather(*(pipeline.submit(event(f"held{i}", 0)) for i in range(4)))
        await asyncio.sleep(0.2)  # the four are committed and waiting for their shard writes
        started = time.monotonic()
        await asyncio.wait_for(pipeline.submit(event("other", 0)), timeout=3)
        waited.append(time.monotonic() - started)
        await slow

    pipeline = run_answered_late(
        board, 0.05, slow_group_then_other, delay_s=2.0, slow=lambda user: user.startswith("held")
    )
    assert pipeline.groups == [4, 1]
    assert 0.45 <= waited[0] < 1.5, waited


# The test cluster's shards: s0 [0, 100), s1 [100, 1000), s2 [1000, inf).
TOP, MIDDLE = 5000, 500


def shard_calls() -> dict[str, float]:
    """Calls the pipelines of this process made per shard (any op), from its metrics."""
    calls: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "lb_shard_operations_total":
                shard = sample.labels["shard"]
                calls[shard] = calls.get(shard, 0.0) + sample.value
    return calls


def calls_during(cluster: Cluster, scenario) -> dict[str, float]:
    before = shard_calls()
    run_with_pipeline(cluster, 0.0, scenario)
    after = shard_calls()
    return {sid: after.get(sid, 0.0) - before.get(sid, 0.0) for sid in ("s0", "s1", "s2")}


def test_a_group_on_the_top_shard_reads_no_other_shard(board: Cluster):
    ranks: list[int | None] = []

    async def top_players(pipeline: WritePipeline) -> None:
        await pipeline.submit(event("top0", 0, TOP + 2))
        await pipeline.submit(event("top1", 0, TOP))
        ranks.append((await pipeline.submit(event("top2", 0, TOP + 1)))[0].rank)

    assert calls_during(board, top_players) == {"s0": 0, "s1": 0, "s2": 3}
    assert ranks == [2]


def test_a_group_on_a_middle_shard_reads_only_the_shards_above_it(board: Cluster):
    ranks: list[int | None] = []

    async def seed_then_middle(pipeline: WritePipeline) -> None:
        await asyncio.gather(*(pipeline.submit(event(f"high{i}", 0, TOP)) for i in range(2)))
        ranks.append((await pipeline.submit(event("mid", 0, MIDDLE)))[0].rank)

    # The seed's group on s2, then the middle player's: its add on s1 and s2's size.
    assert calls_during(board, seed_then_middle) == {"s0": 0, "s1": 1, "s2": 2}
    assert ranks == [3]


def moved_player(board: Cluster, seeds: dict[str, int], mover: str, scores: tuple[int, int]):
    """The shard calls of: one write per seed player, then the mover's two writes
    (`scores`, the second moving them); and the mover's second outcome."""
    answers: list[WriteOutcome] = []

    async def seed_then_move(pipeline: WritePipeline) -> None:
        for user, score in seeds.items():
            await pipeline.submit(event(user, 0, score))
        await pipeline.submit(event(mover, 0, scores[0]))
        answers.extend(await pipeline.submit(event(mover, 1, scores[1])))

    calls = calls_during(board, seed_then_move)
    (moved,) = answers
    return calls, moved


def test_a_player_moving_up_costs_one_call_per_shard(board: Cluster):
    calls, moved = moved_player(board, {"peak": TOP, "ridge": MIDDLE}, "climber", (50, 100))
    # peak: s2 alone. ridge: its add on s1 and s2's size. climber's first write: its
    # add on s0 and the sizes of s1 and s2. Its move to s1: the add on s1 and s2's size,
    # then the removal from s0; s1's size after the group came with its add.
    assert calls == {"s0": 2, "s1": 3, "s2": 4}
    assert moved.row.shard == "s1" and moved.row.prev_shard == "s0"
    assert (moved.rank, moved.previous_rank) == (3, 3)


def test_a_player_moving_down_costs_one_call_per_shard(board: Cluster):
    calls, moved = moved_player(board, {"summit": TOP, "floor": 10}, "faller", (MIDDLE, -MIDDLE + 20))
    # summit: s2 alone. floor: its add on s0 and the sizes of s1 and s2. faller's first
    # write: its add on s1 and s2's size. Its move to s0: the add on s0 and s2's size,
    # then the removal from s1, which returns s1's size after it.
    assert calls == {"s0": 2, "s1": 3, "s2": 4}
    assert moved.row.shard == "s0" and moved.row.prev_shard == "s1"
    assert (moved.rank, moved.previous_rank) == (2, 2)


def test_with_the_lowest_shard_down_writes_above_it_keep_their_ranks(board: Cluster):
    outcomes: list[WriteOutcome] = []

    async def write_top(pipeline: WritePipeline) -> None:
        outcomes.extend(await pipeline.submit(event("above-the-outage", 0, TOP)))

    board.shards[0].stop()
    try:
        run_with_pipeline(board, 0.0, write_top)
    finally:
        board.shards[0].start()
    (outcome,) = outcomes
    assert outcome.unavailable is None
    assert outcome.rank == 1


def test_a_write_placed_on_a_shard_this_router_has_not_heard_of_is_unavailable_not_lost(board: Cluster):
    # PostgreSQL's layout has s2; this router's map ends at s1 (its layout watcher
    # has not caught up). The write is committed; its answer names the shard.
    outcomes: list[WriteOutcome] = []

    async def main() -> None:
        store = Store(board.dsn, pool_size=2, statement_timeout_ms=5000)
        shards = ShardClients(shard_map_for(board.shards[:2], bounds=(0, 100)), read_deadline_s=2, write_deadline_s=2)
        pipeline = WritePipeline(store, shards, UserShardCache(1000), batch_max=500, flushers=1)
        await pipeline.start()
        try:
            outcomes.extend(await pipeline.submit(event("beyond-the-map", 0, TOP)))
        finally:
            await pipeline.stop()
            await shards.close()
            store.close()

    asyncio.run(main())
    (outcome,) = outcomes
    assert outcome.row.status == "applied" and outcome.row.shard == "s2"
    assert outcome.unavailable is not None and outcome.unavailable.shard_id == "s2"
    assert board.sql("SELECT user_id, score FROM player_scores WHERE user_id = 'beyond-the-map'") == [
        ("beyond-the-map", TOP)
    ]
