-- A stretch of one shard's board with the shard's generation (generation.lua) and
-- member count, in one step, so a page can tell whether the shard changed since it
-- was counted, and count it anew in the same call.
-- KEYS[1] sorted set, KEYS[2] generation; ARGV: start, stop (0-based, highest first).
-- Returns {generation ("" if never written), member count, member, score, ...}.
local out = {redis.call('GET', KEYS[2]) or '', redis.call('ZCARD', KEYS[1])}
local found = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')
for i = 1, #found do out[#out + 1] = found[i] end
return out
