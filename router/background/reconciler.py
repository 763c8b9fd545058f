"""Finishes Redis work that a committed write left undone.

A router that crashes between its PostgreSQL commit and its shard writes, or a
shard that is down when a write lands, leaves the group's row in the outbox.
Every router runs this loop; it takes outbox rows older than `settle_s` (so it
does not race a healthy router still finishing them), checks what the shards
hold for each of their players, re-applies the committed state where they
differ, and acknowledges the rows whose players are all in place.
Applying a versioned state twice is harmless, so several routers reconciling the
same player at once cannot do damage, only repeat work.

Bound: a change is on the shards within settle_s + interval_s (+ one cycle's work)
of its commit, as long as the shards it needs are up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

from router.aio.periodic import Periodic
from router.core.player_admin import clean_shards
from router.core.shard_writes import put_committed
from router.core.user_cache import UserShardCache
from router.errors import ShardUnavailable
from router.events import PlayerRow
from router.metrics import RECONCILER_BACKLOG, RECONCILER_REPAIRED
from router.shards.client import ShardClients
from router.shards.state import decode
from router.store.postgres import Store

log = logging.getLogger(__name__)


def _parse(entry: str | None) -> tuple[int, bool]:
    """(version, on the board) from a state-hash entry; (-1, False) if the shard never saw the player."""
    state = decode(entry)
    return (-1, False) if state is None else (state.version, state.on_board)


class Reconciler:
    def __init__(
        self,
        store: Store,
        shards: ShardClients,
        cache: UserShardCache,
        *,
        interval_s: float,
        settle_s: float,
        batch: int = 1000,
    ) -> None:
        self.store = store
        self.shards = shards
        self.cache = cache
        self.interval_s = interval_s
        self.settle_s = settle_s
        self.batch = batch
        self._loop = Periodic("reconciler", self.run_once, interval_s, first_now=True)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self) -> int:
        """One pass over the outbox (and the admin actions' shard work); returns how many
        players were repaired."""
        await self._clean_up()
        work = await self.store.unfinished(self.settle_s, self.batch)
        RECONCILER_BACKLOG.set(len(work))
        if not work:
            return 0
        # A player named by several rows is checked once.
        by_period: dict[str, dict[tuple[str, str], PlayerRow]] = defaultdict(dict)
        for players in work.values():
            for row in players:
                by_period[row.board_period][(row.board_period, row.user_id)] = row
        repaired = 0
        settled: set[tuple[str, str]] = set()
        for board_period, period_rows in by_period.items():
            fixed, in_place = await self._reconcile_period(board_period, list(period_rows.values()))
            repaired += fixed
            settled.update(in_place)
        done = [
            outbox_id
            for outbox_id, players in work.items()
            if all((row.board_period, row.user_id) in settled for row in players)
        ]
        await self.store.ack_outbox(done)
        RECONCILER_REPAIRED.inc(repaired)
        if repaired:
            log.info("reconciler repaired %d player(s)", repaired)
        return repaired

    async def _clean_up(self) -> None:
        """Admin actions' tombstones and purges, done again once they are older than the
        settle time (an apply in flight when the action committed has landed or failed
        by then), on every shard; a row goes once every shard took it."""
        done = []
        for cleanup in await self.store.cleanups_due(self.settle_s):
            if not await clean_shards(self.shards, self.cache, cleanup):
                done.append(cleanup.id)
        await self.store.finish_cleanups(done)

    async def _reconcile_period(
        self, board_period: str, rows: Sequence[PlayerRow]
    ) -> tuple[int, list[tuple[str, str]]]:
        """Repairs what differs; returns how many were repaired and which players are now in place."""
        ids = self.shards.shard_map.ids
        rows = [r for r in rows if r.shard in ids]
        users = [r.user_id for r in rows]
        answers = await asyncio.gather(
            *(self.shards.states(sid, board_period, users) for sid in ids), return_exceptions=True
        )
        down = {sid for sid, a in zip(ids, answers, strict=True) if isinstance(a, ShardUnavailable)}
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, ShardUnavailable):
                raise answer
        entries = {sid: a for sid, a in zip(ids, answers, strict=True) if sid not in down}

        settled: list[tuple[str, str]] = []
        broken: list[PlayerRow] = []
        for i, row in enumerate(rows):
            if down:
                # Cannot see every shard: repair what we can next cycle, once they are back.
                continue
            target_version, _ = _parse(entries[row.shard][i])
            strays = [
                sid
                for sid in ids
                if sid != row.shard and _parse(entries[sid][i])[1] and _parse(entries[sid][i])[0] < row.version
            ]
            if target_version >= row.version and not strays:
                settled.append((row.board_period, row.user_id))
            else:
                broken.append(row)
        if not broken:
            return 0, settled
        in_place, _ = await put_committed(self.shards, self.cache, broken)
        settled += [(row.board_period, row.user_id) for row in in_place]
        return len(in_place), settled
