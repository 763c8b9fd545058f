-- A stretch of one shard's board with the shard's generation (generation.lua) and
-- member count, in one step, so a page can tell whether the shard changed since it
-- was counted, and count it anew in the same call; with each member's display data.
-- KEYS[1] sorted set, KEYS[2] generation, KEYS[3] display data; ARGV: start, stop
-- (0-based, highest first).
-- Returns {generation ("" if never written), member count, member, score, display
-- data ("" if none), ...}.
local out = {redis.call('GET', KEYS[2]) or '', redis.call('ZCARD', KEYS[1])}
local found = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')
if #found == 0 then return out end
local users = {}
for i = 1, #found, 2 do users[#users + 1] = string.sub(found[i], 13) end
local meta = {}
if redis.call('EXISTS', KEYS[3]) == 1 then meta = redis.call('HMGET', KEYS[3], unpack(users)) end
for i = 1, #users do
  out[#out + 1] = found[2 * i - 1]
  out[#out + 1] = found[2 * i]
  out[#out + 1] = meta[i] or ''
end
return out
