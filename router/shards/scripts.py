"""The Lua scripts every client of the shards runs: routers, rebalancer, rebuild, benches.

One source each, so the router and the operator's tools cannot drift apart. The
generation helper is prepended to the scripts that change a sorted set; a script
cannot call another.
"""

from __future__ import annotations

from importlib import resources


def _lua(name: str) -> str:
    return (resources.files("router.shards") / "lua" / name).read_text()


GENERATION_LUA = _lua("generation.lua")
APPLY_LUA = GENERATION_LUA + _lua("apply.lua")
LOOKUP_LUA = _lua("lookup.lua")
RANGE_LUA = _lua("range.lua")
PURGE_LUA = GENERATION_LUA + _lua("purge.lua")
# KEYS[1]: a month's generation key. For changes made outside the apply script (a
# rebuild's swap), inside the same transaction.
BUMP_GENERATION_LUA = GENERATION_LUA + "bump_generation(KEYS[1])\nreturn 1\n"
