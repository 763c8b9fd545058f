"""Rate limits shared by every router process, counted in Redis (fixed windows).

Two limits: write requests per second per game token (a runaway client), and
events per player per hour (a client reporting impossible numbers of wins). If the
counter store cannot be reached, requests are let through and the failure is
logged: an outage of the limiter must not become an outage of the game.

Single writes are counted by the write pipeline, one script call for each group it
commits (`admit`); other checks that arrive while one is in flight are counted
together in the next call. Under load one round trip serves many requests.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.coalesce import Coalescer
from router.errors import RateLimited
from router.metrics import RATE_LIMITED
from router.redis_packing import packed_by_hiredis

log = logging.getLogger(__name__)

# KEYS[1]: this hour's hash of per-player counters (one hash per hour, not one key
# per player: a fraction of the memory); KEYS[2..]: this second's counter of each
# token in the call.
# ARGV: token limit (0: off), token ttl, player limit (0: off), hash ttl, then per
# request: its token's index into KEYS, its number of players, (user, events) pairs.
# Answers, per request in order: the seconds to wait for the token (0: fine), then
# the same for each of its users.
_COUNT = """
local token_limit = tonumber(ARGV[1])
local player_limit = tonumber(ARGV[3])
local created = redis.call('EXISTS', KEYS[1]) == 0
local out = {}
local i = 5
while i <= #ARGV do
  local token_key = KEYS[tonumber(ARGV[i])]
  local players = tonumber(ARGV[i + 1])
  i = i + 2
  local token_wait = 0
  if token_limit > 0 then
    local n = redis.call('INCR', token_key)
    if n == 1 then redis.call('EXPIRE', token_key, tonumber(ARGV[2])) end
    if n > token_limit then token_wait = 1 end
  end
  out[#out + 1] = token_wait
  for _ = 1, players do
    local wait = 0
    if player_limit > 0 and token_wait == 0 then
      local n = redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1]))
      if n > player_limit then
        local left = redis.call('TTL', KEYS[1])
        wait = left > 0 and left or 1
      end
    end
    out[#out + 1] = wait
    i = i + 2
  end
end
if created and player_limit > 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4])) end
return out
"""


@dataclass(frozen=True)
class Verdict:
    token_retry_after: int  # 0: the token is within its limit
    players_retry_after: dict[str, int]  # players over their hourly limit -> seconds to wait


@dataclass(frozen=True)
class _Check:
    token: str
    players: Counter[str]


class RateLimiter:
    def __init__(self, url: str, *, token_per_s: int, player_per_hour: int, timeout_s: float) -> None:
        self.token_per_s = token_per_s
        self.player_per_hour = player_per_hour
        self._client = packed_by_hiredis(
            aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        )
        self._count = self._client.register_script(_COUNT)
        self._checks: Coalescer[None, _Check, Verdict] = Coalescer(self._count_or_let_through)

    async def close(self) -> None:
        await self._checks.drain()
        await self._client.aclose()

    async def check(self, token: str, players: Sequence[str]) -> Verdict:
        if not self.token_per_s and not self.player_per_hour:
            return Verdict(0, {})
        return await self._checks.submit(None, _Check(token, Counter(players)))

    async def admit(self, requests: Sequence[tuple[str, str]]) -> list[RateLimited | None]:
        """Counts single writes, (token, user_id) each, in one call: the refusal each must get, or None."""
        if not self.token_per_s and not self.player_per_hour:
            return [None] * len(requests)
        verdicts = await self._count_or_let_through(None, [_Check(token, Counter([user])) for token, user in requests])
        refusals: list[RateLimited | None] = []
        for (_, user), verdict in zip(requests, verdicts, strict=True):
            if verdict.token_retry_after:
                refusals.append(self.token_refusal(verdict))
            elif verdict.players_retry_after:
                refusals.append(self.player_refusal(verdict.players_retry_after[user]))
            else:
                refusals.append(None)
        return refusals

    def token_refusal(self, verdict: Verdict) -> RateLimited:
        return RateLimited("too many requests for this game token", verdict.token_retry_after)

    def player_refusal(self, retry_after: int) -> RateLimited:
        return RateLimited(f"at most {self.player_per_hour} events per player per hour", retry_after)

    async def _count_or_let_through(self, _: None, checks: Sequence[_Check]) -> list[Verdict]:
        try:
            return await self._count_all(checks)
        except RedisError as exc:
            log.warning("rate limits not enforced: counter store unavailable (%s)", exc)
            return [Verdict(0, {}) for _ in checks]

    async def _count_all(self, checks: Sequence[_Check]) -> list[Verdict]:
        now = int(time.time())
        token_index: dict[str, int] = {}
        keys = [f"rl:p:{now // 3600}"]
        args: list[object] = [self.token_per_s, 2, self.player_per_hour, 3600 - now % 3600 + 1]
        for check in checks:
            if check.token not in token_index:
                digest = hashlib.sha256(check.token.encode()).hexdigest()[:16]
                keys.append(f"rl:t:{digest}:{now}")
                token_index[check.token] = len(keys)  # Lua indexes from 1
            args += [token_index[check.token], len(check.players)]
            for user, amount in check.players.items():
                args += [user, amount]
        answers = [int(a) for a in await self._count(keys=keys, args=args)]
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
