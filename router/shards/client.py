"""Connections to the shard Redis servers, and the router's only code that speaks to them.

What each script call sends and how its answer reads is `router.shards.protocol`,
shared with the operator's tools' synchronous client (`router.shards.sync_client`).

The script calls (apply, lookup, range) go out on each shard's
pipelined connection (`router.shards.pipelined`); the rest, and probes, on redis-py's.
Every call goes through `_call`, which turns connection failures and timeouts into
`ShardUnavailable(shard_id)`, so callers deal in shards, never in sockets. Lookups
and member counts of one shard and board period that arrive while one is in flight share
the next call (`router.aio.coalesce`): a rank read needs every shard, and under load
this turns three round trips per read into three per batch of reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.aio.circuit_breaker import CircuitBreaker
from router.aio.coalesce import Coalescer
from router.errors import ShardUnavailable
from router.metrics import SHARD_ERRORS, SHARD_OPS
from router.shardmap import ShardMap
from router.shards import protocol
from router.shards.connect import async_client, sentinels_unreachable
from router.shards.keys import (
    LEGACY_STATE_PATTERN,
    REPAIR_LEASE_KEY,
    REPAIR_PROGRESS_KEY,
    SHARD_MARKER_KEY,
    state_key,
    user_of,
    zset_key,
)
from router.shards.pipelined import PipelinedScripts, call_script, pipelined_scripts_for
from router.shards.protocol import ApplyResult, Lookup, PlayerState, ShardCount
from router.shards.redis_packing import packed_by_hiredis
from router.shards.scripts import APPLY_LUA, LOOKUP_LUA, PURGE_LUA, RANGE_LUA

T = TypeVar("T")

# Take the repair lease, or renew it if `owner` holds it already; refused once the
# marker names this run (another router has just finished the repair).
# KEYS lease, marker; ARGV owner, ttl ms, run_id.
_TAKE_LEASE_LUA = """
if redis.call('HGET', KEYS[2], 'run_id') == ARGV[3] then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# A repair done: the marker names the run it checked; progress and lease go. Only the
# lease's owner may finish. KEYS marker, progress, lease; ARGV owner, run_id, shard id.
_FINISH_REPAIR_LUA = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'run_id', ARGV[2], 'shard', ARGV[3])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """Which run of redis-server answers for a shard, and which run its contents were
    last checked against PostgreSQL in (None: never, or the data is gone)."""

    run_id: str
    checked_run_id: str | None

    @property
    def checked(self) -> bool:
        return self.checked_run_id == self.run_id


class ShardClients:
    """`read_deadline_s` bounds every read of a shard, `write_deadline_s` every apply:
    a shard that does not answer within it counts as unavailable for that call, and
    after `failures_to_open` such calls in a row its breaker (router.aio.circuit_breaker)
    fails its calls at once until a background probe gets an answer again."""

    def __init__(
        self,
        shard_map: ShardMap,
        *,
        read_deadline_s: float,
        write_deadline_s: float,
        failures_to_open: int = 2,
        probe_interval_s: float = 0.5,
        max_connections: int = 64,
    ) -> None:
        self.shard_map = shard_map
        self.read_deadline_s = read_deadline_s
        self.write_deadline_s = write_deadline_s
        self._failures_to_open = failures_to_open
        self._probe_interval_s = probe_interval_s
        self._max_connections = max_connections
        self._clients: dict[str, aioredis.Redis] = {}
        self._addresses: dict[str, str] = {}
        self._retired: dict[str, aioredis.Redis] = {}
        # The hot script calls' own connections (router.shards.pipelined), one per shard.
        self._pipelined: dict[str, PipelinedScripts] = {}
        self._retired_pipelined: list[PipelinedScripts] = []
        self.breakers: dict[str, CircuitBreaker] = {}
        self._sentinels_lost_since: dict[str, float] = {}
        # Shards whose reads are refused, and why: one found without its data is being
        # refilled from PostgreSQL (router.background.self_healing), and until then its counts
        # would make every rank below it wrong. Applies still go to it.
        self.unready: dict[str, str] = {}
        self._connect_missing()
        any_client = next(iter(self._clients.values()))
        self._apply = any_client.register_script(APPLY_LUA)
        self._lookup = any_client.register_script(LOOKUP_LUA)
        self._range = any_client.register_script(RANGE_LUA)
        self._purge = any_client.register_script(PURGE_LUA)
        self._take_lease = any_client.register_script(_TAKE_LEASE_LUA)
        self._finish_repair = any_client.register_script(_FINISH_REPAIR_LUA)
        # Items are user ids to look up, or None for just the count and generation.
        self._reads: Coalescer[tuple[str, str], str | None, Lookup | ShardCount] = Coalescer(self._read_many)

    def _connect_missing(self) -> None:
        # The socket timeouts are a backstop; each call's own deadline is shorter.
        socket_timeout = max(self.read_deadline_s, self.write_deadline_s) * 2
        for shard in self.shard_map.shards:
            if self._addresses.get(shard.id) == shard.address:
                continue
            if shard.id in self._clients:
                self._retired[f"{shard.id}@{self._addresses[shard.id]}"] = self._clients[shard.id]
            client = packed_by_hiredis(
                async_client(
                    shard.address,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_timeout,
                    decode_responses=True,
                    max_connections=self._max_connections,
                    health_check_interval=30,
                    # A pooled connection to a shard that restarted fails once on first use;
                    # every command we send is idempotent (reads, versioned applies), so one
                    # quick retry on a fresh connection is safe. Timeouts are not retried.
                    retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),
                    retry_on_error=[RedisConnectionError],
                )
            )
            self._clients[shard.id] = client
            self._addresses[shard.id] = shard.address
            if shard.id in self._pipelined:
                self._retired_pipelined.append(self._pipelined.pop(shard.id))
            pipelined = pipelined_scripts_for(client, socket_timeout)
            if pipelined is not None:
                self._pipelined[shard.id] = pipelined
            if shard.id in self.breakers:
                self.breakers[shard.id].abandon()  # its probe would go on asking the old address
            self.breakers[shard.id] = CircuitBreaker(
                f"shard:{shard.id}",
                self._prober(client),
                failures_to_open=self._failures_to_open,
                probe_interval_s=self._probe_interval_s,
            )

    def _prober(self, client: aioredis.Redis) -> Callable[[], Awaitable[object]]:
        async def probe() -> object:
            async with asyncio.timeout(self.read_deadline_s):
                return await client.ping()

        return probe

    async def update(self, shard_map: ShardMap) -> None:
        """Switch to a new layout: connect new shards first, then publish the map."""
        previous = self.shard_map
        self.shard_map = shard_map
        self._connect_missing()
        gone = set(previous.ids) - set(shard_map.ids)
        for shard_id in gone:
            # Kept until close(): a request that started under the old layout may still use it.
            self._retired[shard_id] = self._clients.pop(shard_id)
            self._addresses.pop(shard_id, None)
            if shard_id in self._pipelined:
                self._retired_pipelined.append(self._pipelined.pop(shard_id))

    async def close(self) -> None:
        for breaker in self.breakers.values():
            await breaker.close()
        clients = list(self._clients.values()) + list(self._retired.values())
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
        for pipelined in [*self._pipelined.values(), *self._retired_pipelined]:
            await pipelined.close()

    def _script(
        self, shard_id: str, script: Any, keys: Sequence[str], args: Sequence[Any]
    ) -> Callable[[aioredis.Redis], Awaitable[Any]]:
        """A script call for `_call`: on the shard's pipelined connection where it has one."""
        pipelined = self._pipelined.get(shard_id)
        return lambda client: call_script(pipelined, script, keys, args, client)

    async def _call(
        self,
        shard_id: str,
        fn: Callable[[aioredis.Redis], Awaitable[T]],
        op: str = "other",
        *,
        deadline_s: float | None = None,
        reads: bool = True,
    ) -> T:
        client = self._clients.get(shard_id) or self._retired.get(shard_id)
        if client is None:
            raise ShardUnavailable(shard_id, "not in the shard layout")
        if reads and shard_id in self.unready:
            raise ShardUnavailable(shard_id, self.unready[shard_id])
        breaker = self.breakers.get(shard_id)
        if breaker is not None and breaker.is_open:
            SHARD_ERRORS.labels(shard_id, op).inc()
            raise ShardUnavailable(shard_id, f"not answering for {breaker.open_for_s():.1f} s")
        SHARD_OPS.labels(shard_id, op).inc()
        deadline_s = self.read_deadline_s if deadline_s is None else deadline_s
        try:
            async with asyncio.timeout(deadline_s):
                result = await fn(client)
        except TimeoutError as exc:
            SHARD_ERRORS.labels(shard_id, op).inc()
            if breaker is not None:
                breaker.record_failure()
            raise ShardUnavailable(shard_id, f"no answer within {deadline_s:g} s") from exc
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            SHARD_ERRORS.labels(shard_id, op).inc()
            if breaker is not None:
                breaker.record_failure()
            raise ShardUnavailable(shard_id, type(exc).__name__) from exc
        except RedisError as exc:
            # LOADING, MISCONF, READONLY...: the server answers but cannot serve us.
            SHARD_ERRORS.labels(shard_id, op).inc()
            raise ShardUnavailable(shard_id, str(exc)) from exc
        if breaker is not None:
            breaker.record_success()
        return result

    async def apply(
        self, shard_id: str, board_period: str, states: Sequence[tuple[PlayerState, bool]]
    ) -> tuple[list[ApplyResult], int]:
        """Apply (state, present) pairs in order on one shard; returns results and member count."""
        keys, args = protocol.apply_call(board_period, states)
        run = self._script(shard_id, self._apply, keys, args)
        return protocol.apply_reply(
            await self._call(shard_id, run, "apply", deadline_s=self.write_deadline_s, reads=False)
        )

    async def purge(self, shard_id: str, board_period: str, users: Sequence[str]) -> int:
        """Every trace of these players in the board period (lua/purge.lua); members removed."""
        keys, args = protocol.purge_call(board_period, users)

        async def run(client: aioredis.Redis) -> int:
            return int(await self._purge(keys=keys, args=args, client=client))

        return await self._call(shard_id, run, "purge", deadline_s=self.write_deadline_s, reads=False)

    # Plain futures rather than coroutines: a rank read gathers one per shard, and
    # gathering futures creates no task for each.
    def lookup(self, shard_id: str, board_period: str, user_id: str) -> asyncio.Future[Lookup]:
        return self._reads.enqueue((shard_id, board_period), user_id)  # type: ignore[return-value]

    def count(self, shard_id: str, board_period: str) -> asyncio.Future[ShardCount]:
        return self._reads.enqueue((shard_id, board_period), None)  # type: ignore[return-value]

    async def size(self, shard_id: str, board_period: str) -> int:
        return (await self.count(shard_id, board_period)).size

    async def _read_many(self, key: tuple[str, str], items: Sequence[str | None]) -> list[Lookup | ShardCount]:
        shard_id, board_period = key
        users = list(dict.fromkeys(item for item in items if item is not None))

        keys, args = protocol.lookup_call(board_period, users)
        run = self._script(shard_id, self._lookup, keys, args)
        count, found = protocol.lookup_reply(await self._call(shard_id, run, "lookup" if users else "size"), users)
        return [count if item is None else found[item] for item in items]

    async def counts(self, board_period: str, shard_ids: Iterable[str] | None = None) -> dict[str, ShardCount]:
        ids = list(shard_ids) if shard_ids is not None else list(self.shard_map.ids)
        counts = await asyncio.gather(*(self.count(sid, board_period) for sid in ids))
        return dict(zip(ids, counts, strict=True))

    async def sizes(self, board_period: str, shard_ids: Iterable[str] | None = None) -> dict[str, int]:
        return {sid: count.size for sid, count in (await self.counts(board_period, shard_ids)).items()}

    async def range_desc(
        self, shard_id: str, board_period: str, start: int, stop: int
    ) -> tuple[ShardCount, list[tuple[str, int, str | None]]]:
        """The shard's count and generation, and the players at 0-based positions
        start..stop (inclusive), highest first, with scores and display data, read in one step."""

        keys, args = protocol.range_call(board_period, start, stop)
        run = self._script(shard_id, self._range, keys, args)
        return protocol.range_reply(await self._call(shard_id, run, "range"))

    async def legacy_state_hashes(self, shard_id: str) -> list[str]:
        """Keys of the one-hash-per-month state layout (before the buckets) on a shard."""

        async def run(client: aioredis.Redis) -> list[str]:
            return [key async for key in client.scan_iter(match=LEGACY_STATE_PATTERN, count=1000)]

        # A scan of the whole keyspace, once at start: not a request's read.
        return await self._call(shard_id, run, deadline_s=max(10.0, self.write_deadline_s))

    async def sentinels_lost_for_s(self, shard_id: str) -> float | None:
        """For a Sentinel-managed shard none of whose sentinels answers now: how long
        that has lasted (it is reached at its last known primary meanwhile,
        router.shards.connect). None for a plain shard, or while one answers."""
        client = self._clients.get(shard_id)
        if client is None or not await sentinels_unreachable(client):
            self._sentinels_lost_since.pop(shard_id, None)
            return None
        since = self._sentinels_lost_since.setdefault(shard_id, time.monotonic())
        return time.monotonic() - since

    async def ping(self, shard_id: str) -> None:
        await self._call(shard_id, lambda c: c.ping(), "ping", reads=False)

    async def memory_used(self, shard_id: str) -> int:
        info = await self._call(shard_id, lambda c: c.info("memory"))
        return int(info.get("used_memory", 0))

    async def states(self, shard_id: str, board_period: str, user_ids: Sequence[str]) -> list[str | None]:
        """Raw state-hash entries ("version:tie", "version" or None) for several users."""
        if not user_ids:
            return []

        async def run(client: aioredis.Redis) -> list[str | None]:
            pipe = client.pipeline(transaction=False)
            for user in user_ids:
                pipe.hget(state_key(board_period, user), user)
            return await pipe.execute()

        return await self._call(shard_id, run, "states", deadline_s=self.write_deadline_s)

    # -- self-healing (router/background/self_healing.py) -------------------------------------

    async def identity(self, shard_id: str) -> ServerIdentity:
        async def run(client: aioredis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.info("server")
            pipe.hget(SHARD_MARKER_KEY, "run_id")
            return await pipe.execute()

        info, checked = await self._call(shard_id, run, "identity", reads=False)
        return ServerIdentity(str(info["run_id"]), checked)

    async def take_repair_lease(self, shard_id: str, owner: str, ttl_s: float, run_id: str) -> bool:
        async def run(client: aioredis.Redis) -> int:
            return await self._take_lease(
                keys=[REPAIR_LEASE_KEY, SHARD_MARKER_KEY], args=[owner, int(ttl_s * 1000), run_id], client=client
            )

        return bool(await self._call(shard_id, run, "repair", reads=False))

    async def repair_progress(self, shard_id: str) -> dict[str, str]:
        return await self._call(shard_id, lambda c: c.hgetall(REPAIR_PROGRESS_KEY), "repair", reads=False)

    async def save_repair_progress(self, shard_id: str, progress: dict[str, str]) -> None:
        await self._call(shard_id, lambda c: c.hset(REPAIR_PROGRESS_KEY, mapping=progress), "repair", reads=False)

    async def finish_repair(self, shard_id: str, owner: str, run_id: str) -> bool:
        async def run(client: aioredis.Redis) -> int:
            return await self._finish_repair(
                keys=[SHARD_MARKER_KEY, REPAIR_PROGRESS_KEY, REPAIR_LEASE_KEY],
                args=[owner, run_id, shard_id],
                client=client,
            )

        return bool(await self._call(shard_id, run, "repair", reads=False))

    async def scan_members(self, shard_id: str, board_period: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """One step of a ZSCAN over the board period's sorted set: the next cursor (0: done)
        and the users of the members it returned (a scan may return one twice)."""

        async def run(client: aioredis.Redis) -> tuple[int, list[str]]:
            next_cursor, pairs = await client.zscan(zset_key(board_period), cursor, count=count)
            return int(next_cursor), [user_of(name) for name, _ in pairs]

        return await self._call(shard_id, run, "repair", reads=False, deadline_s=self.write_deadline_s)

    async def member_total(self, shard_id: str, board_periods: Iterable[str]) -> int:
        """Members of these board periods' sorted sets on the shard, read even while its reads are refused."""

        async def run(client: aioredis.Redis) -> list[int]:
            pipe = client.pipeline(transaction=False)
            for board_period in board_periods:
                pipe.zcard(zset_key(board_period))
            return await pipe.execute()

        return sum(await self._call(shard_id, run, "repair", reads=False))
