"""Rate limits shared by every router process, counted in Redis (fixed windows).

Two limits: write requests per second per game token (a runaway client), and
events per player per hour (a client reporting impossible numbers of wins). If the
counter store cannot be reached or does not answer within its deadline, requests are
let through and the failure is logged: an outage of the limiter must not become an
outage of the game, nor a frozen counter store a stall of every write (its breaker
then lets them through at once, router.aio.circuit_breaker).

Single writes are counted by the write pipeline, one script call for each group it
commits (`admit`); other checks that arrive while one is in flight are counted
together in the next call. Under load one round trip serves many requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.aio.circuit_breaker import CircuitBreaker
from router.aio.coalesce import Coalescer
from router.errors import RateLimited
from router.metrics import RATE_LIMITED
from router.shards.connect import async_client
from router.shards.keys import user_bucket
from router.shards.pipelined import call_script, pipelined_scripts_for
from router.shards.redis_packing import packed_by_hiredis

log = logging.getLogger(__name__)

# Per-player counters of an hour live in PLAYER_COUNTER_BUCKETS small hashes, chosen
# as players' states are (members.user_bucket), not in one hash (nor a key per
# player): a hash of up to 512 short fields is one packed array in Redis, about 12
# bytes a counter, against 73-91 for an entry of one big hash table (measured with
# 60,000 and 9,197 players). 4,096 stay packed up to about 2M players an hour.
PLAYER_COUNTER_BUCKETS = 4096

# KEYS: every key the call touches, in the order first named: each token's counter of
# this second, the hour's player-counter hashes of its players.
# ARGV: token limit (0: off), token ttl, player limit (0: off), the end of the hour (unix
# time), then per request: its token's index into KEYS, its number of players, and per
# player (its field, events, index into KEYS of the user's hash).
# Answers, per request in order: the seconds to wait for the token (0: fine), then
# the same for each of its users.
#
# A token's requests are counted with one INCRBY per call, not an INCR each: the j-th
# request of the call is over the limit exactly when the count before the call plus j
# is, as it would be counted one by one. A counters hash is given its expiry when a
# player's first count of the hour lands in it (every new hash is made by one), not
# looked up for every request.
_COUNT = """
local token_limit = tonumber(ARGV[1])
local player_limit = tonumber(ARGV[3])
local hour_end = tonumber(ARGV[4])
local counted = {}
if token_limit > 0 then
  local requests = {}
  local i = 5
  while i <= #ARGV do
    local token = ARGV[i]
    requests[token] = (requests[token] or 0) + 1
    i = i + 2 + 3 * tonumber(ARGV[i + 1])
  end
  for token, n in pairs(requests) do
    local key = KEYS[tonumber(token)]
    local after = redis.call('INCRBY', key, n)
    if after == n then redis.call('EXPIRE', key, tonumber(ARGV[2])) end
    counted[token] = after - n
  end
end
local expiring = {}
local out = {}
local i = 5
while i <= #ARGV do
  local token = ARGV[i]
  local players = tonumber(ARGV[i + 1])
  i = i + 2
  local token_wait = 0
  if token_limit > 0 then
    counted[token] = counted[token] + 1
    if counted[token] > token_limit then token_wait = 1 end
  end
  out[#out + 1] = token_wait
  for _ = 1, players do
    local wait = 0
    if player_limit > 0 and token_wait == 0 then
      local counters = KEYS[tonumber(ARGV[i + 2])]
      local amount = tonumber(ARGV[i + 1])
      local n = redis.call('HINCRBY', counters, ARGV[i], amount)
      if n == amount and not expiring[counters] then
        expiring[counters] = true
        redis.call('EXPIREAT', counters, hour_end)
      end
      if n > player_limit then
        local left = redis.call('TTL', counters)
        wait = left > 0 and left or 1
      end
    end
    out[#out + 1] = wait
    i = i + 3
  end
end
return out
"""


def player_counter_field(user_id: str) -> str:
    """A player's field in their counters' hash: 64 bits of a hash of the id, not the id,
    so the counters hold no player ids (an erased player's later attempts are counted
    too) and every field is short."""
    return hashlib.blake2b(user_id.encode(), digest_size=8).hexdigest()


def player_counters_key(hour: int, user_id: str) -> str:
    """The hash holding this player's event count for the hour (hours since the epoch)."""
    return f"rl:p:{hour}:{user_bucket(user_id, PLAYER_COUNTER_BUCKETS)}"


@dataclass(frozen=True)
class Verdict:
    token_retry_after: int  # 0: the token is within its limit
    players_retry_after: dict[str, int]  # players over their hourly limit -> seconds to wait


@dataclass(frozen=True)
class _Check:
    token: str
    players: Mapping[str, int]  # user_id -> events


class RateLimiter:
    def __init__(self, url: str, *, token_per_s: int, player_per_hour: int, deadline_s: float) -> None:
        self.token_per_s = token_per_s
        self.player_per_hour = player_per_hour
        self.deadline_s = deadline_s
        self._client = packed_by_hiredis(
            async_client(url, socket_timeout=deadline_s * 2, socket_connect_timeout=deadline_s * 2)
        )
        self._breaker = CircuitBreaker("rate_limits", self._probe)
        self._count = self._client.register_script(_COUNT)
        # The group's count goes on a pipelined connection of its own where it can
        # (router.shards.pipelined): half of what redis-py spends on a call.
        self._pipelined = pipelined_scripts_for(self._client, deadline_s * 2)
        self._checks: Coalescer[None, _Check, Verdict] = Coalescer(self._count_or_let_through)

    async def close(self) -> None:
        await self._checks.drain()
        await self._breaker.close()
        await self._client.aclose()
        if self._pipelined is not None:
            await self._pipelined.close()

    async def _probe(self) -> None:
        async with asyncio.timeout(self.deadline_s):
            await self._client.ping()

    async def check(self, token: str, players: Sequence[str]) -> Verdict:
        if not self.token_per_s and not self.player_per_hour:
            return Verdict(0, {})
        return await self._checks.submit(None, _Check(token, Counter(players)))

    async def admit(self, requests: Sequence[tuple[str, str]]) -> list[RateLimited | None]:
        """Counts single writes, (token, user_id) each, in one call: the refusal each must get, or None."""
        if not self.token_per_s and not self.player_per_hour:
            return [None] * len(requests)
        verdicts = await self._count_or_let_through(None, [_Check(token, {user: 1}) for token, user in requests])
        refusals: list[RateLimited | None] = []
        for (_, user), verdict in zip(requests, verdicts, strict=True):
            if verdict.token_retry_after:
                refusals.append(self.token_refusal(verdict))
            elif verdict.players_retry_after:
                refusals.append(self.player_refusal(verdict.players_retry_after[user]))
            else:
                refusals.append(None)
        return refusals

    async def forget(self, user_id: str) -> None:
        """Drop the player's counters (an erasure): this hour's and the last, the only ones
        that have not expired. Best effort, as every use of the limiter: they expire anyway."""
        hour = int(time.time()) // 3600
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.deadline_s):
                pipe = self._client.pipeline(transaction=False)
                for h in (hour - 1, hour):
                    pipe.hdel(player_counters_key(h, user_id), player_counter_field(user_id))
                await pipe.execute()

    def token_refusal(self, verdict: Verdict) -> RateLimited:
        return RateLimited("too many requests for this game token", verdict.token_retry_after)

    def player_refusal(self, retry_after: int) -> RateLimited:
        return RateLimited(f"at most {self.player_per_hour} events per player per hour", retry_after)

    async def _count_or_let_through(self, _: None, checks: Sequence[_Check]) -> list[Verdict]:
        if self._breaker.is_open:
            return [Verdict(0, {}) for _ in checks]
        try:
            async with asyncio.timeout(self.deadline_s):
                verdicts = await self._count_all(checks)
        except (RedisError, OSError, TimeoutError) as exc:
            if not isinstance(exc, RedisError) or isinstance(exc, RedisConnectionError | RedisTimeoutError):
                self._breaker.record_failure()
            log.warning("rate limits not enforced: counter store unavailable (%s)", type(exc).__name__)
            return [Verdict(0, {}) for _ in checks]
        self._breaker.record_success()
        return verdicts

    async def _count_all(self, checks: Sequence[_Check]) -> list[Verdict]:
        now = int(time.time())
        hour = now // 3600
        key_index: dict[str, int] = {}
        keys: list[str] = []

        def index_of(key: str) -> int:
            if key not in key_index:
                keys.append(key)
                key_index[key] = len(keys)  # Lua indexes from 1
            return key_index[key]

        token_keys: dict[str, int] = {}
        args: list[object] = [self.token_per_s, 2, self.player_per_hour, (hour + 1) * 3600 + 1]
        for check in checks:
            if check.token not in token_keys:
                digest = hashlib.sha256(check.token.encode()).hexdigest()[:16]
                token_keys[check.token] = index_of(f"rl:t:{digest}:{now}")
            args += [token_keys[check.token], len(check.players)]
            for user, amount in check.players.items():
                # With the player limit off the script reads no counter: none is named.
                counters = index_of(player_counters_key(hour, user)) if self.player_per_hour else 0
                args += [player_counter_field(user), amount, counters]
        answers = [int(a) for a in await call_script(self._pipelined, self._count, keys, args)]
        verdicts = []
        at = 0
        for check in checks:
            token_wait = answers[at]
            waits = answers[at + 1 : at + 1 + len(check.players)]
            at += 1 + len(check.players)
            over = {user: wait for user, wait in zip(check.players, waits, strict=True) if wait}
            if token_wait:
                RATE_LIMITED.labels("token").inc()
            if over:
                RATE_LIMITED.labels("player").inc(len(over))
            verdicts.append(Verdict(token_wait, over))
        return verdicts
