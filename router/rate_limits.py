"""Rate limits shared by every router process, counted in Redis (fixed windows).

Two limits: write requests per second per game token (a runaway client), and
events per player per hour (a client reporting impossible numbers of wins). If the
counter store cannot be reached, requests are let through and the failure is
logged: an outage of the limiter must not become an outage of the game.
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

from router.metrics import RATE_LIMITED

log = logging.getLogger(__name__)

# KEYS: counters; ARGV: (amount, limit, ttl) per key. Adds each amount and answers,
# per key, 0 when within its limit or the seconds until its window ends.
_COUNT = """
local out = {}
for i, key in ipairs(KEYS) do
  local amount, limit, ttl = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local n = redis.call('INCRBY', key, amount)
  if n == amount then redis.call('EXPIRE', key, ttl) end
  if n > limit then
    local left = redis.call('TTL', key)
    out[i] = left > 0 and left or 1
  else
    out[i] = 0
  end
end
return out
"""


@dataclass(frozen=True)
class Verdict:
    token_retry_after: int  # 0: the token is within its limit
    players_retry_after: dict[str, int]  # players over their hourly limit -> seconds to wait


class RateLimiter:
    def __init__(self, url: str, *, token_per_s: int, player_per_hour: int, timeout_s: float) -> None:
        self.token_per_s = token_per_s
        self.player_per_hour = player_per_hour
        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._count = self._client.register_script(_COUNT)

    async def close(self) -> None:
        await self._client.aclose()

    async def check(self, token: str, players: Sequence[str]) -> Verdict:
        now = int(time.time())
        keys: list[str] = []
        args: list[int] = []
        if self.token_per_s:
            digest = hashlib.sha256(token.encode()).hexdigest()[:16]
            keys.append(f"rl:t:{digest}:{now}")
            args += [1, self.token_per_s, 2]
        per_player = Counter(players) if self.player_per_hour else Counter()
        for user, amount in per_player.items():
            keys.append(f"rl:p:{user}:{now // 3600}")
            args += [amount, self.player_per_hour, 3600 - now % 3600 + 1]
        if not keys:
            return Verdict(0, {})
        try:
            answers = await self._count(keys=keys, args=args)
        except RedisError as exc:
            log.warning("rate limits not enforced: counter store unavailable (%s)", exc)
            return Verdict(0, {})
        token_wait = int(answers[0]) if self.token_per_s else 0
        player_answers = answers[1:] if self.token_per_s else answers
        over = {user: int(wait) for user, wait in zip(per_player, player_answers, strict=True) if int(wait)}
        if token_wait:
            RATE_LIMITED.labels("token").inc()
        if over:
            RATE_LIMITED.labels("player").inc(len(over))
        return Verdict(token_wait, over)
