"""The shard protocol: Redis key layout, player-state format, Lua scripts, the async client."""
