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

# KEYS[1]: this second's counter for the token; KEYS[2]: this hour's hash of per-player
# counters (one hash per hour, not one key per player: a fraction of the memory).
# ARGV: token limit (0: off), token ttl, player limit (0: off), hash ttl, then
# (user, events) pairs. Answers the seconds to wait for the token (0: fine), then
# the same for each user.
_COUNT = """
local out = {0}
local token_limit = tonumber(ARGV[1])
if token_limit > 0 then
  local n = redis.call('INCR', KEYS[1])
  if n == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
  if n > token_limit then out[1] = 1 end
end
local player_limit = tonumber(ARGV[3])
local created = redis.call('EXISTS', KEYS[2]) == 0
for i = 5, #ARGV, 2 do
  local wait = 0
  if player_limit > 0 then
    local n = redis.call('HINCRBY', KEYS[2], ARGV[i], tonumber(ARGV[i + 1]))
    if n > player_limit then
      local left = redis.call('TTL', KEYS[2])
      wait = left > 0 and left or 1
    end
  end
  out[#out + 1] = wait
end
if created and player_limit > 0 and #ARGV >= 5 then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4])) end
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
        if not self.token_per_s and not self.player_per_hour:
            return Verdict(0, {})
        now = int(time.time())
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        per_player = Counter(players)
        keys = [f"rl:t:{digest}:{now}", f"rl:p:{now // 3600}"]
        args: list[object] = [self.token_per_s, 2, self.player_per_hour, 3600 - now % 3600 + 1]
        for user, amount in per_player.items():
            args += [user, amount]
        try:
            answers = await self._count(keys=keys, args=args)
        except RedisError as exc:
            log.warning("rate limits not enforced: counter store unavailable (%s)", exc)
            return Verdict(0, {})
        token_wait = int(answers[0])
        over = {user: int(wait) for user, wait in zip(per_player, answers[1:], strict=True) if int(wait)}
        if token_wait:
            RATE_LIMITED.labels("token").inc()
        if over:
            RATE_LIMITED.labels("player").inc(len(over))
        return Verdict(token_wait, over)
