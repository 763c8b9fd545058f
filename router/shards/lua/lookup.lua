-- Where users stand on one shard, its member count and the board's generation
-- (generation.lua), in one round trip.
-- KEYS[1] sorted set, KEYS[2] the generation, KEYS[3] the display data, KEYS[3 + i]
-- the state hash holding ARGV[i]; ARGV: users (none: just the count and generation).
-- Returns {member count, generation ("" if never written), then per user: version
--          (-1 if never seen), rank (0-based, -1 if not on this shard), score
--          (string, or "" if not on this shard), display data ("" if none)}.
local z = KEYS[1]
local out = {redis.call('ZCARD', z), redis.call('GET', KEYS[2]) or ''}
for i = 1, #ARGV do
  local user, h = ARGV[i], KEYS[3 + i]
  local version, rank, score, meta = -1, -1, '', ''
  local cur = redis.call('HGET', h, user)
  if cur then
    local sep = string.find(cur, ':', 1, true)
    if sep then
      version = tonumber(string.sub(cur, 1, sep - 1))
      local m = string.sub(cur, sep + 1) .. user
      local found = redis.call('ZREVRANK', z, m)
      if found then
        rank = found
        score = redis.call('ZSCORE', z, m)
        meta = redis.call('HGET', KEYS[3], user) or ''
      end
    else
      version = tonumber(cur)
    end
  end
  out[#out + 1] = version
  out[#out + 1] = rank
  out[#out + 1] = score
  out[#out + 1] = meta
end
return out
