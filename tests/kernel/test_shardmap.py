"""The shard map type: ranges, lookups, and validation that names the bad key."""

from __future__ import annotations

import pytest

from router.shardmap import (
    MAX_SCORE,
    ScoreRange,
    ShardMapError,
    load_shard_map,
    shard_map_from_dict,
)


def make(*ranges, ids=None):
    ids = ids or [f"s{i}" for i in range(len(ranges))]
    return {
        "epoch": 1,
        "shards": [
            {"id": sid, "address": f"redis://127.0.0.1:{7000 + i}/0", "min_score": lo, "max_score": hi}
            for i, (sid, (lo, hi)) in enumerate(zip(ids, ranges, strict=True))
        ],
    }


def test_default_config_is_valid():
    shard_map = load_shard_map("config/shards.yaml")
    assert shard_map.ids == ("s0", "s1", "s2")
    assert [str(s.range) for s in shard_map.shards] == ["[0, 100)", "[100, 1000)", "[1000, inf)"]


@pytest.mark.parametrize(("score", "index"), [(0, 0), (99, 0), (100, 1), (999, 1), (1000, 2), (MAX_SCORE, 2)])
def test_score_lookup_uses_half_open_ranges(score, index):
    assert shard_map_from_dict(make((0, 100), (100, 1000), (1000, None))).index_for_score(score) == index


def test_range_helpers():
    assert ScoreRange(0, 10).contains(9) and not ScoreRange(0, 10).contains(10)
    assert ScoreRange(10, None).contains(MAX_SCORE)
    assert ScoreRange(0, 10).intersects(ScoreRange(9, 20))
    assert not ScoreRange(0, 10).intersects(ScoreRange(10, None))


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        (make((0, 100), (150, None)), "shards[1].min_score", "gap"),
        (make((0, 100), (50, None)), "shards[1].min_score", "overlaps"),
        (make((10, 100), (100, None)), "shards[0].min_score", "start at 0"),
        (make((0, 100), (100, 1000)), "shards[1].max_score", "unbounded"),
        (make((0, None), (100, None)), "shards[0].max_score", "only the last"),
        (make((0, 100), (100, None), ids=["a", "a"]), "shards[1].id", "duplicate"),
        (make((0, 100), (100, 50), (50, None)), "shards[1].max_score", "greater than"),
        ({"epoch": 1, "shards": []}, "shards", "non-empty"),
        ({"epoch": 0, "shards": make((0, None))["shards"]}, "epoch", "positive"),
        ({"shards": [{"id": "s0", "min_score": 0, "max_score": None}]}, "shards[0].address", "required"),
        (
            {"shards": [{"id": "s0", "address": "http://x:1", "min_score": 0, "max_score": None}]},
            "shards[0].address",
            "redis://",
        ),
        (
            {"shards": [{"id": "s0", "address": "redis://h:1", "min_score": "0", "max_score": None}]},
            "shards[0].min_score",
            "integer",
        ),
        ({"shards": [{"id": "s0", "address": "redis://h:1", "max_score": None}]}, "shards[0].min_score", "required"),
        (
            {"shards": [{"id": "s 0", "address": "redis://h:1", "min_score": 0, "max_score": None}]},
            "shards[0].id",
            "identifier",
        ),
        (
            {"shards": [{"id": "s0", "address": "redis://h:1", "min_score": 0, "max_score": None, "x": 1}]},
            "shards[0].x",
            "unknown",
        ),
        ({"epoch": 1, "shards": make((0, None))["shards"], "extra": True}, "extra", "unknown"),
        ([1, 2], "(root)", "mapping"),
    ],
)
def test_invalid_maps_are_refused_naming_the_key(raw, key, words):
    with pytest.raises(ShardMapError) as err:
        shard_map_from_dict(raw)
    assert err.value.key == key
    assert words in err.value.reason


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ShardMapError, match="cannot read"):
        load_shard_map(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("shards: [\n")
    with pytest.raises(ShardMapError, match="not valid YAML"):
        load_shard_map(bad)
