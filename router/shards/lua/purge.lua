-- Remove every trace of players from one board period of this shard: their member
-- and their state entry, tombstones included (an erasure: lb_apply_events refuses an
-- erased id, so no later state can need a tombstone to be refused).
-- KEYS[1] sorted set; KEYS[2] the generation (generation.lua, prepended); KEYS[3] the
-- display data; KEYS[3 + k] the state hash holding ARGV[k]. ARGV: user ids. Returns
-- how many members it removed.
local z = KEYS[1]
local removed = 0
for k = 1, #ARGV do
  local h = KEYS[3 + k]
  local user = ARGV[k]
  local cur = redis.call('HGET', h, user)
  if cur then
    local sep = string.find(cur, ':', 1, true)
    if sep then
      removed = removed + redis.call('ZREM', z, string.sub(cur, sep + 1) .. user)
    end
    redis.call('HDEL', h, user)
  end
  redis.call('HDEL', KEYS[3], user)
end
if removed > 0 then bump_generation(KEYS[2]) end
return removed
