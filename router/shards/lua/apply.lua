-- Apply versioned player states to one shard, atomically.
-- KEYS[1] sorted set (score -> tie..user); KEYS[2] the board period's generation
-- (generation.lua, prepended to this script); KEYS[3] the display data (user -> JSON);
-- KEYS[3 + k]: the state hash (user -> "version:tie" | "version") holding the k-th
-- group's user (keys.state_key).
-- ARGV: groups of 6: user, version, present ("1"/"0"), score, tie, metadata ("": none)
-- A state is applied only if this shard has not seen an equal or newer version of
-- that user, so late, repeated or reordered sends cannot move a player backwards.
-- Returns, per group: applied (0/1), rank before (-1 if absent), rank after (-1 if
-- absent), 0-based among this shard's members; then the shard's member count.
local z = KEYS[1]
local meta = KEYS[3]
local out = {}
local changed = false
for i = 1, #ARGV, 6 do
  local h = KEYS[4 + (i - 1) / 6]
  local user, version = ARGV[i], tonumber(ARGV[i + 1])
  local cur = redis.call('HGET', h, user)
  local cur_version, cur_tie = -1, nil
  if cur then
    local sep = string.find(cur, ':', 1, true)
    if sep then
      cur_version = tonumber(string.sub(cur, 1, sep - 1))
      cur_tie = string.sub(cur, sep + 1)
    else
      cur_version = tonumber(cur)
    end
  end
  local old_rank = -1
  if cur_tie then old_rank = redis.call('ZREVRANK', z, cur_tie .. user) or -1 end
  if cur_version >= version then
    out[#out + 1] = 0; out[#out + 1] = old_rank; out[#out + 1] = old_rank
  else
    if cur_tie then
      redis.call('ZREM', z, cur_tie .. user)
      changed = true
    end
    -- Display data is part of the state, and changes the pages a shard serves.
    if ARGV[i + 2] == '1' and ARGV[i + 5] ~= '' then
      if redis.call('HGET', meta, user) ~= ARGV[i + 5] then
        redis.call('HSET', meta, user, ARGV[i + 5])
        changed = true
      end
    elseif redis.call('HDEL', meta, user) == 1 then
      changed = true
    end
    if ARGV[i + 2] == '1' then
      changed = true
      local tie = ARGV[i + 4]
      redis.call('ZADD', z, ARGV[i + 3], tie .. user)
      redis.call('HSET', h, user, ARGV[i + 1] .. ':' .. tie)
      out[#out + 1] = 1; out[#out + 1] = old_rank
      out[#out + 1] = redis.call('ZREVRANK', z, tie .. user)
    else
      redis.call('HSET', h, user, ARGV[i + 1])
      out[#out + 1] = 1; out[#out + 1] = old_rank; out[#out + 1] = -1
    end
  end
end
if changed then bump_generation(KEYS[2]) end
out[#out + 1] = redis.call('ZCARD', z)
return out
