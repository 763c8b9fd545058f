-- Where a user stands on one shard, in one round trip.
-- KEYS[1] sorted set, KEYS[2] state hash; ARGV[1] user.
-- Returns {version (-1 if never seen), rank (0-based, -1 if not on this shard),
--          score (string, or "" if not on this shard), member count}.
local z, h, user = KEYS[1], KEYS[2], ARGV[1]
local zcard = redis.call('ZCARD', z)
local cur = redis.call('HGET', h, user)
if not cur then return {-1, -1, '', zcard} end
local sep = string.find(cur, ':', 1, true)
if not sep then return {tonumber(cur), -1, '', zcard} end
local version = tonumber(string.sub(cur, 1, sep - 1))
local m = string.sub(cur, sep + 1) .. user
local rank = redis.call('ZREVRANK', z, m)
if not rank then return {version, -1, '', zcard} end
return {version, rank, redis.call('ZSCORE', z, m), zcard}
