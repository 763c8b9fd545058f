"""Self-healing: a shard that restarted or lost its data is repaired from PostgreSQL,
by the routers, with no operator and with writes going on.

Every shard carries a marker naming the run of redis-server (its run_id) whose
contents were last checked against PostgreSQL. Each router looks at every shard
every `interval_s`:

- marker == run_id: nothing to do;
- marker names another run: the server restarted, and may have lost the last
  second of its AOF (appendfsync everysec) or more;
- no marker: the data is gone (FLUSHALL, an empty replacement at the same address,
  a lost disk) or the shard is new. If its boards are empty while PostgreSQL places
  players on it, its reads are refused (503 naming the shard) until the repair ends:
  every rank below it would be wrong. Writes go on to it meanwhile.

A repair makes the shard agree with PostgreSQL for every live board period, in chunks: it
applies the committed state of every player PostgreSQL places on the shard, then
scans the shard's members and writes a tombstone for each one PostgreSQL places
elsewhere. Both are versioned applies, like the reconciler's, so writes landing at
the same time cannot be undone by them. Then it sets the marker to the run it
checked. One router repairs a shard at a time (a lease on the shard, renewed each
chunk); the progress is kept on the shard, so a router that takes over after one
died resumes where it stopped instead of repeating the repair.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import datetime

from router.aio.periodic import Periodic
from router.errors import LeaderboardError, StoreUnavailable
from router.events import PlayerRow
from router.metrics import SHARD_REPAIR_PLAYERS, SHARD_REPAIRING, SHARD_REPAIRS
from router.shards.client import ShardClients
from router.shards.protocol import PlayerState, player_state, tombstone
from router.store.postgres import Store

log = logging.getLogger(__name__)

LOST_DATA = "lost its data; its players are being restored from PostgreSQL"


def _state(row: PlayerRow) -> PlayerState:
    return player_state(row.user_id, row.version, row.score, row.seq, row.metadata)


class _LeaseLost(Exception):
    """Another router holds the shard's repair lease now (ours expired)."""


class ShardHealer:
    def __init__(
        self,
        store: Store,
        shards: ShardClients,
        now: Callable[[], datetime],
        live_board_periods: Callable[[datetime], list[str]],
        *,
        interval_s: float,
        chunk: int,
        lease_s: float = 10.0,
    ) -> None:
        """`live_board_periods`: every board period that takes events at a moment (of every open board)."""
        self.store = store
        self.shards = shards
        self.now = now
        self.live_board_periods = live_board_periods
        self.chunk = chunk
        self.lease_s = lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # What /readyz shows per shard: "checked", or what is being done about it.
        self.status: dict[str, str] = {}
        self._repairs: dict[str, asyncio.Task[None]] = {}
        self._loop = Periodic("self-healing", self.check_once, interval_s, first_now=True)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        for task in self._repairs.values():
            task.cancel()
        await asyncio.gather(*self._repairs.values(), return_exceptions=True)

    async def check_once(self) -> None:
        """Look at every shard once; start a repair where one is needed and no router runs it."""
        ids = self.shards.shard_map.ids
        for gone in set(self.shards.unready) - set(ids):
            self.shards.unready.pop(gone, None)
        await asyncio.gather(*(self._check(shard_id) for shard_id in ids))

    async def wait_repairs(self) -> None:
        await asyncio.gather(*self._repairs.values(), return_exceptions=True)

    async def _periods(self) -> list[str]:
        """Every live board period of every open board, in a fixed order (a repair's progress
        names the one it is in)."""
        live = sorted(self.live_board_periods(self.now()))
        if not live:
            # Not even board `global`: the boards are not loaded yet. A repair over no
            # periods would mark the shard checked without restoring anything.
            raise StoreUnavailable("the boards are not loaded yet")
        archived = set(await self.store.archived_among(live))
        return [key for key in live if key not in archived]

    async def _check(self, shard_id: str) -> None:
        running = self._repairs.get(shard_id)
        if running is not None and not running.done():
            return
        try:
            identity = await self.shards.identity(shard_id)
            if identity.checked:
                self.shards.unready.pop(shard_id, None)
                self.status[shard_id] = "checked"
                return
            periods = await self._periods()
            reason = "restarted" if identity.checked_run_id is not None else "lost_data"
            progress = await self.shards.repair_progress(shard_id)
            lost = progress.get("run_id") == identity.run_id and progress.get("lost") == "1"
            if not lost and reason == "lost_data":
                lost = await self.shards.member_total(shard_id, periods) == 0 and await self.store.has_players_on_shard(
                    periods, shard_id
                )
            if lost:
                self.shards.unready[shard_id] = LOST_DATA
            if not await self.shards.take_repair_lease(shard_id, self.owner, self.lease_s, identity.run_id):
                self.status[shard_id] = f"being repaired by another router ({reason})"
                return
        except LeaderboardError as exc:
            # Down or PostgreSQL unavailable: the breaker and the next check deal with it.
            self.status[shard_id] = f"not checked: {exc}"
            return
        self.status[shard_id] = f"repairing ({reason})"
        self._repairs[shard_id] = asyncio.create_task(
            self._repair(shard_id, identity.run_id, reason, periods, lost), name=f"repair {shard_id}"
        )

    async def _repair(self, shard_id: str, run_id: str, reason: str, periods: Sequence[str], lost: bool) -> None:
        SHARD_REPAIRING.labels(shard_id).set(1)
        log.warning("shard %s %s: repairing it from PostgreSQL", shard_id, reason.replace("_", " "))
        outcome = "interrupted"
        try:
            checked = await self._run_repair(shard_id, run_id, periods, lost)
            if await self.shards.finish_repair(shard_id, self.owner, run_id):
                self.shards.unready.pop(shard_id, None)
                self.status[shard_id] = "checked"
                outcome = "done"
                log.warning("shard %s repaired: %d player(s) checked against PostgreSQL", shard_id, checked)
            else:
                outcome = "lease_lost"
        except _LeaseLost:
            outcome = "lease_lost"
        except LeaderboardError as exc:
            self.status[shard_id] = f"repair interrupted: {exc}"
            log.warning("repair of shard %s interrupted (%s); it resumes at the next check", shard_id, exc)
        except Exception:  # noqa: BLE001 - a bug must not end self-healing for good
            log.exception("repair of shard %s failed; it resumes at the next check", shard_id)
        finally:
            SHARD_REPAIRING.labels(shard_id).set(0)
            SHARD_REPAIRS.labels(shard_id, reason, outcome).inc()

    async def _run_repair(self, shard_id: str, run_id: str, periods: Sequence[str], lost: bool) -> int:
        progress = await self.shards.repair_progress(shard_id)
        if progress.get("run_id") != run_id or progress.get("period", "") not in ("", *periods):
            progress = {"run_id": run_id, "lost": "1" if lost else "0", "phase": "adds", "period": "", "after": ""}
            await self.shards.save_repair_progress(shard_id, progress)
        checked = 0
        for phase in ("adds", "strays"):
            if phase == "adds" and progress["phase"] == "strays":
                continue
            for key in periods:
                if progress["period"] and key < progress["period"]:
                    continue  # done before a takeover
                if progress["period"] != key:
                    progress.update(phase=phase, period=key, after="" if phase == "adds" else "0")
                if phase == "adds":
                    checked += await self._restore_players(shard_id, key, progress)
                else:
                    checked += await self._remove_strays(shard_id, key, progress)
            progress.update(phase="strays", period="", after="0")
        return checked

    async def _step_done(self, shard_id: str, progress: dict[str, str], count: int) -> None:
        SHARD_REPAIR_PLAYERS.labels(shard_id).inc(count)
        if not await self.shards.take_repair_lease(shard_id, self.owner, self.lease_s, progress["run_id"]):
            raise _LeaseLost()
        await self.shards.save_repair_progress(shard_id, progress)

    async def _restore_players(self, shard_id: str, label: str, progress: dict[str, str]) -> int:
        """Every player PostgreSQL places on the shard, put there at their committed version."""
        done = 0
        while True:
            rows = await self.store.players_on_shard(label, shard_id, progress["after"], self.chunk)
            if not rows:
                return done
            await self.shards.apply(shard_id, label, [(_state(row), True) for row in rows])
            done += len(rows)
            progress["after"] = rows[-1].user_id
            await self._step_done(shard_id, progress, len(rows))

    async def _remove_strays(self, shard_id: str, label: str, progress: dict[str, str]) -> int:
        """Every member PostgreSQL places on another shard, tombstoned here at its committed version."""
        done = 0
        cursor = int(progress["after"] or 0)
        while True:
            cursor, users = await self.shards.scan_members(shard_id, label, cursor, self.chunk)
            users = list(dict.fromkeys(users))
            rows = await self.store.players(label, users) if users else {}
            strays = [row for row in rows.values() if row.shard != shard_id]
            if strays:
                await self.shards.apply(shard_id, label, [(_state(row), False) for row in strays])
            unknown = [user for user in users if user not in rows]
            if unknown:
                await self._remove_withdrawn(shard_id, label, unknown)
            done += len(users)
            progress["after"] = str(cursor)
            await self._step_done(shard_id, progress, len(users))
            if cursor == 0:
                return done

    async def _remove_withdrawn(self, shard_id: str, label: str, users: list[str]) -> None:
        """Members PostgreSQL has no state for: a hidden or removed player is tombstoned at
        the version PostgreSQL recorded, an erased one purged (a lost tombstone or purge)."""
        withdrawn = await self.store.withdrawn_versions(label, users)
        if withdrawn:
            await self.shards.apply(shard_id, label, [tombstone(user, v) for user, v in withdrawn.items()])
        rest = [user for user in users if user not in withdrawn]
        erased = [user for user in rest if await self.store.is_erased(user)]
        if erased:
            await self.shards.purge(shard_id, label, erased)
        unexplained = len(rest) - len(erased)
        if unexplained:
            log.error("shard %s holds %d member(s) of %s PostgreSQL has no player for", shard_id, unexplained, label)

    def readiness(self) -> dict[str, str]:
        """Per shard, for /readyz: only shards with something to say."""
        return {sid: status for sid, status in self.status.items() if status != "checked"}
