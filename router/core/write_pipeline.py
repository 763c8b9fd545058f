"""The write path: group commit in PostgreSQL, then versioned states onto the shards.

1. Concurrent requests queue up and are committed together: one PostgreSQL
   transaction per group (lb_apply_events), which orders each player's writes
   under their row lock, detects duplicates, computes the new score, version,
   tie-break seq and target shard, and records one outbox row for the group.
2. Only then are the shards touched, with states rather than deltas
   (router.core.shard_writes): first the add on each player's new shard, then the
   removal from the old one. A crash in between leaves a player on two shards
   (recoverable: the newer version wins and the reconciler removes the other),
   never on none. Each group's shard work runs in a task of its own beside the
   next group's commit.
3. Once the shards hold every state of the group, its outbox row is acknowledged;
   anything left in the outbox (router crash, shard outage) is finished by the
   reconciler.

A 2xx is sent only after step 1 committed, so nothing acknowledged can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from router.core.shard_writes import ShardWriter, WriteOutcome
from router.core.user_cache import UserShardCache
from router.errors import LeaderboardError
from router.events import GroupCommit, ScoreEvent
from router.metrics import GROUP_EVENTS, GROUP_LINGER_SECONDS, GROUP_SECONDS
from router.shards.client import ShardClients
from router.store.postgres import Store

log = logging.getLogger(__name__)


async def _nothing() -> None:
    return None


def _answered_at(answering: asyncio.Task[float] | None) -> float | None:
    """When the writers of a group were answered (loop time); None while they wait."""
    if answering is None or not answering.done() or answering.cancelled():
        return None
    return answering.result()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# Counts a group of queued writes, (sender, user_id) each, against the rate limits:
# the error each refused write must get, None for the others.
Admission = Callable[[Sequence[tuple[str, str]]], Awaitable[Sequence[LeaderboardError | None]]]


@dataclass(frozen=True, slots=True)
class _Queued:
    event: ScoreEvent
    sender: str
    future: asyncio.Future[list[WriteOutcome]]


def _fail(batch: Sequence[_Queued], exc: Exception) -> None:
    if not isinstance(exc, LeaderboardError):
        log.error("group commit failed", exc_info=exc)
    for queued in batch:
        if not queued.future.done():
            queued.future.set_exception(exc)


class _LingerOdds:
    """Whether lingering pays: a moving average of recent lingers that brought at
    least half the writes they waited for (1) or fewer (0). While it is below one half
    only every `probe_every`-th chance is taken, so a change back to writers that
    come straight back is noticed."""

    def __init__(self, weight: float = 0.25, probe_every: int = 8) -> None:
        self.odds = 1.0
        self.weight = weight
        self.probe_every = probe_every
        self._passed = 0

    def worth_trying(self) -> bool:
        if self.odds >= 0.5:
            return True
        self._passed += 1
        if self._passed < self.probe_every:
            return False
        self._passed = 0
        return True

    def record(self, *, paid: bool) -> None:
        self.odds += self.weight * (float(paid) - self.odds)


class WritePipeline:
    def __init__(
        self,
        store: Store,
        shards: ShardClients,
        cache: UserShardCache,
        *,
        batch_max: int,
        flushers: int,
        linger_s: float = 0.0,
        ack_interval_s: float = 0.1,
        admit: Admission | None = None,
        max_groups_on_shards: int = 64,
    ) -> None:
        self.store = store
        self.shards = shards
        self.cache = cache
        self.shard_writer = ShardWriter(shards, cache)
        self.batch_max = batch_max
        self.flushers = flushers
        self.linger_s = linger_s
        # However long the last group's answers take (a shard slow to answer), the
        # writers queued meanwhile wait for them no longer than this.
        self.linger_cap_s = 10 * linger_s
        self.ack_interval_s = ack_interval_s
        self.admit = admit
        self.max_groups_on_shards = max_groups_on_shards
        # Committed groups whose states are on their way to the shards.
        self._on_shards: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        # While a flusher lingers: resolved once the queue holds `_wanted` writes.
        self._enough: asyncio.Future[None] | None = None
        self._wanted = 0
        self._linger_odds = _LingerOdds()
        self._tasks: list[asyncio.Task[None]] = []
        # Outbox rows of groups whose every state is on the shards, to acknowledge.
        self._finished: list[int] = []
        self.on_unknown_shard: Callable[[], Awaitable[None]] = _nothing

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flush_loop()) for _ in range(self.flushers)]
        self._tasks.append(asyncio.create_task(self._ack_loop()))

    async def stop(self) -> None:
        """Finish every queued event, acknowledge the outbox, then stop."""
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        await self._queue.join()
        while self._on_shards:
            await asyncio.wait(self._on_shards)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(LeaderboardError):
            await self._flush_acks()

    async def submit(self, event: ScoreEvent, sender: str = "") -> list[WriteOutcome]:
        """Commit one event with the next group; its outcome in each window of its board.
        `sender` (the game token) is what `admit` counts it against, with the rest of
        the group, in one call."""
        future: asyncio.Future[list[WriteOutcome]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Queued(event, sender, future))
        if self._enough is not None and self._queue.qsize() >= self._wanted:
            _resolve(self._enough)
        return await future

    async def submit_batch(self, events: Sequence[ScoreEvent]) -> list[list[WriteOutcome]]:
        """A batch from one caller is already a group: commit it directly, in chunks."""
        outcomes: list[list[WriteOutcome]] = []
        for start in range(0, len(events), self.batch_max):
            outcomes += await self.commit_group(events[start : start + self.batch_max])
        return outcomes

    async def _flush_loop(self) -> None:
        answered = 0
        answering: asyncio.Task[float] | None = None
        while True:
            batch = await self._next_group(answered, answering)
            try:
                answering = await self._commit_queued(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
            answered = len(batch)

    async def _next_group(self, answered: int, answering: asyncio.Task[float] | None) -> list[_Queued]:
        """Everything queued, after waiting for the writers of the group just committed
        (`answered` of them; `answering` sends their answers) if they look like coming
        straight back: up to `linger_s` after their answers went out, and never more
        than `linger_cap_s` in all.

        Writers that wait for each answer before sending again (a game service's
        sender loop, a benchmark) otherwise split into two halves that take turns:
        one queues while the other's group commits, so every group is half as large
        as it could be. A group's fixed cost (PostgreSQL's 0.4-0.6 ms per call, the
        thread hop, one Redis call per shard and one for the rate limits) dominates a
        small group, so waiting about a millisecond for the other half costs less
        than it saves; the wait ends as soon as they are all in. It is counted from
        their answers, not from the commit: under load a group's shard writes and
        answers take longer than the linger, and a linger counted from the commit was
        over before any of them could come back (at 64 connections on two cores groups
        then stayed at the half, 14-16 writes); a shard slow to answer holds the
        next group up by at most `linger_cap_s`. Writers with think
        time between writes (players' clients) do not come straight back, and a
        linger would only add its whole length to their latency: it mostly stops
        while recent lingers brought fewer than half the writes they waited for
        (`_LingerOdds`).
        """
        loop = asyncio.get_running_loop()
        expected = self._queue.qsize() + answered
        idle_since = loop.time()
        batch = [await self._queue.get()]
        # No task: the last group's writers were answered (or failed) before this wait began.
        answered_at = idle_since if answering is None else _answered_at(answering)
        if answered_at is not None and loop.time() - max(idle_since, answered_at) > self.linger_s:
            # Nobody came back within the linger of their answer: these writers are
            # not a closed loop (or load has dropped), and waiting would only add latency.
            expected = 1
        self._take_queued(batch)
        expected = min(expected, self.batch_max)
        if self.linger_s > 0 and len(batch) < expected and self._enough is None and self._linger_odds.worth_trying():
            lingered = loop.time()
            enough = self._enough = loop.create_future()
            self._wanted = expected - len(batch)
            timers = [loop.call_later(self.linger_cap_s, _resolve, enough)]

            def clock_from_answers(_: object = None) -> None:
                # The writers waited for can only come back once they have their answers.
                since = loop.time() - (_answered_at(answering) or loop.time())
                timers.append(loop.call_later(max(0.0, self.linger_s - since), _resolve, enough))

            if answering is None or answering.done():
                clock_from_answers()
            else:
                answering.add_done_callback(clock_from_answers)
            try:
                await enough
            finally:
                if answering is not None:
                    answering.remove_done_callback(clock_from_answers)
                for timer in timers:
                    timer.cancel()
                self._enough = None
            GROUP_LINGER_SECONDS.observe(loop.time() - lingered)
            waited_for, before = self._wanted, len(batch)
            self._take_queued(batch)
            self._linger_odds.record(paid=2 * (len(batch) - before) >= waited_for)
        return batch

    def _take_queued(self, batch: list[_Queued]) -> None:
        while len(batch) < self.batch_max and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _commit_queued(self, batch: list[_Queued]) -> asyncio.Task[float] | None:
        """Commits the group, then hands its shard work to a task of its own and returns:
        the next group commits while this one's states go to the shards, so a shard
        that is slow to answer (up to its write deadline) holds up only the writers of
        the groups that need it, never the group commits behind them."""
        try:
            if self.admit is not None:
                # Before the commit, so a refused write changes nothing; one call for
                # the group instead of one per request is a tenth of a write's CPU.
                refusals = await self.admit([(queued.sender, queued.event.user_id) for queued in batch])
                for queued, refusal in zip(batch, refusals, strict=True):
                    if refusal is not None and not queued.future.done():
                        queued.future.set_exception(refusal)
                batch = [queued for queued, refusal in zip(batch, refusals, strict=True) if refusal is None]
                if not batch:
                    return None
            events = [queued.event for queued in batch]
            commit = await self._commit(events)
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
            _fail(batch, exc)
            return None
        while len(self._on_shards) >= self.max_groups_on_shards:
            await asyncio.wait(self._on_shards, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._finish_queued(batch, events, commit))
        self._on_shards.add(task)
        task.add_done_callback(self._on_shards.discard)
        return task

    async def _finish_queued(self, batch: list[_Queued], events: Sequence[ScoreEvent], commit: GroupCommit) -> float:
        """Answers the group's writers once the shards hold its states; returns when (loop time)."""
        try:
            outcomes = await self._to_shards(events, commit)
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
            _fail(batch, exc)
        else:
            for queued, outcome in zip(batch, outcomes, strict=True):
                if not queued.future.done():
                    queued.future.set_result(outcome)
        return asyncio.get_running_loop().time()

    async def commit_group(self, events: Sequence[ScoreEvent]) -> list[list[WriteOutcome]]:
        return await self._to_shards(events, await self._commit(events))

    async def _commit(self, events: Sequence[ScoreEvent]) -> GroupCommit:
        started = time.perf_counter()
        commit = await self.store.apply_events(events)
        GROUP_SECONDS.observe(time.perf_counter() - started)
        GROUP_EVENTS.observe(len(events))
        return commit

    async def _to_shards(self, events: Sequence[ScoreEvent], commit: GroupCommit) -> list[list[WriteOutcome]]:
        if any(
            row.shard is not None and row.shard not in self.shards.shard_map.ids for rows in commit.rows for row in rows
        ):
            # PostgreSQL placed a player on a shard this process has not heard of yet:
            # a rebalance added it. Catch up before touching the shards.
            await self.on_unknown_shard()
        outcomes = [[WriteOutcome(event, row) for row in rows] for event, rows in zip(events, commit.rows, strict=True)]
        if await self.shard_writer.apply([o for windows in outcomes for o in windows]) and commit.outbox_id is not None:
            self._finished.append(commit.outbox_id)
        return outcomes

    async def _ack_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ack_interval_s)
            try:
                await self._flush_acks()
            except LeaderboardError as exc:
                log.warning("outbox acknowledgement deferred: %s", exc)

    async def _flush_acks(self) -> None:
        if not self._finished:
            return
        finished, self._finished = self._finished, []
        try:
            await self.store.ack_outbox(finished)
        except LeaderboardError:
            # Keep them for the next try; if they are lost the reconciler re-checks those groups.
            self._finished += finished
            raise
