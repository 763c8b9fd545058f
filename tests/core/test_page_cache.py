"""Kept top pages: served only under the fingerprint they were read with; the shards'
generation never comes back to a value it had, even after a shard lost its data."""

from __future__ import annotations

import time

from router.core.page_cache import KnownQueries, PageCache, TopQuery
from router.core.ranking import BoardCounts, Slice, window
from router.shards.keys import generation_key
from router.shards.protocol import ShardCount
from router.shards.scripts import BUMP_GENERATION_LUA
from tests.cluster import Cluster


def test_a_kept_page_is_served_only_under_the_fingerprint_it_was_read_with():
    pages = PageCache()
    read_under = BoardCounts(("s0", "s1"), {"s0": ShardCount(3, "100"), "s1": ShardCount(2, "200")})
    pages.put(("2026-12", 0, 10), read_under.fingerprint, b"page")
    assert pages.get(("2026-12", 0, 10), read_under.fingerprint) == b"page"
    assert pages.get(("2026-12", 0, 20), read_under.fingerprint) is None
    for changed in (
        {"s0": ShardCount(3, "101"), "s1": ShardCount(2, "200")},  # a score changed, sizes did not
        {"s0": ShardCount(4, "100"), "s1": ShardCount(2, "200")},
    ):
        assert pages.get(("2026-12", 0, 10), BoardCounts(("s0", "s1"), changed).fingerprint) is None
    # The same counts under another layout (a shard added) are another board.
    relaid = BoardCounts(("s0", "s1", "s2"), {**read_under.counts, "s2": ShardCount(0, "")})
    assert pages.get(("2026-12", 0, 10), relaid.fingerprint) is None
    assert pages.recent(("2026-12", 0, 10)) is None  # unchecked serving is off by default


def test_the_stale_tolerant_opt_in_serves_unchecked_only_for_its_time():
    pages = PageCache(stale_ok_s=0.2)
    pages.put("key", ("any",), b"page")
    assert pages.recent("key") == b"page"
    time.sleep(0.25)
    assert pages.recent("key") is None


def test_known_queries_are_forgotten_all_at_once_past_their_bound():
    known = KnownQueries(max_queries=2)
    known.learn(b"limit=1", TopQuery(None, 0, 1))
    known.learn(b"limit=2", TopQuery(None, 0, 2))
    assert known.get(b"limit=1") == TopQuery(None, 0, 1)
    known.learn(b"limit=3", TopQuery(None, 0, 3))
    assert known.get(b"limit=1") is None and known.get(b"limit=3") == TopQuery(None, 0, 3)


def test_a_generation_never_returns_to_an_earlier_value_after_the_shard_loses_its_data(board: Cluster):
    shard = board.redis(0)
    key = generation_key("2026-12")
    seen = []
    for _ in range(3):
        shard.eval(BUMP_GENERATION_LUA, 1, key)
        seen.append(int(shard.get(key)))
    assert seen == sorted(set(seen))  # strictly increasing, even within one microsecond
    shard.flushall()  # an empty replacement, or a lost AOF tail
    shard.eval(BUMP_GENERATION_LUA, 1, key)
    assert int(shard.get(key)) > seen[-1]


def test_a_window_spans_shards_from_the_highest_and_skips_empty_ones():
    ids, sizes = ("s0", "s1", "s2"), {"s0": 5, "s1": 0, "s2": 3}
    assert window(ids, sizes, 0, 2) == [Slice("s2", 0, 1)]
    assert window(ids, sizes, 2, 4) == [Slice("s2", 2, 2), Slice("s0", 0, 2)]
    assert window(ids, sizes, 7, 10) == [Slice("s0", 4, 4)]
    assert window(ids, sizes, 8, 10) == []
