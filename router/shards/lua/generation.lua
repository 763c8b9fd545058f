-- The board's generation on this shard: a number that changes in the same atomic
-- step as any change to the month's sorted set, so a router can tell whether a page
-- it rendered is still what the shard holds (router/core/page_cache.py).
-- It is max(previous + 1, the server clock in microseconds), never just a counter: a
-- shard that lost data (flushed, an empty replacement, the last second of its AOF)
-- must not count back up to a value some router remembers for different contents.
-- The clock moves on across any restart, so a value is never reused.
local function bump_generation(g)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local cur = tonumber(redis.call('GET', g) or '0') or 0
  if cur >= now then now = cur + 1 end
  redis.call('SET', g, string.format('%.0f', now))
end
